"""SimulatedModel with several units: who leads, who sees what, and what a follower may not do."""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import ops
import pytest
from openstack_charms.testing import RelationFixture, fixture_for
from openstack_charms.testing.model import Link, SimulatedModel
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
