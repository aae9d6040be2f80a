"""The generic checks every charm gets for free, chosen by what each charm declares.

Run over every charm of the collection and the test-only charms in tests/charms:
every charm is blocked naming each missing mandatory relation, survives the same
event twice, ends the same whatever the relation order, and its non-leaders
follow the leader; its config dataclass and its charmcraft.yaml options are the
same set. A k8s charm gets its files, layer and services back in a recreated
pod without repeating leader work, and each container has its own layer and
checks. A charm with leader work runs all of it again after an upgrade. A
machine charm's steady hook touches nothing on the host.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from openstack_charms.charm import OpenStackCharm
from openstack_charms.k8s import K8sCharm
from openstack_charms.machine import MachineCharm
from openstack_charms.sandbox.kubernetes import Kubernetes, real_kubernetes
from openstack_charms.testing import (
    all_charms,
    assert_blocked_without_each_mandatory,
    assert_follower_follows_the_leader,
    assert_idempotent,
    assert_order_invariant,
    charm_context,
    complete_relations,
    complete_state,
    declared_leader_work,
    load_charm_class,
    mandatory_endpoints,
    merged_charmcraft,
    pushed_files,
)
from openstack_charms.testing.host import host_commands
from ops import testing

ALL = all_charms()
EXECS = [testing.Exec([], stdout="")]


@pytest.fixture(autouse=True)
def kubernetes() -> Iterator[None]:
    # the Kubernetes API of the charms that call it (ovn-relay's LoadBalancer service): the
    # sandbox's, keeping services and assigning addresses without forwarding anything
    with real_kubernetes(Kubernetes(lambda: "10.27.5.1", lambda app: [])):
        yield


def _kind(base: type) -> list[str]:
    return [c for c in ALL if issubclass(load_charm_class(c), base)]


K8S = _kind(K8sCharm)
MACHINE = _kind(MachineCharm)
WITH_LEADER_WORK = [c for c in ALL if load_charm_class(c).leader_work is not OpenStackCharm.leader_work]
WITH_MANDATORY = [c for c in ALL if mandatory_endpoints(c)]


def test_every_charm_is_of_one_kind() -> None:
    assert sorted(K8S + MACHINE) == ALL
    assert {"demo-multi-k8s", "demo-host"} <= set(ALL), "the test-only charms prove the shape"


def settle(charm: str, root: pathlib.Path, **kwargs: Any) -> tuple[testing.Context[Any], testing.State]:
    ctx = charm_context(charm, root=root)
    return ctx, ctx.run(ctx.on.config_changed(), complete_state(charm, root, execs=EXECS, **kwargs))


def ran(ctx: testing.Context[Any]) -> list[tuple[str, ...]]:
    """Every command run so far, in a container or on the host."""
    in_containers = [tuple(args.command) for history in ctx.exec_history.values() for args in history]
    return in_containers + host_commands(ctx.host)  # type: ignore[attr-defined]


@pytest.mark.parametrize("charm", ALL)
def test_config_class_and_charmcraft_options_are_the_same_set(charm: str) -> None:
    options = set((merged_charmcraft(charm).get("config") or {}).get("options") or {})
    config_class = load_charm_class(charm).config_class  # type: ignore[attr-defined]
    fields = {f.name.replace("_", "-") for f in dataclasses.fields(config_class)}
    assert fields == options, (
        f"only in the dataclass: {fields - options}; only in the yaml: {options - fields}"
    )


@pytest.mark.parametrize("charm", WITH_MANDATORY)
def test_blocked_naming_each_missing_mandatory_relation(charm: str, tmp_path: pathlib.Path) -> None:
    base = complete_state(charm, tmp_path, execs=EXECS)
    base = dataclasses.replace(
        base, relations=[r for r in base.relations if isinstance(r, testing.PeerRelation)]
    )
    assert_blocked_without_each_mandatory(
        charm_context(charm, root=tmp_path), complete_relations(charm), mandatory_endpoints(charm), base=base
    )


@pytest.mark.parametrize("charm", ALL)
def test_the_same_event_twice_changes_nothing(charm: str, tmp_path: pathlib.Path) -> None:
    ctx, settled = settle(charm, tmp_path)
    assert settled.unit_status.name == "active", settled.unit_status
    for event in (ctx.on.config_changed(), ctx.on.update_status(), ctx.on.leader_elected()):
        assert_idempotent(ctx, settled, event)


@pytest.mark.parametrize("charm", WITH_MANDATORY)
def test_relations_in_any_order_end_the_same(charm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    roots: list[pathlib.Path] = []

    def new_unit() -> testing.State:
        roots.append(tmp_path_factory.mktemp("unit"))
        base = complete_state(charm, roots[-1], execs=EXECS)
        peers = [r for r in base.relations if isinstance(r, testing.PeerRelation)]
        return dataclasses.replace(base, relations=peers)

    fixtures = complete_relations(charm, mandatory_only=True)
    # a machine charm's host is the unit's own: each order starts on a new one
    ctx = charm_context(charm, root=lambda: roots[-1])
    out = assert_order_invariant(ctx, fixtures, base=new_unit)
    assert out.unit_status.name == "active", out.unit_status


@pytest.mark.parametrize("charm", ALL)
def test_a_non_leader_follows_what_the_leader_did(charm: str, tmp_path: pathlib.Path) -> None:
    ctx, leader = settle(charm, tmp_path)
    assert leader.unit_status.name == "active", leader.unit_status
    before = len(ran(ctx))
    assert_follower_follows_the_leader(ctx, leader)
    tasks = {t.command.argv for t in declared_leader_work(ctx, leader)}
    assert not tasks & set(ran(ctx)[before:]), "a non-leader ran leader work"


@pytest.mark.parametrize("charm", K8S)
def test_a_recreated_pod_gets_everything_back_without_repeating_leader_work(
    charm: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ctx, settled = settle(charm, tmp_path_factory.mktemp("pod"))
    before = {c.name: pushed_files(settled, ctx, c.name) for c in settled.containers}
    assert all(before.values()), "nothing was pushed before the pod was recreated"
    tasks = {t.command.argv for t in declared_leader_work(ctx, settled)}
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
    assert not tasks & set(ran(ctx)), "leader work ran again for a new pod"


@pytest.mark.parametrize("charm", K8S)
def test_each_container_has_its_own_layer_and_is_waited_for(charm: str, tmp_path: pathlib.Path) -> None:
    ctx, settled = settle(charm, tmp_path)
    services = [name for c in settled.containers for name in c.plan.services]
    assert len(services) == len(set(services)), f"a service in two containers: {services}"
    for container in settled.containers:
        plan = container.plan
        assert plan.services, f"{container.name} has no services in its layer"
        assert plan.checks, f"{container.name} has no checks in its layer"
        assert all(s.name == "ACTIVE" for s in container.service_statuses.values()), container.name
    for container in settled.containers:
        # a container whose Pebble does not answer (not started yet) is never Active
        down = dataclasses.replace(container, can_connect=False)
        state = dataclasses.replace(
            settled, containers=[down if c.name == container.name else c for c in settled.containers]
        )
        out = ctx.run(ctx.on.config_changed(), state)
        assert out.unit_status.name == "waiting", f"{container.name} down: {out.unit_status}"
        assert container.name in out.unit_status.message


@pytest.mark.parametrize("charm", WITH_LEADER_WORK)
def test_an_upgrade_runs_the_leader_work_again(charm: str, tmp_path: pathlib.Path) -> None:
    ctx, settled = settle(charm, tmp_path)
    tasks = declared_leader_work(ctx, settled)
    assert tasks, "leader work is declared but none for a settled unit"
    ctx.exec_history.clear()
    before = len(ran(ctx))
    out = ctx.run(ctx.on.upgrade_charm(), settled)
    assert out.unit_status.name == "active", out.unit_status
    again = ran(ctx)[before:]
    assert [t.command.argv for t in tasks] == [c for c in again if c in {t.command.argv for t in tasks}]


@pytest.mark.parametrize("charm", MACHINE)
def test_a_machine_charms_steady_hook_touches_nothing(charm: str, tmp_path: pathlib.Path) -> None:
    ctx, settled = settle(charm, tmp_path)
    host = ctx.host  # type: ignore[attr-defined]
    assert host.calls, "the first hook installed and started nothing"
    host.calls.clear()
    out = ctx.run(ctx.on.config_changed(), settled)
    assert out.unit_status.name == "active", out.unit_status
    assert host.calls == [], f"a steady hook touched the host: {host.calls}"


@pytest.mark.parametrize("charm", WITH_MANDATORY)
def test_a_mandatory_relation_not_yet_answered_is_waited_for(charm: str, tmp_path: pathlib.Path) -> None:
    ctx = charm_context(charm, root=tmp_path)
    for fixture in complete_relations(charm, mandatory_only=True):
        relation = fixture.relation
        assert isinstance(relation, testing.Relation)
        # related, but the provider has not answered yet (e.g. ingress before traefik routed it)
        bare = dataclasses.replace(relation, remote_app_data={}, remote_units_data={0: {}})
        state = complete_state(charm, tmp_path, execs=EXECS)
        state = dataclasses.replace(
            state, relations=[bare if r.endpoint == relation.endpoint else r for r in state.relations]
        )
        out = ctx.run(ctx.on.config_changed(), state)
        assert out.unit_status.name == "waiting", f"{relation.endpoint} unanswered: {out.unit_status}"
        assert relation.endpoint in out.unit_status.message, out.unit_status.message


WITH_DATABASE_WORK = [
    c
    for c in WITH_LEADER_WORK
    if any(f.relation.interface == "mysql_client" for f in complete_relations(c, mandatory_only=True))
]


@pytest.mark.parametrize("charm", WITH_DATABASE_WORK)
def test_a_database_password_rotation_repeats_no_leader_work(charm: str, tmp_path: pathlib.Path) -> None:
    ctx, settled = settle(charm, tmp_path)
    ctx.exec_history.clear()
    before = len(ran(ctx))
    database = next(r for r in settled.relations if r.interface == "mysql_client")
    assert isinstance(database, testing.Relation)
    secret_id = database.remote_app_data["secret-user"]
    rotated = [
        dataclasses.replace(s, tracked_content={**s.tracked_content, "password": "rotated-password"})
        if s.id == secret_id
        else s
        for s in settled.secrets
    ]
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(settled, secrets=rotated))
    assert out.unit_status.name == "active", out.unit_status
    assert ran(ctx)[before:] == [], "leader work ran again for a new database password"


def test_a_mandatory_interface_without_a_fixture_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from openstack_charms import testing as octest

    monkeypatch.delitem(octest.FIXTURES, "rabbitmq")
    with pytest.raises(LookupError, match="no fixture for the mandatory endpoint amqp"):
        complete_relations("demo-host")
