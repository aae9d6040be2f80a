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
    load_charm_class,
    mandatory_endpoints,
    pushed_files,
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


def _db_sync(charm: str) -> list[str]:
    return list(load_charm_class(charm).db_sync)  # type: ignore[attr-defined]


@pytest.mark.parametrize("charm", ALL)
def test_a_recreated_pod_gets_everything_back_without_a_new_db_sync(
    charm: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ctx = charm_context(charm)
    settled = ctx.run(
        ctx.on.config_changed(), complete_state(charm, tmp_path_factory.mktemp("pod"), execs=EXECS)
    )
    before = {c.name: pushed_files(settled, ctx, c.name) for c in settled.containers}
    assert all(before.values()), "nothing was pushed before the pod was recreated"
    ctx.exec_history.clear()
    # a new pod: empty container filesystems, no Pebble layers; Juju keeps relations, secrets and peer data
    new_pod = complete_state(charm, tmp_path_factory.mktemp("new-pod"), execs=EXECS)
    state = dataclasses.replace(settled, containers=new_pod.containers)
    out = ctx.run(ctx.on.pebble_ready(next(iter(new_pod.containers))), state)
    assert out.unit_status.name == "active", out.unit_status
    for container in out.containers:
        after = pushed_files(out, ctx, container.name)
        assert {p: v for p, v in after.items() if not p.startswith("/run/")} == {
            p: v for p, v in before[container.name].items() if not p.startswith("/run/")
        }
        assert container.layers and all(s.name == "ACTIVE" for s in container.service_statuses.values())
    ran = [args.command for history in ctx.exec_history.values() for args in history]
    assert _db_sync(charm) not in ran, "the database was synced again for a new pod"


@pytest.mark.parametrize("charm", ALL)
def test_an_upgrade_syncs_the_database_again_on_the_leader(charm: str, tmp_path: pathlib.Path) -> None:
    ctx = charm_context(charm)
    settled = ctx.run(ctx.on.config_changed(), complete_state(charm, tmp_path, execs=EXECS))
    ctx.exec_history.clear()
    out = ctx.run(ctx.on.upgrade_charm(), settled)
    assert out.unit_status.name == "active", out.unit_status
    ran = [args.command for history in ctx.exec_history.values() for args in history]
    assert _db_sync(charm) in ran, f"no db sync after the upgrade: {ran}"
