"""A Juju model in ops.testing: our charms wired as a bundle says, run until they settle.

Every application of ours runs for real in ops.testing, as many units as its
scale (``<app>/0`` is the leader), each unit with a state of its own. Relation
data and granted secrets pass from each side's output state to the other
side's input, round after round, until no databag changes: a unit sees its
application's databags as the leader last left them, every unit of the other
side (``remote_units_data``), and, on the peer relation, the other units of its
own application (``peers_data``). Only a leader may change an application
databag; a follower that does is an error. Units are added and removed as
``juju add-unit`` and ``remove-unit`` do (:meth:`SimulatedModel.add_unit`,
:meth:`SimulatedModel.remove_unit`), with the hooks Juju runs on every unit
concerned; a leader removed hands over to the lowest-numbered unit left.

The other side of a relation with a charm we do not write is answered by a
*responder*: given the request our charm wrote, it returns the relation as
that provider would leave it (the unit tests use the fixtures; the functional
tests create a real database and broker user first). It answers once per
relation, except for the ``live`` interfaces, whose provider answers again
whenever the request changes (a CA signs each unit's certificate request as
it comes).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import pathlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from ops import testing

from . import (
    RelationFixture,
    charm_context,
    container,
    container_storages,
    load_charm_class,
    merged_charmcraft,
)

#: the first relation id of a model's links (peer relations get the ids below)
FIRST_LINK_ID = 100


@dataclasses.dataclass(frozen=True)
class Side:
    """One end of a relation: ``app:endpoint``."""

    app: str
    endpoint: str

    @classmethod
    def parse(cls, text: str) -> Side:
        """Read ``app:endpoint``."""
        app, endpoint = text.split(":")
        return cls(app, endpoint)


@dataclasses.dataclass(frozen=True)
class Link:
    """A relation seen from one of our applications."""

    id: int
    ours: Side
    other: Side
    other_is_ours: bool
    interface: str


#: given a link to a charm we do not write and what our side asked (the app databag and
#: the leader unit's; every unit's: :meth:`SimulatedModel.requests`), the relation as that
#: provider leaves it, or None while it has no answer
Responder = Callable[[Link, Mapping[str, str], Mapping[str, str]], RelationFixture | None]


def endpoint_interface(charm: str, endpoint: str) -> str:
    """The interface of one of a charm's endpoints."""
    meta = merged_charmcraft(charm)
    for role in ("requires", "provides", "peers"):
        if endpoint in (meta.get(role) or {}):
            return meta[role][endpoint]["interface"]
    raise ValueError(f"{charm} has no endpoint {endpoint}")


