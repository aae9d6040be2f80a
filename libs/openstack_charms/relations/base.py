"""The contract every relation handler follows, and what it may ask of its charm."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Generic, Protocol, TypeVar

import ops

logger = logging.getLogger(__name__)

ContextT = TypeVar("ContextT")


class HandlerHost(Protocol):
    """What a handler may use of the charm it belongs to: identity, leadership, the hook."""

    @property
    def framework(self) -> ops.Framework: ...
    @property
    def model(self) -> ops.Model: ...
    @property
    def app(self) -> ops.Application: ...
    @property
    def unit(self) -> ops.Unit: ...
    @property
    def meta(self) -> ops.CharmMeta: ...
    @property
    def is_leader(self) -> bool:
        """Leadership, asked once per hook."""
        ...

    @property
    def hook(self) -> str:
        """The running hook's name (``config-changed``, ``amqp-relation-changed``; ``""`` in an action)."""
        ...


class Incomplete(Exception):
    """The other side has not given everything yet; the message names what is missing."""


class RelationDataError(ValueError):
    """The other side's data is there but unusable (malformed, out of range)."""


class RelationHandler(Generic[ContextT]):
    """One endpoint of a charm.

    Subclasses implement :meth:`get_context`, which reads the other side into a
    typed context and raises :class:`Incomplete` naming the missing field, or
    :class:`RelationDataError` for data it cannot use; requirers publish their
    request in :meth:`app_request` (leader, application databag) or by
    overriding :meth:`publish`; providers that answer only once the service runs
    implement :meth:`provide`. Whether the endpoint is mandatory comes from
    ``optional:`` in charmcraft.yaml.
    """

    #: while related but incomplete, an optional endpoint holds the service back (a mandatory one always does)
    holds_back_when_incomplete: bool = True
    #: providers read nothing from the other side
    reads_remote: bool = True

    def __init__(self, host: HandlerHost, endpoint: str) -> None:
        self.host = host
        self.endpoint = endpoint
        self.waiting_for = "data from the other side"
        self._context: ContextT | None = None
        self._evaluated = False

    @property
    def mandatory(self) -> bool:
        """Whether the charm cannot run without this relation."""
        meta = self.host.meta.relations.get(self.endpoint)
        return bool(meta and not meta.optional and meta.role != ops.RelationRole.peer)

    @property
    def holds_back(self) -> bool:
        """Whether the service waits while this endpoint is related but incomplete."""
        return self.reads_remote and (self.mandatory or self.holds_back_when_incomplete)

    @property
    def relations(self) -> list[ops.Relation]:
        """The live relations of this endpoint (one ``relation-ids`` call per hook)."""
        return [r for r in self.host.model.relations[self.endpoint] if r.active]

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
        """The typed view of the other side, or ``None`` while it is absent or incomplete."""
        if not self._evaluated:
            self._evaluated = True
            if self.related and self.reads_remote:
                try:
                    self._context = self.get_context()
                except Incomplete as e:
                    self.waiting_for = str(e)
                except RelationDataError as e:
                    # never let the other side's bad data crash the hook
                    logger.warning("%s: unusable relation data: %s", self.endpoint, e)
                    self.waiting_for = f"usable data ({_short(str(e))})"
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
        if not self.host.is_leader:
            return
        relations = self.relations
        request = self.app_request() if relations else None
        if request is None:
            return
        for relation in relations:
            update_databag(relation.data[self.host.app], request)

    def provide(self, ready: bool) -> None:
        """Called at the end of every reconcile with whether the service is up; providers answer here."""

    def get_context(self) -> ContextT:
        """The other side as a typed context; raises :class:`Incomplete` or :class:`RelationDataError`."""
        raise NotImplementedError


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_json(data: Mapping[str, str], key: str, default: Any = None) -> Any:
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
