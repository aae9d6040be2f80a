"""SimulatedModel with several units: who leads, who sees what, and what a follower may not do."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import ops
import pytest
from openstack_charms.testing import RelationFixture, fixture_for
from openstack_charms.testing.model import Link, SimulatedModel
from openstack_charms.testing.relations import signing_fixture
from ops import testing

RELATIONS = [
    ("placement:database", "mysql:database"),
    ("placement:identity-service", "keystone:identity-service"),
    ("placement:ingress-internal", "traefik:ingress"),
]


class Counting:
    """The fixtures, counting how often each interface was asked."""

    def __init__(self) -> None:
        self.asked: dict[str, int] = {}

    def __call__(
        self, link: Link, app_data: Mapping[str, str], unit_data: Mapping[str, str]
    ) -> RelationFixture | None:
        self.asked[link.interface] = self.asked.get(link.interface, 0) + 1
        if link.interface == "ingress" and "port" not in app_data:
            return None
        return fixture_for(link.ours.endpoint, link.interface, link.ours.app)


def _model(tmp_path: pathlib.Path, responder: Any = None, **kwargs: Any) -> SimulatedModel:
    return SimulatedModel(
        {"placement": "placement-k8s"},
        RELATIONS,
        responder or Counting(),
        tmp_path,
        scale={"placement": 3},
        **kwargs,
    )


def test_units_each_with_their_own_state_and_one_leader(tmp_path: pathlib.Path) -> None:
    model = _model(tmp_path)
    statuses = model.settle()
    assert list(model.unit_statuses()) == ["placement/0", "placement/1", "placement/2"]
    assert all(isinstance(s, ops.ActiveStatus) for s in model.unit_statuses().values())
    assert list(statuses) == ["placement"]
    assert [s.leader for s in model.unit_states.values()] == [True, False, False]
    # an application's name stands for its leader
    assert model.states["placement"] is model.unit_states["placement/0"]
    assert model.run("placement") is model.unit_states["placement/0"]
    for unit, state in model.unit_states.items():
        peers = next(r for r in state.relations if isinstance(r, testing.PeerRelation))
        assert set(peers.peers_data) == {0, 1, 2} - {int(unit[-1])}
        ingress = next(r for r in state.relations if r.endpoint == "ingress-internal")
        # each unit tells the proxy where it is; the application's request is one databag, the leader's
        assert "placement-" + unit[-1] in ingress.local_unit_data["host"]
        leaders = next(r for r in model.unit_states["placement/0"].relations if r.id == ingress.id)
        assert "port" in ingress.local_app_data
        assert ingress.local_app_data == leaders.local_app_data


def test_the_status_of_an_application_is_its_first_unit_not_active(tmp_path: pathlib.Path) -> None:
    model = _model(tmp_path)
    model.settle()
    follower = model.unit_states["placement/2"]
    model.unit_states["placement/2"] = dataclasses.replace(follower, unit_status=ops.BlockedStatus("no"))
    assert model.statuses() == {"placement": ops.BlockedStatus("no")}


def test_a_follower_writing_an_app_databag_is_caught(tmp_path: pathlib.Path) -> None:
    model = _model(tmp_path)
    model.settle()

    class Rogue:
        """A context whose charm writes the app databag, whatever its leadership."""

        def run(self, _event: Any, state: testing.State) -> testing.State:
            relations = [
                dataclasses.replace(r, local_app_data={**r.local_app_data, "mine": "1"})
                if r.endpoint == "database"
                else r
                for r in state.relations
            ]
            return dataclasses.replace(state, relations=relations)

    model.contexts["placement/1"] = Rogue()  # type: ignore[assignment]
    with pytest.raises(
        AssertionError, match="placement/1, not the leader, changed the app databag of database"
    ):
        model.run("placement/1", lambda _ctx: None)
    model.contexts["placement/0"] = Rogue()  # type: ignore[assignment]
    model.run("placement/0", lambda _ctx: None)


def test_a_live_interface_is_asked_again_when_the_request_changes(tmp_path: pathlib.Path) -> None:
    once, live = Counting(), Counting()
    _model(tmp_path / "once", once).settle()
    _model(tmp_path / "live", live, live={"ingress"}).settle()
    # answered at once, asked once; the ingress answer waits for the leader's request, then
    # each unit's host is a new request to a live provider
    assert once.asked["mysql_client"] == live.asked["mysql_client"] == 1
    assert live.asked["ingress"] > once.asked["ingress"]


def test_each_units_hooks_run_in_the_context_it_is_given(tmp_path: pathlib.Path) -> None:
    entered: list[str] = []
    inside: list[bool] = []

    @contextlib.contextmanager
    def pod(unit: str) -> Iterator[None]:
        entered.append(unit)
        inside.append(True)
        try:
            yield
        finally:
            inside.pop()

    model = _model(tmp_path, charm_runs_in=pod)
    model.settle()
    assert set(entered) == {"placement/0", "placement/1", "placement/2"}
    assert inside == []
    before = len(entered)
    model.run("placement/1")
    assert entered[before:] == ["placement/1"]


# -- scaling: juju add-unit, remove-unit ----------------------------------------------------------


def _scaling(tmp_path: pathlib.Path, scale: int) -> tuple[SimulatedModel, list[tuple[str, str]]]:
    hooks: list[tuple[str, str]] = []
    model = SimulatedModel(
        {"placement": "placement-k8s"},
        RELATIONS,
        Counting(),
        tmp_path,
        scale={"placement": scale},
        observer=lambda unit, hook, _state: hooks.append((unit, hook)),
    )
    model.settle()
    hooks.clear()
    return model, hooks


def _peers(model: SimulatedModel, unit: str) -> testing.PeerRelation:
    return next(r for r in model.unit_states[unit].relations if isinstance(r, testing.PeerRelation))


def test_a_unit_added_runs_its_first_hooks_and_every_unit_sees_it(tmp_path: pathlib.Path) -> None:
    model, hooks = _scaling(tmp_path, 1)
    assert model.add_unit("placement") == "placement/1"
    new = [hook for unit, hook in hooks if unit == "placement/1"]
    # as Juju runs them on a new unit that does not lead, then each relation's, the peers' first
    assert new[:4] == ["install", "config-changed", "start", "placement-pebble-ready"]
    assert "leader-elected" not in new
    assert new[4:7] == ["peers-relation-created", "peers-relation-joined", "peers-relation-changed"]
    assert {"database-relation-joined", "identity-service-relation-changed"} <= set(new)
    assert [hook for unit, hook in hooks if unit == "placement/0"] == [
        "peers-relation-joined",
        "peers-relation-changed",
    ]
    assert model.add_unit("placement") == "placement/2"
    statuses = model.settle()
    assert statuses == {"placement": ops.ActiveStatus()}
    assert all(isinstance(s, ops.ActiveStatus) for s in model.unit_statuses().values())
    assert [model.unit_states[u].leader for u in ("placement/0", "placement/1", "placement/2")] == [
        True,
        False,
        False,
    ]
    for unit in ("placement/0", "placement/1", "placement/2"):
        peers = _peers(model, unit)
        assert set(peers.peers_data) == {0, 1, 2} - {int(unit[-1])}, unit
        # the leader's work (db sync) is done once, and the new units see it done
        assert peers.local_app_data == _peers(model, "placement/0").local_app_data
        assert "db-sync-done" in peers.local_app_data
        ingress = next(r for r in model.unit_states[unit].relations if r.endpoint == "ingress-internal")
        assert f"placement-{unit[-1]}" in ingress.local_unit_data["host"]


def test_a_removed_leader_hands_over_and_the_others_forget_it(tmp_path: pathlib.Path) -> None:
    model, hooks = _scaling(tmp_path, 3)
    app_data = dict(_peers(model, "placement/0").local_app_data)
    model.remove_unit("placement/0")
    gone = [hook for unit, hook in hooks if unit == "placement/0"]
    # departed for each remote unit (the two peers, one on each other relation), broken, stop, remove
    assert gone[:2] == ["peers-relation-departed", "peers-relation-departed"]
    assert gone[-6:] == [
        "peers-relation-broken",
        "database-relation-broken",
        "identity-service-relation-broken",
        "ingress-internal-relation-broken",
        "stop",
        "remove",
    ]
    assert [h for u, h in hooks if u != "placement/0"] == [
        "peers-relation-departed",
        "peers-relation-departed",
        "leader-elected",
    ]
    assert [u for u, h in hooks if h == "leader-elected"] == ["placement/1"]
    assert model.settle() == {"placement": ops.ActiveStatus()}
    assert list(model.unit_statuses()) == ["placement/1", "placement/2"]
    assert model.leader("placement") == "placement/1"
    assert [model.unit_states[u].leader for u in ("placement/1", "placement/2")] == [True, False]
    assert set(_peers(model, "placement/1").peers_data) == {2}
    assert set(_peers(model, "placement/2").peers_data) == {1}
    # the application's databag is the application's: the new leader holds it as the last one left it
    assert dict(_peers(model, "placement/2").local_app_data) == app_data
    # a unit's number is never given again
    assert model.add_unit("placement") == "placement/3"
    model.remove_unit("placement/3")
    model.remove_unit("placement/2")
    with pytest.raises(ValueError, match="last unit"):
        model.remove_unit("placement/1")


def test_ovn_central_scaled_down_past_its_founder_keeps_its_clusters(tmp_path: pathlib.Path) -> None:
    def signer(link: Link, _app: Mapping[str, str], _unit: Mapping[str, str]) -> RelationFixture | None:
        _, units = model.requests(link)
        return signing_fixture(
            link.ours.endpoint, units.values(), remote_app=link.other.app, relation_id=link.id
        )

    model = SimulatedModel(
        {"ovn-central": "ovn-central-k8s"},
        [("ovn-central:certificates", "ca:certificates")],
        signer,
        tmp_path,
        live={"tls-certificates"},
    )
    model.settle()
    model.add_unit("ovn-central")
    model.add_unit("ovn-central")
    assert model.settle() == {"ovn-central": ops.ActiveStatus()}
    members = json.loads(_peers(model, "ovn-central/2").local_app_data["members"])
    assert members == ["ovn-central/0", "ovn-central/1", "ovn-central/2"]
    founder = model.contexts["ovn-central/0"]
    founder.exec_history.clear()
    model.remove_unit("ovn-central/0")
    # the founder, departing, knows it is the one departing: it leaves both clusters itself
    left = {
        name: [e.command[3] for e in execs if e.command[0] == "ovs-appctl"]
        for name, execs in founder.exec_history.items()
    }
    assert {"cluster/leave"} == set(left["ovn-nb-db-server"]) == set(left["ovn-sb-db-server"])
    assert model.settle() == {"ovn-central": ops.ActiveStatus()}
    assert model.leader("ovn-central") == "ovn-central/1"
    for unit in ("ovn-central/1", "ovn-central/2"):
        peers = _peers(model, unit)
        assert json.loads(peers.local_app_data["members"]) == ["ovn-central/1", "ovn-central/2"], unit
        assert peers.local_app_data["founder"] == "ovn-central/0"
