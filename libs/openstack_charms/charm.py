"""The base of every charm: one reconcile for every event, context then plan then apply.

Every observed event runs :meth:`OpenStackCharm.reconcile`, in this order:

1. **config**: ``load_config(config_class)``; an invalid option is Blocked naming it.
2. **requests**: every handler's ``publish()`` (the leader's requests in the databags).
3. **relations**: a missing mandatory relation is Blocked naming it; a related
   endpoint whose data is incomplete is Waiting naming the field.
4. **context**: :meth:`build_context`, once per hook (``context_class``, a
   :class:`~.context.ServiceContext` subclass).
5. **plan**: :meth:`workloads` (one :class:`~.plan.Workload` per container, or
   the host) and :meth:`leader_work` (ordered :class:`~.plan.LeaderTask`).
6. **apply**: files, directories and layers (or packages and units) without
   starting anything; the leader tasks in order, each once per distinct inputs;
   then every service (re)started where needed; then :meth:`after_start`.
7. **answers**: every handler's ``provide(ready)``, with whether all of that succeeded.

``Blocked`` / ``Waiting`` raised anywhere stop the reconcile and become the
status, set only in collect-status, short and on one line.

A container's ``pebble-check-failed`` and ``pebble-check-recovered`` run the
reconcile too, after noting the check in the unit's local state: while a
check of the unit is failing, a reconcile that would be Active is Waiting
naming the check instead (see :meth:`OpenStackCharm.failing_checks`).

A charm declares: ``config_class``, ``context_class``, ``service_name``,
``service_user``, optionally ``databases`` / ``amqp_vhost`` / ``api_port`` /
``own_wiring`` (its own handlers), and implements :meth:`workloads` (and where
needed :meth:`leader_work`, :meth:`catalog`, :meth:`after_start`,
:meth:`active_message`). Handlers come from the endpoints it declares
(:mod:`.relations.wiring`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import ops

from . import templating
from .config import APIConfig, InvalidOption
from .context import ConfigT, ServiceContext, URLs
from .peers import Peers
from .plan import Applier, Command, File, LeaderTask, Workload
from .relations import wiring
from .status import Blocked, NotReady, Waiting, one_line

if TYPE_CHECKING:
    from charms.keystone_k8s.v0 import identity_service as ids

    from .relations.base import RelationHandler

logger = logging.getLogger(__name__)

ContextT = TypeVar("ContextT", bound=ServiceContext[Any])


class OpenStackCharm(ops.CharmBase, Generic[ConfigT, ContextT]):
    """Every observed event runs :meth:`reconcile`; status comes only from collect-status."""

    # The checks Pebble reported failing, by container. Juju sends a check's failure and its
    # recovery once each, so they are remembered between hooks, in the unit's local state:
    # reading it costs no hook tool and no Pebble call in the hooks in between.
    _pebble_checks = ops.StoredState()

    config_class: type[ConfigT]
    context_class: type[ContextT]
    #: the OpenStack service: names its config directory, database and queue user
    service_name: ClassVar[str]
    #: the system user the service runs as
    service_user: ClassVar[str] = "root"
    #: endpoint -> database name, for charms with several (default: the service's name)
    databases: ClassVar[Mapping[str, str]] = {}
    amqp_vhost: ClassVar[str] = "openstack"
    #: the port the service's API listens on (ingress routes to it); 0: no API
    api_port: ClassVar[int] = 0
    #: roles keystone grants the service user besides admin and service
    identity_extra_roles: ClassVar[tuple[str, ...]] = ()
    #: the charm's own handlers, by endpoint (they win over the library's table)
    own_wiring: ClassVar[Mapping[str, wiring.Wire]] = {}
    #: what this kind of charm's applier imports and needs (for the build)
    applier_wire: ClassVar[wiring.Wire | None] = None

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        # Each record at DEBUG or above is a juju-log process: the framework's
        # own debug lines cost three per hook, so they are kept only when the
        # operator asked for debug.
        logging.getLogger().setLevel(logging.DEBUG if self.config.get("debug") else logging.INFO)
        self._status: ops.StatusBase | None = None
        #: this hook's plan, once the reconcile got that far
        self._plan: Sequence[Workload] = ()
        self._is_leader: bool | None = None
        self._hook = os.environ.get("JUJU_HOOK_NAME", "")
        self.peers = Peers(self, next(iter(self.meta.peers))) if self.meta.peers else None
        declared = [
            (role, name, meta.interface_name or "")
            for role, endpoints in (("requires", self.meta.requires), ("provides", self.meta.provides))
            for name, meta in endpoints.items()
        ]
        wired = wiring.wires(declared, self.own_wiring)
        #: endpoint -> the context field its handler fills
        self._fields = {
            endpoint: wiring.context_field(endpoint, wired[endpoint], role, interface)
            for role, endpoint, interface in declared
            if endpoint in wired
        }
        self.handlers: dict[str, RelationHandler[Any]] = {
            endpoint: wire.factory(self, endpoint) for endpoint, wire in wired.items()
        }
        for event in self._reconcile_events():
            framework.observe(event, self._on_event)
        # every dispatch (hook or action) ends with pre-commit: peer data goes out then, at once
        framework.observe(framework.on.pre_commit, self._on_pre_commit)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)
        framework.observe(self.on.collect_app_status, self._on_collect_app_status)

    # -- what a charm declares ----------------------------------------------

    def workloads(self, ctx: ContextT) -> Sequence[Workload]:
        """One workload per target: each container of a k8s charm, or the host of a machine charm."""
        raise NotImplementedError

    def leader_work(self, ctx: ContextT) -> Sequence[LeaderTask]:
        """Ordered leader tasks (db sync, bootstrap), each run once per distinct inputs."""
        return ()

    def after_start(self, ctx: ContextT) -> None:
        """Work that needs the services running (the leader's API calls)."""

    def catalog(self) -> Sequence[ids.ServiceEndpoint]:
        """The catalog entries asked of keystone on ``identity-service`` (see :meth:`catalog_entry`)."""
        return ()

    def active_message(self, ctx: ContextT) -> str:
        """Shown in the active status (e.g. the URL users reach)."""
        return ""

    def applier(self, workload: Workload) -> Applier:
        """The applier for one workload's target."""
        raise NotImplementedError

    def check_plan(self, plan: Sequence[Workload]) -> None:
        """Raise on a plan that cannot be what the charm means (a charm bug, not a status)."""
        targets = [w.target for w in plan]
        if len(set(targets)) != len(targets):
            raise RuntimeError(f"{self.app.name}: more than one workload for a target in {targets}")
        for w in plan:
            services = {s.name for s in w.services}
            for check in w.checks:
                unknown = sorted(set(check.restarts) - services)
                if unknown:
                    raise RuntimeError(
                        f"{self.app.name}: check {check.name} restarts {unknown}, not services of {w.target}"
                    )

    # -- cached facts of this hook ------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Leadership, asked once per hook."""
        if self._is_leader is None:
            self._is_leader = self.unit.is_leader()
        return self._is_leader

    @property
    def hook(self) -> str:
        """The running hook's name (``""`` in an action)."""
        return self._hook

    @functools.cached_property
    def typed_config(self) -> ConfigT:
        """The charm config, validated; invalid values raise Blocked naming the option."""
        try:
            return self.load_config(self.config_class)
        except InvalidOption as e:
            raise Blocked(str(e)) from None
        except (TypeError, ValueError) as e:
            raise Blocked(f"invalid config: {e}") from None

    @functools.cached_property
    def context(self) -> ContextT:
        """The typed context, built once per hook (after the relations were checked)."""
        return self.build_context()

    def build_context(self) -> ContextT:
        """Build ``context_class`` from the config and every handler's context."""
        return self.context_class(**self.context_fields())

    def context_fields(self) -> dict[str, Any]:
        """The shared fields of the context, for :meth:`build_context` overrides to extend."""
        by_interface: dict[str, Any] = {}
        databases: dict[str, Any] = {}
        for endpoint, handler in self.handlers.items():
            field = self._fields[endpoint]
            context = handler.context if field else None
            if context is None:
                continue
            if field == "databases":
                databases[endpoint] = context
            else:
                by_interface[field] = context
        return {
            "config": self.typed_config,
            "service_name": self.service_name,
            "app": self.app.name,
            "unit": self.unit.name,
            "model": self.model.name,
            "databases": databases,
            "urls": self.urls,
            **by_interface,
        }

    @property
    def templates_dir(self) -> pathlib.Path:
        """This charm's own templates."""
        return self.charm_dir / "src" / "templates"

    # -- facts the handlers ask for -------------------------------------------

    def database_name(self, endpoint: str) -> str:
        """The database asked for on ``endpoint``."""
        return self.databases.get(endpoint, self.service_name)

    def ingress_port(self) -> int:
        """The port ingress routes to."""
        if not self.api_port:
            raise RuntimeError(f"{self.app.name} declares an ingress endpoint but no api_port")
        return self.api_port

    @property
    def tls_enabled(self) -> bool:
        """Whether this unit serves TLS (a certificate has been issued)."""
        return any(self.handlers[e].ready for e, field in self._fields.items() if field == "tls")

    def certificate_names(self) -> tuple[str, list[str]]:
        """The common name and DNS names of this unit's certificate."""
        raise NotImplementedError

    @property
    def urls(self) -> URLs | None:
        """Where the API is reached; ``None`` for a charm without one."""
        return None

    def identity_request(self) -> ids.IdentityServiceRequest:
        """What ``identity-service`` asks of keystone: :meth:`catalog` in the configured region."""
        from charms.keystone_k8s.v0 import identity_service as ids

        config = self.typed_config
        if not isinstance(config, APIConfig):
            raise RuntimeError(f"{self.app.name}: identity-service needs an APIConfig (region)")
        return ids.IdentityServiceRequest(
            service_endpoints=tuple(self.catalog()),
            region=config.region,
            extra_roles=tuple(sorted(set(self.identity_extra_roles))),
        )

    def catalog_entry(self, service_type: str, description: str, name: str = "") -> ids.ServiceEndpoint:
        """One catalog entry at this charm's URLs."""
        from charms.keystone_k8s.v0 import identity_service as ids

        urls = self.urls
        if urls is None:
            raise RuntimeError(f"{self.app.name} registers {service_type} but serves no API")
        return ids.ServiceEndpoint(
            service_name=name or self.service_name,
            type=service_type,
            description=description,
            admin_url=urls.admin,
            internal_url=urls.internal,
            public_url=urls.public,
        )

    def db_sync(
        self,
        ctx: ServiceContext[Any],
        target: str,
        *argv: str,
        endpoint: str = "database",
        name: str = "db-sync",
    ) -> LeaderTask:
        """The leader's schema migration in ``target``: once per database, and after each upgrade.

        Its inputs are the database's server and name, not its password: a
        password rotation needs no new sync.
        """
        database = ctx.databases.get(endpoint)
        location = database.location if database else ""
        return LeaderTask(name, target, Command(tuple(argv), user=self.service_user), inputs=location)

    def trust_files(self, ctx: ServiceContext[Any]) -> list[File]:
        """This unit's certificate, key and CA, and the CAs it trusts, once received."""
        user = self.service_user
        files: list[File] = []
        if ctx.tls is not None:
            files += [
                File(ctx.tls.certificate_path, ctx.tls.server_chain, user, user, 0o644),
                File(ctx.tls.private_key_path, ctx.tls.private_key, user, user, 0o600),
                File(ctx.tls.ca_path, ctx.tls.ca, user, user, 0o644),
            ]
        if ctx.ca is not None:
            files.append(File(ctx.ca.path, ctx.ca.bundle, user, user, 0o644))
        return files

    def logging_config(self, ctx: ServiceContext[Any]) -> File:
        """The oslo services' Python logging config (``log_config_append`` of parts/default.j2)."""
        return self.render(
            "logging.conf.j2", f"/etc/{self.service_name}/logging.conf", ctx, permissions=0o644
        )

    # -- rendering -------------------------------------------------------------

    def render(
        self,
        template: str,
        path: str,
        ctx: ServiceContext[Any],
        *,
        values: Mapping[str, object] | None = None,
        user: str | None = None,
        group: str | None = None,
        permissions: int = 0o640,
        restarts: tuple[str, ...] | None = None,
        file_format: templating.Format | None = None,
    ) -> File:
        """A file rendered from ``template`` (this charm's, else the library's), owned by the service user.

        The template sees the context (and ``values``, a builder's own); a value
        that would break the file's format is Blocked naming the file.
        """
        try:
            content = templating.render(
                self.templates_dir,
                template,
                {**ctx.template_vars(), **(values or {})},
                file_format=file_format or templating.format_of(path),
            )
        except templating.UnsafeValue as e:
            raise Blocked(f"refusing to write {path}: {e}") from None
        owner = user or self.service_user
        return File(path, content, owner, group or owner, permissions, restarts)

    # -- the reconcile -----------------------------------------------------------

    def _reconcile_events(self) -> Iterator[ops.BoundEvent]:
        on = self.on
        yield from (on.install, on.start, on.config_changed, on.upgrade_charm, on.update_status)
        yield from (on.leader_elected, on.secret_changed, on.secret_rotate)
        for endpoint in self.meta.relations:
            for kind in ("created", "joined", "changed", "departed", "broken"):
                yield getattr(on[endpoint], f"relation_{kind}")
        for container in self.meta.containers:
            yield on[container].pebble_ready
            yield on[container].pebble_check_failed
            yield on[container].pebble_check_recovered

    def _on_event(self, event: ops.EventBase) -> None:
        if isinstance(event, ops.PebbleCheckEvent | ops.PebbleReadyEvent):
            self._note_checks(event)
        if isinstance(event, ops.UpgradeCharmEvent) and self.is_leader and self.peers:
            generation = int(self.peers.get("upgrade-generation") or 0) + 1
            with contextlib.suppress(NotReady):
                self.peers.set("upgrade-generation", str(generation))
        try:
            self.reconcile()
        except NotReady as e:
            self._status = e.status()
            ready = False
        else:
            self._status = ops.ActiveStatus(one_line(self.active_message(self.context)))
            ready = True
        for handler in self.handlers.values():
            try:
                handler.provide(ready)
            except NotReady as e:
                self._status = e.status()

    def reconcile(self) -> None:
        """Bring everything to the desired state, or raise what is missing."""
        self.typed_config  # noqa: B018 (invalid config stops everything first)
        for handler in self.handlers.values():
            handler.publish()
        self.check_relations()
        ctx = self.context
        plan = self.workloads(ctx)
        self.check_plan(plan)
        self._plan = plan
        self._forget_undeclared_checks(plan)
        appliers = {w.target: self.applier(w) for w in plan}
        try:
            for applier in appliers.values():
                applier.apply(start=False, record=False)
            for task in self.leader_work(ctx):
                self.run_leader_task(task, appliers)
        except NotReady:
            # what was applied is recorded even when the leader's work has to wait
            for applier in appliers.values():
                applier.record()
            raise
        for applier in appliers.values():
            applier.apply(start=True)
        self.after_start(ctx)

    def check_relations(self) -> None:
        """Raise Blocked naming missing mandatory relations, Waiting naming incomplete ones."""
        missing = [e for e, h in self.handlers.items() if h.mandatory and not h.related]
        if missing:
            noun = "relation" if len(missing) == 1 else "relations"
            raise Blocked(f"missing {noun}: {', '.join(missing)}")
        incomplete = [
            f"{e} ({h.waiting_for})"
            for e, h in self.handlers.items()
            if h.related and h.holds_back and not h.ready
        ]
        if incomplete:
            raise Waiting(f"waiting for {'; '.join(incomplete)}")

    def _on_pre_commit(self, _: ops.EventBase) -> None:
        if self.peers is not None:
            self.peers.flush()

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        if self._status is None:
            return
        # what the reconcile stopped at (Blocked, Waiting) says more than the check of a
        # service it could not configure or start: a failing check only stands in for Active
        status = self._status
        if isinstance(status, ops.ActiveStatus):
            status = self.check_status() or status
        event.add_status(status)

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        if self._status is not None:
            event.add_status(self._status)

    # -- Pebble's health checks ---------------------------------------------------

    def failing_checks(self) -> list[tuple[str, str]]:
        """``(container, check)`` of each check Pebble reported failing and not yet recovered, sorted."""
        self._pebble_checks.set_default(failing={})
        failing = self._pebble_checks.failing
        return sorted((container, name) for container in failing for name in failing[container])

    def check_status(self) -> ops.StatusBase | None:
        """Waiting naming the first failing check, its container and what Pebble restarts; else ``None``."""
        failing = self.failing_checks()
        if not failing:
            return None
        container, name = failing[0]
        restarts = next(
            (c.restarts for w in self._plan if w.target == container for c in w.checks if c.name == name),
            (),
        )
        message = f"{name} failing in container {container}"
        if restarts:
            message += f"; Pebble restarts {', '.join(restarts)}"
        if len(failing) > 1:
            more = len(failing) - 1
            message += f"; {more} more {'check' if more == 1 else 'checks'} failing"
        return ops.WaitingStatus(one_line(message))

    def _set_failing(self, failing: set[tuple[str, str]]) -> None:
        if failing == set(self.failing_checks()):
            return
        by_container: dict[str, list[str]] = {}
        for container, name in sorted(failing):
            by_container.setdefault(container, []).append(name)
        self._pebble_checks.failing = by_container

    def _note_checks(self, event: ops.PebbleCheckEvent | ops.PebbleReadyEvent) -> None:
        container = event.workload.name
        failing = set(self.failing_checks())
        if isinstance(event, ops.PebbleCheckEvent):
            # the name comes with the event; any other field of event.info would ask Pebble
            check = (container, event.info.name)
            if isinstance(event, ops.PebbleCheckFailedEvent):
                failing.add(check)
            else:
                failing.discard(check)
        else:
            # A new Pebble (a restarted container) starts its checks afresh and will not send
            # the recovery of a failure noted from the old one; a charm container restarted
            # with its local state lost, beside a Pebble that kept running, will not hear of
            # that one's failure again. Either way what Pebble says now is the truth: one
            # call, in pebble-ready only.
            try:
                down = {
                    name
                    for name, c in event.workload.get_checks().items()
                    if c.status == ops.pebble.CheckStatus.DOWN
                }
            except ops.pebble.Error:
                return
            failing = {c for c in failing if c[0] != container} | {(container, name) for name in down}
        self._set_failing(failing)

    def _forget_undeclared_checks(self, plan: Sequence[Workload]) -> None:
        # a check renamed or dropped by an upgrade will never recover: it fails no longer
        declared = {(w.target, c.name) for w in plan for c in w.checks}
        failing = set(self.failing_checks())
        if not failing <= declared:
            self._set_failing(failing & declared)

    # -- leader work -------------------------------------------------------------

    def run_leader_task(self, task: LeaderTask, appliers: Mapping[str, Applier]) -> None:
        """Run one declared task in its target, once per distinct inputs."""
        applier = appliers.get(task.target)
        if applier is None:
            raise RuntimeError(f"leader task {task.name} runs in {task.target}, which has no workload")
        inputs = "\n".join((*task.command.argv, task.inputs))
        self.leader_task(task.name, inputs, lambda: applier.run(task.command), what=task.command.title)

    def leader_task(self, name: str, inputs: str, run: Callable[[], object], *, what: str) -> None:
        """Run ``run`` on the leader once per distinct ``inputs`` (and per charm upgrade).

        The marker lives in peer app data, so a new leader sees what is done and
        re-runs nothing, while an upgrade or a change of inputs runs it again.
        Non-leaders wait until the leader has done it for the same inputs.
        """
        if self.peers is None:
            raise RuntimeError("leader work needs a peer relation")
        generation = self.peers.get("upgrade-generation") or "0"
        fingerprint = hashlib.sha256(f"{generation}\n{inputs}".encode()).hexdigest()[:32]
        key = f"{name}-done"
        if self.peers.get(key) == fingerprint:
            return
        if not self.is_leader:
            raise Waiting(f"waiting for the leader to run {what}")
        run()
        self.peers.set(key, fingerprint)
