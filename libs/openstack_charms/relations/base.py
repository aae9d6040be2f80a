"""The contract every relation handler follows."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import ops

if TYPE_CHECKING:
    from ..charm import ReconcilingCharm

logger = logging.getLogger(__name__)

ContextT = TypeVar("ContextT")


class RelationHandler(Generic[ContextT]):
    """One endpoint of a charm.

    Subclasses implement :meth:`publish` (write this side's databags; called on
    every reconcile, idempotent) and :meth:`get_context` (read the other side;
    return ``None`` while it is incomplete, after setting :attr:`waiting_for`).
    Whether the endpoint is mandatory comes from ``optional:`` in charmcraft.yaml.
    """

    #: while related but incomplete, hold the whole service back (else run without it)
    holds_back_when_incomplete: bool = True

    def __init__(self, charm: ReconcilingCharm, endpoint: str) -> None:
        self.charm = charm
        self.endpoint = endpoint
        self.waiting_for = "data from the other side"
        self._context: ContextT | None = None
        self._evaluated = False
        charm.register_handler(self)

    @property
    def mandatory(self) -> bool:
        """Whether the charm cannot run without this relation."""
        meta = self.charm.meta.relations.get(self.endpoint)
        return bool(meta and not meta.optional and meta.role != ops.RelationRole.peer)

    @property
    def relations(self) -> list[ops.Relation]:
        """The live relations of this endpoint (one ``relation-ids`` call per hook)."""
        return [r for r in self.charm.model.relations[self.endpoint] if r.active]

    @property
    def relation(self) -> ops.Relation | None:
        """The first live relation, for endpoints limited to one."""
        relations = self.relations
        return relations[0] if relations else None

    @property
    def related(self) -> bool:
        """Whether at least one relation exists on this endpoint."""
        return bool(self.relations)

    @property
    def context(self) -> ContextT | None:
        """The typed view of the other side, or ``None`` while it is incomplete."""
        if not self._evaluated:
            self._evaluated = True
            if self.related:
                try:
                    self._context = self.get_context()
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    # never let the other side's bad data crash the hook
                    logger.warning("%s: unusable relation data: %s", self.endpoint, e)
                    self.waiting_for = f"valid data (got unusable data: {type(e).__name__})"
                    self._context = None
        return self._context

    @property
    def ready(self) -> bool:
        """Whether the other side has given everything this side needs."""
        return self.context is not None

    def app_request(self) -> dict[str, str | None] | None:
        """What this side asks in its application databag; ``None`` (the default) asks nothing."""
        return None

    def publish(self) -> None:
        """Leader: write :meth:`app_request` on every relation of the endpoint (changed keys only)."""
        if not self.charm.is_leader:
            return
        relations = self.relations
        request = self.app_request() if relations else None
        if request is None:
            return
        for relation in relations:
            update_databag(relation.data[self.charm.app], request)

    def get_context(self) -> ContextT | None:
        """Read the other side into a typed context; ``None`` if incomplete."""
        raise NotImplementedError


def load_json(data: ops.RelationDataContent, key: str, default: Any = None) -> Any:
    """A JSON value from a databag; malformed data is logged and treated as absent."""
    raw = data.get(key)
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except ValueError:
        logger.warning("ignoring malformed JSON in relation key %r", key)
        return default


def update_databag(data: ops.RelationDataContent, values: dict[str, str | None]) -> None:
    """Write what differs in one ``relation-set`` (``None`` removes a key).

    Unchanged data is not written, so the other side gets no relation-changed.
    """
    changes = {
        key: ("" if value is None else value)
        for key, value in values.items()
        if (value is None and key in data) or (value is not None and data.get(key) != value)
    }
    if changes:
        data.update(changes)