class SimulatedModel:
    """Our applications (``app -> charm``) related as ``relations`` (pairs of ``app:endpoint``).

    ``scale`` gives the number of units of an application (default 1);
    ``live`` the interfaces whose responder is asked again whenever the
    request changes. Methods taking an application run its leader unit
    unless given a unit name (``glance/2``). ``charm_runs_in`` gives, for a
    unit, the context its charm's hooks run in (the functional tests enter the
    unit's network namespace: a charm shares its pod's network).
    """

    def __init__(
        self,
        apps: Mapping[str, str],
        relations: Iterable[tuple[str, str]],
        responder: Responder,
        root: pathlib.Path,
        *,
        model: str = "openstack",
        config: Mapping[str, Mapping[str, Any]] | None = None,
        scale: Mapping[str, int] | None = None,
        live: Collection[str] = (),
        charm_runs_in: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
        observer: Callable[[str, str, testing.State], None] | None = None,
        machine_of: Callable[[str], tuple[Any, pathlib.Path]] | None = None,
    ) -> None:
        self.apps = dict(apps)
        #: a machine charm's unit -> its host backend and state directory (default: a fake host)
        self.machine_of = machine_of
        self.model_name = model
        #: told of every hook run: (unit, hook, the state it left)
        self.observer = observer
        #: hooks run, by unit
        self.hooks: collections.Counter[str] = collections.Counter()
        #: the last hook each unit ran
        self.last_hook: dict[str, str] = {}
        self.charm_runs_in = charm_runs_in or (lambda unit: contextlib.nullcontext())
        self.responder = responder
        self.live = frozenset(live)
        #: app -> its unit names, the leader first
        self.units: dict[str, list[str]] = {
            app: [f"{app}/{n}" for n in range(int((scale or {}).get(app, 1)))] for app in self.apps
        }
        for app, units in self.units.items():
            if not units:
                raise ValueError(f"{app}: scale must be at least 1")
        self.links: list[Link] = []
        for n, (a, b) in enumerate(relations, start=FIRST_LINK_ID):
            left, right = Side.parse(a), Side.parse(b)
            for mine, theirs in ((left, right), (right, left)):
                if mine.app in self.apps:
                    interface = endpoint_interface(self.apps[mine.app], mine.endpoint)
                    self.links.append(Link(n, mine, theirs, theirs.app in self.apps, interface))
        self.contexts: dict[str, testing.Context[Any]] = {}
        #: unit -> its latest state
        self.unit_states: dict[str, testing.State] = {}
        #: (unit, relation id) -> the other side's data as ``unit`` last saw it
        self.seen: dict[tuple[str, int], object] = {}
        self.external: dict[int, RelationFixture] = {}
        #: relation id -> the request a live responder last answered
        self._asked: dict[int, object] = {}
        #: (app, peer endpoint) -> the peer relation's id, the same for every unit
        self.peer_ids: dict[tuple[str, str], int] = {}
        self._root = root
        self._config = {app: dict(values) for app, values in (config or {}).items()}
        #: app -> the number of its next unit (Juju never gives a unit's number again)
        self.next_number = {app: len(units) for app, units in self.units.items()}
        for app, charm in self.apps.items():
            for endpoint in merged_charmcraft(charm).get("peers") or {}:
                self.peer_ids[(app, endpoint)] = len(self.peer_ids) + 1
            for n, unit in enumerate(self.units[app]):
                self._new_unit(unit, leader=n == 0)
        if len(self.peer_ids) >= FIRST_LINK_ID:
            raise ValueError("too many peer relations")

    # -- units ---------------------------------------------------------------------

    def _new_unit(self, unit: str, *, leader: bool) -> None:
        """A unit's context and first state: its config, peer relations, containers and storage."""
        app = self._app(unit)
        charm = self.apps[app]
        meta = merged_charmcraft(charm)
        self.contexts[unit] = charm_context(
            charm, app_name=app, unit_id=self._number(unit), machine_of=self.machine_of
        )
        self.unit_states[unit] = testing.State(
            leader=leader,
            model=testing.Model(name=self.model_name),
            config=dict(self._config.get(app, {})),
            relations=[testing.PeerRelation(p, id=self.peer_ids[(app, p)]) for p in meta.get("peers") or {}],
            containers=[
                container(
                    c,
                    self._root / unit.replace("/", "-"),
                    container_storages(spec),
                    execs={testing.Exec([], stdout="")},
                )
                for c, spec in (meta.get("containers") or {}).items()
            ],
            storages=[testing.Storage(s) for s in meta.get("storage") or {}],
        )

    def _unit(self, app_or_unit: str) -> str:
        return app_or_unit if "/" in app_or_unit else self.units[app_or_unit][0]

    @staticmethod
    def _app(unit: str) -> str:
        return unit.split("/")[0]

    @staticmethod
    def _number(unit: str) -> int:
        return int(unit.split("/")[1])

    def leader(self, app: str) -> str:
        """The leader unit of ``app``."""
        return self.units[app][0]

    @property
    def states(self) -> dict[str, testing.State]:
        """Each application's leader unit state (all units: :attr:`unit_states`)."""
        return {app: self.unit_states[units[0]] for app, units in self.units.items()}

    # -- what one unit sees --------------------------------------------------------

    def _local(self, unit: str, relation_id: int) -> testing.RelationBase | None:
        for relation in self.unit_states[unit].relations:
            if relation.id == relation_id:
                return relation
        return None

    def _bags(self, unit: str, relation_id: int) -> tuple[dict[str, str], dict[str, str]]:
        """The application databag (the leader's) and ``unit``'s own databag on a relation."""
        leader = self._local(self.leader(self._app(unit)), relation_id)
        own = self._local(unit, relation_id)
        return (
            dict(leader.local_app_data) if leader else {},
            dict(own.local_unit_data) if own else {},
        )

    def requests(self, link: Link) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """What our side of ``link`` wrote: its application databag, and every unit's by unit name."""
        app_data, _ = self._bags(self.leader(link.ours.app), link.id)
        return app_data, {u: self._bags(u, link.id)[1] for u in self.units[link.ours.app]}

    def _answer(self, link: Link) -> RelationFixture | None:
        answer = self.external.get(link.id)
        if answer is not None and link.interface not in self.live:
            return answer
        app_data, units = self.requests(link)
        request = (sorted(app_data.items()), sorted((u, sorted(d.items())) for u, d in units.items()))
        if answer is not None and self._asked.get(link.id) == request:
            return answer
        self._asked[link.id] = request
        fresh = self.responder(link, app_data, units[self.leader(link.ours.app)])
        if fresh is not None:
            self.external[link.id] = answer = fresh
        return answer

    def _relation(self, unit: str, link: Link) -> testing.Relation:
        local_app, local_unit = self._bags(unit, link.id)
        remote_units: dict[int, dict[str, str]]
        if link.other_is_ours:
            other = link.other.app
            remote_app, _ = self._bags(self.leader(other), link.id)
            remote_units = {self._number(u): self._bags(u, link.id)[1] for u in self.units[other]}
        else:
            answer = self._answer(link)
            remote_app, remote_units = {}, {0: {}}
            if answer is not None:
                assert isinstance(answer.relation, testing.Relation)
                remote_app = dict(answer.relation.remote_app_data)
                remote_units = {0: dict(next(iter(answer.relation.remote_units_data.values()), {}))}
        return testing.Relation(
            link.ours.endpoint,
            id=link.id,
            interface=link.interface,
            remote_app_name=link.other.app,
            local_app_data=local_app,
            local_unit_data=local_unit,
            remote_app_data=remote_app,
            remote_units_data=remote_units,
        )

    def _peer(self, unit: str, relation: testing.PeerRelation) -> testing.PeerRelation:
        app = self._app(unit)
        local_app, local_unit = self._bags(unit, relation.id)
        others = {self._number(u): self._bags(u, relation.id)[1] for u in self.units[app] if u != unit}
        return dataclasses.replace(
            relation, local_app_data=local_app, local_unit_data=local_unit, peers_data=others
        )

    def _secrets(self, unit: str) -> list[testing.Secret]:
        app = self._app(unit)
        state = self.unit_states[unit]
        # app-owned secrets are the leader's to change: every unit sees them as the leader left them
        app_owned = [s for s in self.unit_states[self.leader(app)].secrets if s.owner == "app"]
        own = [*app_owned, *(s for s in state.secrets if s.owner == "unit")]
        mine = {lk.id for lk in self.links if lk.ours.app == app}
        granted: dict[str, testing.Secret] = {}
        for other, units in self.units.items():
            if other == app:
                continue
            # a follower's copy of an app secret may be behind the leader's
            owned = [s for s in self.unit_states[units[0]].secrets if s.owner == "app"]
            owned += [s for u in units for s in self.unit_states[u].secrets if s.owner == "unit"]
            for s in owned:
                if set(s.remote_grants) & mine:
                    granted.setdefault(s.id, testing.Secret(s.latest_content, id=s.id, owner=None))
        for link in self.links:
            answer = self.external.get(link.id)
            if link.ours.app == app and answer is not None:
                for s in answer.secrets:
                    granted.setdefault(s.id, s)
        return own + list(granted.values())

    def input_state(self, app_or_unit: str) -> testing.State:
        """What a unit (an application: its leader) sees now: every relation with the latest data."""
        unit = self._unit(app_or_unit)
        app = self._app(unit)
        peers = [
            self._peer(unit, r)
            for r in self.unit_states[unit].relations
            if isinstance(r, testing.PeerRelation)
        ]
        relations = [self._relation(unit, lk) for lk in self.links if lk.ours.app == app]
        return dataclasses.replace(
            self.unit_states[unit], relations=[*peers, *relations], secrets=self._secrets(unit)
        )

    # -- running -------------------------------------------------------------------

    def run(
        self, app_or_unit: str, event: Callable[[testing.Context[Any]], Any] | None = None
    ) -> testing.State:
        """Run one event (default config-changed) on a unit (an application: its leader)."""
        unit = self._unit(app_or_unit)
        ctx = self.contexts[unit]
        load_charm_class(self.apps[self._app(unit)])  # keeps the charm's src/ importable, as Juju does
        state = self.input_state(unit)
        self._saw(unit, state)
        what = event(ctx) if event else ctx.on.config_changed()
        hook = str(getattr(what, "path", "")).replace("_", "-") or "event"
        self.hooks[unit] += 1
        self.last_hook[unit] = hook
        with self.charm_runs_in(unit):
            out = ctx.run(what, state)
        if not state.leader:
            for before in state.relations:
                after = out.get_relation(before.id)
                if dict(after.local_app_data) != dict(before.local_app_data):
                    raise AssertionError(
                        f"{unit}, not the leader, changed the app databag of {before.endpoint}"
                    )
        self.unit_states[unit] = out
        if self.observer is not None:
            self.observer(unit, hook, out)
        return out

    def _remote(self, unit: str, relation: testing.RelationBase) -> object:
        if isinstance(relation, testing.PeerRelation):
            # the application databag is the leader's own writing: news only to the others
            app = [] if self.unit_states[unit].leader else sorted(relation.local_app_data.items())
            return (app, sorted((n, sorted(d.items())) for n, d in relation.peers_data.items()))
        assert isinstance(relation, testing.Relation)
        return (
            sorted(relation.remote_app_data.items()),
            sorted((n, sorted(d.items())) for n, d in relation.remote_units_data.items()),
        )

    def _saw(self, unit: str, state: testing.State) -> None:
        for relation in state.relations:
            self.seen[(unit, relation.id)] = self._remote(unit, relation)

    def deliver(self, app_or_unit: str) -> None:
        """Run what Juju would on a unit now: relation-changed of each relation whose other side changed.

        A charm may rely on that event to learn of new remote data (keystone reads
        a requirer's request only then); config-changed when nothing changed.
        """
        unit = self._unit(app_or_unit)
        changed = [
            r.id
            for r in self.input_state(unit).relations
            if self.remote_units(r) and self.seen.get((unit, r.id)) != self._remote(unit, r)
        ]
        if not changed:
            self.run(unit)
        for relation_id in changed:
            relation = self.input_state(unit).get_relation(relation_id)
            remote = self.remote_units(relation)[0]
            self.run(
                unit,
                lambda ctx, relation=relation, remote=remote: ctx.on.relation_changed(
                    relation, remote_unit=remote
                ),
            )

    @staticmethod
    def remote_units(relation: testing.RelationBase) -> list[int]:
        """The unit numbers that can change ``relation`` for this unit, sorted.

        The peer relation's changes come from the other units of ours (none: nobody
        changes it), any other's from the remote side.
        """
        if isinstance(relation, testing.PeerRelation):
            return sorted(relation.peers_data)
        assert isinstance(relation, testing.Relation)
        return sorted(relation.remote_units_data)

    def run_action(self, app_or_unit: str, action: str, **params: Any) -> dict[str, Any]:
        """Run an action on a unit (an application: its leader) and return its results."""
        unit = self._unit(app_or_unit)
        ctx = self.contexts[unit]
        self.run(unit, lambda c: c.on.action(action, params=params))
        return dict(ctx.action_results or {})

    def databags(self) -> dict[tuple[str, int], tuple[dict[str, str], dict[str, str]]]:
        """Every unit's view of its side of every relation, peers included: (app databag, unit databag)."""
        return {
            (unit, r.id): (dict(r.local_app_data), dict(r.local_unit_data))
            for unit, state in self.unit_states.items()
            for r in state.relations
        }

    def settle(
        self,
        max_rounds: int = 8,
        *,
        between_rounds: Callable[[], None] | None = None,
        until_active: bool = False,
    ) -> dict[str, Any]:
        """Deliver Juju's events to every unit, round after round, until no databag changes.

        ``between_rounds`` runs after each round (the functional tests wait there for
        started services, as time passes between hooks); with ``until_active`` the
        rounds also go on until every unit is active.
        """
        for _ in range(max_rounds):
            before = self.databags()
            for units in self.units.values():
                for unit in units:
                    self.deliver(unit)
            if between_rounds is not None:
                between_rounds()
            active = all(s.name == "active" for s in self.unit_statuses().values())
            if self.databags() == before and (active or not until_active):
                return self.statuses()
        raise AssertionError(f"not settled after {max_rounds} rounds: {self.unit_statuses()}")

    def unit_statuses(self) -> dict[str, Any]:
        """Each unit's status, by unit name."""
        return {unit: state.unit_status for unit, state in self.unit_states.items()}

    def statuses(self) -> dict[str, Any]:
        """Each application's unit status: the first of its units that is not active, else the leader's."""
        statuses = self.unit_statuses()
        result = {}
        for app, units in self.units.items():
            waiting = [statuses[u] for u in units if statuses[u].name != "active"]
            result[app] = waiting[0] if waiting else statuses[units[0]]
        return result

    # -- scaling (juju add-unit, remove-unit) ------------------------------------------

    def add_unit(self, app: str, *, prepare: Callable[[str], None] | None = None) -> str:
        """A new unit of ``app``, as ``juju add-unit`` makes it: its name, after its first hooks.

        It runs install, config-changed, start and pebble-ready of each container (no
        leader-elected: it does not lead), then created, joined (each remote unit) and
        changed of the peer relation and of every other; the other units of ``app`` and
        those of our applications related to it get joined and changed for it.
        ``prepare`` runs before its first hook (the sandbox makes its pod there). The
        model settles with :meth:`settle`.
        """
        unit = f"{app}/{self.next_number[app]}"
        self.next_number[app] += 1
        self._new_unit(unit, leader=False)
        self.units[app].append(unit)
        if prepare is not None:
            prepare(unit)
        for event in ("install", "config_changed", "start"):
            self.run(unit, lambda ctx, event=event: getattr(ctx.on, event)())
        for name in [c.name for c in self.unit_states[unit].containers]:
            self.run(
                unit,
                lambda ctx, name=name: ctx.on.pebble_ready(
                    next(c for c in self.input_state(unit).containers if c.name == name)
                ),
            )
        for relation in self.input_state(unit).relations:
            remotes = self.remote_units(relation)
            self._relation_event(unit, relation.id, "created")
            for remote in remotes:
                self._relation_event(unit, relation.id, "joined", remote_unit=remote)
            if remotes:
                self._relation_event(unit, relation.id, "changed", remote_unit=remotes[0])
        number = self._number(unit)
        for other, relation_id in self._hearing_of(unit):
            self._relation_event(other, relation_id, "joined", remote_unit=number)
            self._relation_event(other, relation_id, "changed", remote_unit=number)
        return unit

    def remove_unit(self, unit: str, *, gone: Callable[[str], None] | None = None) -> None:
        """Remove a unit as ``juju remove-unit`` does.

        The unit gets relation-departed for each remote unit of every relation (itself
        departing), relation-broken of each, stop and remove; then it is gone (``gone``
        runs: the sandbox deletes its pod there, as Kubernetes does once the unit is
        dead) and the other units of its application, and those of our applications
        related to it, get relation-departed for it. A leader removed hands leadership to
        the lowest-numbered unit left, which gets leader-elected. The model settles with
        :meth:`settle`.
        """
        app = self._app(unit)
        if unit not in self.units.get(app, []):
            raise KeyError(f"no unit {unit}")
        if len(self.units[app]) == 1:
            raise ValueError(f"{unit} is the last unit of {app}: the model keeps at least one")
        number = self._number(unit)
        hearing = self._hearing_of(unit)
        for relation in self.input_state(unit).relations:
            for remote in self.remote_units(relation):
                self._relation_event(unit, relation.id, "departed", remote_unit=remote, departing=unit)
        for relation in self.input_state(unit).relations:
            self._relation_event(unit, relation.id, "broken")
        self.run(unit, lambda ctx: ctx.on.stop())
        self.run(unit, lambda ctx: ctx.on.remove())
        led = self.leader(app) == unit
        self.units[app].remove(unit)
        last = self.unit_states.pop(unit)
        del self.contexts[unit]
        for key in [k for k in self.seen if k[0] == unit]:
            del self.seen[key]
        if led:
            self._hand_over(last, self.leader(app))
        if gone is not None:
            gone(unit)
        for other, relation_id in hearing:
            self._relation_event(other, relation_id, "departed", remote_unit=number, departing=unit)
        if led:
            self.run(self.leader(app), lambda ctx: ctx.on.leader_elected())

    def _hearing_of(self, unit: str) -> list[tuple[str, int]]:
        """The other units of ours that see ``unit`` as a remote unit, with the relation they see it on."""
        app = self._app(unit)
        found = [
            (u, relation_id)
            for (a, _), relation_id in self.peer_ids.items()
            if a == app
            for u in self.units[a]
        ]
        found += [
            (u, link.id)
            for link in self.links
            if link.other_is_ours and link.other.app == app
            for u in self.units[link.ours.app]
        ]
        return [(u, relation_id) for u, relation_id in found if u != unit]

    def _hand_over(self, last: testing.State, leader: str) -> None:
        """``leader`` leads now: the application's databags and secrets are as the last leader left them."""
        state = self.unit_states[leader]
        relations = []
        for relation in state.relations:
            before = next((r for r in last.relations if r.id == relation.id), None)
            if before is not None:
                relation = dataclasses.replace(relation, local_app_data=dict(before.local_app_data))
            relations.append(relation)
        secrets = [s for s in last.secrets if s.owner == "app"] + [
            s for s in state.secrets if s.owner != "app"
        ]
        self.unit_states[leader] = dataclasses.replace(
            state, leader=True, relations=relations, secrets=secrets
        )

    def _relation_event(
        self, unit: str, relation_id: int, kind: str, *, remote_unit: int | None = None, departing: str = ""
    ) -> None:
        """relation-<kind> of one relation on ``unit``, made from what the unit sees now."""
        relation = self.input_state(unit).get_relation(relation_id)
        on = self.contexts[unit].on
        if kind == "departed":
            event = on.relation_departed(
                relation, remote_unit=remote_unit, departing_unit=self._number(departing)
            )
        elif kind in ("joined", "changed"):
            event = getattr(on, f"relation_{kind}")(relation, remote_unit=remote_unit)
        else:
            event = getattr(on, f"relation_{kind}")(relation)
        with _departing(departing) if departing else contextlib.nullcontext():
            self.run(unit, lambda _ctx: event)


@contextlib.contextmanager
def _departing(unit: str) -> Iterator[None]:
    """Hooks run with ``unit`` as the departing unit (JUJU_DEPARTING_UNIT).

    ops.testing names it after the relation's remote application, and names the remote
    unit instead for unit number 0: wrong on the departing unit's own side.
    """
    from scenario import _runtime

    original = _runtime.Runtime._get_event_env

    def env(self: Any, state: testing.State, event: Any, charm_root: pathlib.Path) -> dict[str, str]:
        return {**original(self, state, event, charm_root), "JUJU_DEPARTING_UNIT": unit}

    _runtime.Runtime._get_event_env = env
    try:
        yield
    finally:
        _runtime.Runtime._get_event_env = original
