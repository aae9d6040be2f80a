"""Base classes: one reconcile for every event, one status path, typed config."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import pathlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import ops

from .config import InvalidOption, ServiceConfig
from .relations.base import RelationHandler
from .relations.peers import PeerHandler
from .status import Blocked, NotReady, Waiting

logger = logging.getLogger(__name__)


class ReconcilingCharm(ops.CharmBase):
    """Every observed event runs :meth:`reconcile`; status comes only from collect-status.

    ``reconcile`` raises :class:`~.status.Blocked` or :class:`~.status.Waiting`
    wherever it finds something missing; that is caught once, here, and becomes
    the unit's (and on the leader the application's) status.
    """

    config_class: ClassVar[type[ServiceConfig]] = ServiceConfig
    #: shown in the active status, e.g. the URL users reach
    ready_message: str = ""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        # Each record at DEBUG or above is a juju-log process: the framework's
        # own debug lines cost three per hook, so they are kept only when the
        # operator asked for debug.
        logging.getLogger().setLevel(logging.DEBUG if self.config.get("debug") else logging.INFO)
        self.handlers: list[RelationHandler[Any]] = []
        self._status: ops.StatusBase | None = None
        self.peers = PeerHandler(self, next(iter(self.meta.peers))) if self.meta.peers else None
        for event in self._reconcile_events():
            framework.observe(event, self._on_event)
        # every dispatch (hook or action) ends with pre-commit: peer data goes out then, at once
        framework.observe(framework.on.pre_commit, self._on_pre_commit)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)
        framework.observe(self.on.collect_app_status, self._on_collect_app_status)

    # -- declaration -------------------------------------------------------

    def register_handler(self, handler: RelationHandler[Any]) -> None:
        """Called by every handler's constructor."""
        self.handlers.append(handler)

    def observe_reconcile(self, event: ops.BoundEvent) -> None:
        """Reconcile on a custom event (for handlers that wrap a charm library)."""
        self.framework.observe(event, self._on_event)

    def _reconcile_events(self) -> Iterator[ops.BoundEvent]:
        on = self.on
        yield from (on.install, on.start, on.config_changed, on.upgrade_charm, on.update_status)
        yield from (on.leader_elected, on.secret_changed, on.secret_rotate)
        for endpoint in self.meta.relations:
            for kind in ("created", "joined", "changed", "departed", "broken"):
                yield getattr(on[endpoint], f"relation_{kind}")
        for container in self.meta.containers:
            yield on[container].pebble_ready

    # -- cached facts of this hook ----------------------------------------

    @functools.cached_property
    def is_leader(self) -> bool:
        """Leadership, asked once per hook."""
        return self.unit.is_leader()

    @functools.cached_property
    def typed_config(self) -> ServiceConfig:
        """The charm config, validated; invalid values raise Blocked naming the option."""
        try:
            return self.load_config(self.config_class)
        except InvalidOption as e:
            raise Blocked(str(e)) from None
        except (TypeError, ValueError) as e:
            raise Blocked(f"invalid config: {e}") from None

    @property
    def templates_dir(self) -> pathlib.Path:
        """This charm's own templates."""
        return self.charm_dir / "src" / "templates"

    # -- the reconcile -----------------------------------------------------

    def _on_event(self, event: ops.EventBase) -> None:
        if isinstance(event, ops.UpgradeCharmEvent) and self.is_leader and self.peers:
            generation = int(self.peers.get("upgrade-generation") or 0) + 1
            with contextlib.suppress(NotReady):
                self.peers.set("upgrade-generation", str(generation))
        try:
            self.reconcile()
        except NotReady as e:
            self._status = e.status()
        else:
            self._status = ops.ActiveStatus(self.ready_message)

    def reconcile(self) -> None:
        """Bring everything to the desired state, or raise what is missing."""
        self.typed_config  # noqa: B018 (invalid config stops everything first)
        for handler in self.handlers:
            handler.publish()
        self.check_relations()
        self.configure()

    def configure(self) -> None:
        """Apply the desired state once every relation the charm needs is ready."""

    def check_relations(self) -> None:
        """Raise Blocked naming missing mandatory relations, Waiting naming incomplete ones."""
        missing = [h.endpoint for h in self.handlers if h.mandatory and not h.related]
        if missing:
            noun = "relation" if len(missing) == 1 else "relations"
            raise Blocked(f"missing {noun}: {', '.join(missing)}")
        incomplete = [
            f"{h.endpoint} ({h.waiting_for})"
            for h in self.handlers
            if h.related and h.holds_back_when_incomplete and not h.ready
        ]
        if incomplete:
            raise Waiting(f"waiting for {'; '.join(incomplete)}")

    def _on_pre_commit(self, _: ops.EventBase) -> None:
        if self.peers is not None:
            self.peers.flush()

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        if self._status is not None:
            event.add_status(self._status)

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        if self._status is not None:
            event.add_status(self._status)

    # -- leader work -------------------------------------------------------

    def leader_task(self, name: str, inputs: str, run: Callable[[], object], *, what: str) -> None:
        """Run ``run`` on the leader once per distinct ``inputs`` (and per charm upgrade).

        The marker lives in peer app data, so a new leader sees what is done and
        re-runs nothing, while an upgrade or a change of inputs runs it again.
        Non-leaders wait until the leader has done it for the same inputs.
        """
        if self.peers is None:
            raise RuntimeError("leader_task needs a peer relation")
        generation = self.peers.get("upgrade-generation") or "0"
        fingerprint = hashlib.sha256(f"{generation}\n{inputs}".encode()).hexdigest()[:32]
        key = f"{name}-done"
        if self.peers.get(key) == fingerprint:
            return
        if not self.is_leader:
            raise Waiting(f"waiting for the leader to run {what}")
        run()
        self.peers.set(key, fingerprint)
