"""A Juju model in ops.testing: our charms wired as a bundle says, run until they settle.

Every application of ours runs for real in ops.testing, one leader unit each.
Relation data and granted secrets pass from each side's output state to the
other side's input, round after round, until no databag changes. The other
side of a relation with a charm we do not write is answered by a *responder*:
given the request our charm wrote, it returns the relation as that provider
would leave it (the unit tests use the fixtures; the functional tests create a
real database and broker user first).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterable, Mapping
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

#: the first relation id of a model's links, above the ids ops.testing gives peers
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


#: given a link to a charm we do not write and what our side asked (app and unit
#: databags), the relation as that provider leaves it, or None while it has no answer
Responder = Callable[[Link, Mapping[str, str], Mapping[str, str]], RelationFixture | None]


def endpoint_interface(charm: str, endpoint: str) -> str:
    """The interface of one of a charm's endpoints."""
    meta = merged_charmcraft(charm)
    for role in ("requires", "provides", "peers"):
        if endpoint in (meta.get(role) or {}):
            return meta[role][endpoint]["interface"]
    raise ValueError(f"{charm} has no endpoint {endpoint}")


class SimulatedModel:
    """Our applications (``app -> charm``) related as ``relations`` (pairs of ``app:endpoint``)."""

    def __init__(
        self,
        apps: Mapping[str, str],
        relations: Iterable[tuple[str, str]],
        responder: Responder,
        root: pathlib.Path,
        *,
        model: str = "openstack",
        config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.apps = dict(apps)
        self.responder = responder
        self.links: list[Link] = []
        for n, (a, b) in enumerate(relations, start=FIRST_LINK_ID):
            left, right = Side.parse(a), Side.parse(b)
            for mine, theirs in ((left, right), (right, left)):
                if mine.app in self.apps:
                    interface = endpoint_interface(self.apps[mine.app], mine.endpoint)
                    self.links.append(Link(n, mine, theirs, theirs.app in self.apps, interface))
        self.contexts = {app: charm_context(charm, app_name=app) for app, charm in self.apps.items()}
        self.states: dict[str, testing.State] = {}
        #: (app, relation id) -> the other side's data as ``app`` last saw it
        self.seen: dict[tuple[str, int], object] = {}
        self.external: dict[int, RelationFixture] = {}
        for app, charm in self.apps.items():
            meta = merged_charmcraft(charm)
            self.states[app] = testing.State(
                leader=True,
                model=testing.Model(name=model),
                config=dict((config or {}).get(app, {})),
                relations=[testing.PeerRelation(p) for p in meta.get("peers") or {}],
                containers=[
                    container(c, root / app, container_storages(spec), execs={testing.Exec([], stdout="")})
                    for c, spec in (meta.get("containers") or {}).items()
                ],
                storages=[testing.Storage(s) for s in meta.get("storage") or {}],
            )

    # -- what one application sees -------------------------------------------------

    def _relation(self, app: str, link: Link) -> testing.Relation:
        previous = self._local(app, link.id)
        local_app = dict(previous.local_app_data) if previous else {}
        local_unit = dict(previous.local_unit_data) if previous else {}
        if link.other_is_ours:
            other = self._local(link.other.app, link.id)
            remote_app = dict(other.local_app_data) if other else {}
            remote_unit = dict(other.local_unit_data) if other else {}
        else:
            answer = self.external.get(link.id) or self.responder(link, local_app, local_unit)
            remote_app, remote_unit = {}, {}
            if answer is not None:
                self.external[link.id] = answer
                assert isinstance(answer.relation, testing.Relation)
                remote_app = dict(answer.relation.remote_app_data)
                remote_unit = dict(next(iter(answer.relation.remote_units_data.values()), {}))
        return testing.Relation(
            link.ours.endpoint,
            id=link.id,
            interface=link.interface,
            remote_app_name=link.other.app,
            local_app_data=local_app,
            local_unit_data=local_unit,
            remote_app_data=remote_app,
            remote_units_data={0: remote_unit},
        )

    def _local(self, app: str, relation_id: int) -> testing.Relation | None:
        for relation in self.states[app].relations:
            if relation.id == relation_id and isinstance(relation, testing.Relation):
                return relation
        return None

    def _secrets(self, app: str) -> list[testing.Secret]:
        own = [s for s in self.states[app].secrets if s.owner is not None]
        mine = {lk.id for lk in self.links if lk.ours.app == app}
        granted = [
            testing.Secret(s.latest_content, id=s.id, owner=None)
            for other, state in self.states.items()
            if other != app
            for s in state.secrets
            if s.owner is not None and set(s.remote_grants) & mine
        ]
        for link in self.links:
            answer = self.external.get(link.id)
            if link.ours.app == app and answer is not None:
                granted.extend(answer.secrets)
        return own + granted

    def input_state(self, app: str) -> testing.State:
        """What ``app`` sees now: every relation with the other sides' latest data."""
        peers = [r for r in self.states[app].relations if isinstance(r, testing.PeerRelation)]
        relations = [self._relation(app, lk) for lk in self.links if lk.ours.app == app]
        return dataclasses.replace(
            self.states[app], relations=[*peers, *relations], secrets=self._secrets(app)
        )

    # -- running -------------------------------------------------------------------

    def run(self, app: str, event: Callable[[testing.Context[Any]], Any] | None = None) -> testing.State:
        """Run one event (default config-changed) on ``app`` with the latest data."""
        ctx = self.contexts[app]
        load_charm_class(self.apps[app])  # keeps the charm's src/ importable, as Juju does
        state = self.input_state(app)
        self._saw(app, state)
        self.states[app] = ctx.run(event(ctx) if event else ctx.on.config_changed(), state)
        return self.states[app]

    @staticmethod
    def _remote(relation: testing.Relation) -> object:
        return (sorted(relation.remote_app_data.items()), sorted(relation.remote_units_data[0].items()))

    def _saw(self, app: str, state: testing.State) -> None:
        for relation in state.relations:
            if isinstance(relation, testing.Relation):
                self.seen[(app, relation.id)] = self._remote(relation)

    def deliver(self, app: str) -> None:
        """Run what Juju would on ``app`` now: relation-changed of each relation whose other side changed.

        A charm may rely on that event to learn of new remote data (keystone reads
        a requirer's request only then); config-changed when nothing changed.
        """
        changed = [
            r.id
            for r in self.input_state(app).relations
            if isinstance(r, testing.Relation) and self.seen.get((app, r.id)) != self._remote(r)
        ]
        if not changed:
            self.run(app)
        for relation_id in changed:
            state = self.input_state(app)
            relation = state.get_relation(relation_id)
            self.run(app, lambda ctx, relation=relation: ctx.on.relation_changed(relation, remote_unit=0))

    def run_action(self, app: str, action: str, **params: Any) -> dict[str, Any]:
        """Run an action on ``app``'s unit and return its results."""
        ctx = self.contexts[app]
        self.run(app, lambda c: c.on.action(action, params=params))
        return dict(ctx.action_results or {})

    def databags(self) -> dict[tuple[str, int], tuple[dict[str, str], dict[str, str]]]:
        return {
            (app, r.id): (dict(r.local_app_data), dict(r.local_unit_data))
            for app, state in self.states.items()
            for r in state.relations
            if isinstance(r, testing.Relation)
        }

    def settle(
        self,
        max_rounds: int = 8,
        *,
        between_rounds: Callable[[], None] | None = None,
        until_active: bool = False,
    ) -> dict[str, Any]:
        """Deliver Juju's events to every application, round after round, until no databag changes.

        ``between_rounds`` runs after each round (the functional tests wait there for
        started services, as time passes between hooks); with ``until_active`` the
        rounds also go on until every unit is active.
        """
        for _ in range(max_rounds):
            before = self.databags()
            for app in self.apps:
                self.deliver(app)
            if between_rounds is not None:
                between_rounds()
            active = all(s.name == "active" for s in self.statuses().values())
            if self.databags() == before and (active or not until_active):
                return self.statuses()
        raise AssertionError(f"not settled after {max_rounds} rounds: {self.statuses()}")

    def statuses(self) -> dict[str, Any]:
        """Each application's unit status."""
        return {app: state.unit_status for app, state in self.states.items()}
