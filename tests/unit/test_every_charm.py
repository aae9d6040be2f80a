"""The generic checks every charm gets for free, run over every charm of the collection."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
from openstack_charms.testing import (
    CHARMS,
    assert_blocked_without_each_mandatory,
    assert_follower_follows_the_leader,
    assert_idempotent,
    assert_order_invariant,
    charm_context,
    complete_relations,
    complete_state,
    mandatory_endpoints,
)
from ops import testing

ALL = sorted(p.name for p in CHARMS.iterdir() if (p / "charmcraft.yaml").exists())
EXECS = [testing.Exec([], stdout="")]


@pytest.mark.parametrize("charm", ALL)
def test_blocked_naming_each_missing_mandatory_relation(charm: str, tmp_path: pathlib.Path) -> None:
    base = complete_state(charm, tmp_path, execs=EXECS)
    base = dataclasses.replace(
        base, relations=[r for r in base.relations if isinstance(r, testing.PeerRelation)]
    )
    assert_blocked_without_each_mandatory(
        charm_context(charm), complete_relations(charm), mandatory_endpoints(charm), base=base
    )


@pytest.mark.parametrize("charm", ALL)
def test_the_same_event_twice_changes_nothing(charm: str, tmp_path: pathlib.Path) -> None:
    ctx = charm_context(charm)
    settled = ctx.run(ctx.on.config_changed(), complete_state(charm, tmp_path, execs=EXECS))
    for event in (ctx.on.config_changed(), ctx.on.update_status(), ctx.on.leader_elected()):
        assert_idempotent(ctx, settled, event)


@pytest.mark.parametrize("charm", ALL)
def test_relations_in_any_order_end_the_same(charm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    def new_pod() -> testing.State:
        base = complete_state(charm, tmp_path_factory.mktemp("pod"), execs=EXECS)
        peers = [r for r in base.relations if isinstance(r, testing.PeerRelation)]
        return dataclasses.replace(base, relations=peers)

    fixtures = complete_relations(charm, mandatory_only=True)
    out = assert_order_invariant(charm_context(charm), fixtures, base=new_pod)
    assert out.unit_status.name == "active", out.unit_status


@pytest.mark.parametrize("charm", ALL)
def test_a_non_leader_follows_what_the_leader_did(charm: str, tmp_path: pathlib.Path) -> None:
    ctx = charm_context(charm)
    leader = ctx.run(ctx.on.config_changed(), complete_state(charm, tmp_path, execs=EXECS))
    assert leader.unit_status.name == "active", leader.unit_status
    assert_follower_follows_the_leader(ctx, leader)
