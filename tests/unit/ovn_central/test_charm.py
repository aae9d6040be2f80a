"""ovn-central-k8s: the raft clusters' founding and membership, the servers' layers, ovsdb-cms."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex
from collections.abc import Sequence
from typing import Any

import ops
import pytest
from openstack_charms.testing import charm_context, container, pushed_files, state_with
from openstack_charms.testing.relations import certificates_fixture
from ops import testing

CHARM = "ovn-central-k8s"
MODEL = "openstack"
CONTAINERS = ("ovn-nb-db-server", "ovn-sb-db-server", "ovn-northd")
NB_SCRIPT = "/etc/ovn/ovn-nb-db-server.sh"


def pod(n: int) -> str:
    return f"ovn-central-{n}.ovn-central-endpoints.{MODEL}.svc.cluster.local"


@pytest.fixture
def ctx() -> testing.Context[Any]:
    return charm_context(CHARM, app_name="ovn-central", unit_id=0)


def state(
    root: pathlib.Path | None = None,
    *,
    leader: bool = True,
    peers: dict[int, dict[str, str]] | None = None,
    peer_app: dict[str, str] | None = None,
    tls: bool = True,
    unit: int = 0,
    **kwargs: Any,
) -> testing.State:
    storages = {"databases": "/var/lib/ovn"}
    base = testing.State(
        leader=leader,
        model=testing.Model(name=MODEL),
        relations=[
            testing.PeerRelation(
                "peers", local_app_data=peer_app or {}, peers_data=peers if peers is not None else {}
            )
        ],
        containers=[
            container(c, root, storages if c != "ovn-northd" else None, execs={testing.Exec([], stdout="")})
            for c in CONTAINERS
        ],
        storages=[testing.Storage("databases")],
        **kwargs,
    )
    fixtures = [certificates_fixture(app="ovn-central", model=MODEL, unit=unit)] if tls else []
    return state_with(fixtures, base=base)


def layer_argv(out: testing.State, name: str) -> list[str]:
    return shlex.split(out.get_container(name).plan.services[name].command)


def executed(ctx: testing.Context[Any], name: str) -> list[list[str]]:
    return [list(e.command) for e in ctx.exec_history.get(name, [])]


# -- one unit: the founder --------------------------------------------------------------


def test_the_leader_founds_both_clusters_over_tls_before_serving(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    assert out.unit_status == testing.ActiveStatus()
    peer = out.get_relations("peers")[0].local_app_data
    assert peer["founder"] == "ovn-central/0" and peer["raft-protocol"] == "ssl"
    assert executed(ctx, "ovn-nb-db-server") == [[NB_SCRIPT, "create", f"ssl:{pod(0)}:6643"]]
    assert executed(ctx, "ovn-sb-db-server") == [
        ["/etc/ovn/ovn-sb-db-server.sh", "create", f"ssl:{pod(0)}:6644"]
    ]
    nb = layer_argv(out, "ovn-nb-db-server")
    assert nb == [
        NB_SCRIPT,
        "run",
        f"ssl:{pod(0)}:6643",
        "--remote=punix:/run/ovn/ovnnb_db.sock",
        "--remote=pssl:6641",
        "--pidfile=/run/ovn/ovnnb_db.pid",
        "--unixctl=/run/ovn/ovnnb_db.ctl",
        "--private-key=/etc/ovn/tls/key.pem",
        "--certificate=/etc/ovn/tls/cert.pem",
        "--ca-cert=/etc/ovn/tls/ca.pem",
        "-vconsole:info",
        "-vsyslog:off",
    ]
    assert "--remote=pssl:6642" in layer_argv(out, "ovn-sb-db-server")
    northd = layer_argv(out, "ovn-northd")
    assert f"--ovnnb-db=ssl:{pod(0)}:6641" in northd and f"--ovnsb-db=ssl:{pod(0)}:6642" in northd
    assert "--private-key=/etc/ovn/tls/key.pem" in northd


def test_each_container_gets_its_certificate_and_a_check_that_asks_the_server(
    ctx: testing.Context[Any],
) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    for name in CONTAINERS:
        files = pushed_files(out, ctx, name)
        assert {"/etc/ovn/tls/key.pem", "/etc/ovn/tls/cert.pem", "/etc/ovn/tls/ca.pem"} <= set(files), name
    nb = out.get_container("ovn-nb-db-server").plan
    assert nb.checks["ovn-nb-db-server-connected"].exec == {"command": f"{NB_SCRIPT} check"}
    # a server cut off from the majority is not helped by restarting it
    assert not nb.services["ovn-nb-db-server"].on_check_failure
    northd = out.get_container("ovn-northd").plan
    assert northd.checks["ovn-northd-up"].exec == {"command": "ovn-appctl -t /run/ovn/ovn-northd.ctl status"}
    assert northd.services["ovn-northd"].on_check_failure == {"ovn-northd-up": "restart"}


def test_the_script_founds_joins_and_checks(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(peers={1: {}, 2: {}}))
    script = pushed_files(out, ctx, "ovn-nb-db-server")[NB_SCRIPT]
    assert (
        '[ -e "$db" ] || ovsdb-tool create-cluster "$db" /usr/share/ovn/ovn-nb.ovsschema "$local"' in script
    )
    members = f"for member in ssl:{pod(0)}:6643 ssl:{pod(1)}:6643 ssl:{pod(2)}:6643; do"
    assert members in script
    assert 'ovsdb-tool join-cluster "$db" OVN_Northbound "$local" $remotes' in script
    assert 'exec ovsdb-server "$@" "$db"' in script
    assert '"connected":true' in script
    assert (
        out.get_container("ovn-nb-db-server").get_filesystem(ctx).joinpath(NB_SCRIPT[1:]).stat().st_mode
        & 0o777
        == 0o755
    )


def test_without_certificates_the_servers_speak_tcp_and_say_so(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(tls=False))
    assert out.unit_status == testing.ActiveStatus("plain TCP: relate certificates for TLS")
    assert out.get_relations("peers")[0].local_app_data["raft-protocol"] == "tcp"
    nb = layer_argv(out, "ovn-nb-db-server")
    assert nb[2] == f"tcp:{pod(0)}:6643" and "--remote=ptcp:6641" in nb
    assert not [a for a in nb if a.startswith("--private-key")]
    assert f"--ovnnb-db=tcp:{pod(0)}:6641" in layer_argv(out, "ovn-northd")


def test_certificates_arriving_later_keep_the_raft_protocol_and_say_so(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(tls=False))
    later = state_with(
        [certificates_fixture(app="ovn-central", model=MODEL)],
        base=dataclasses.replace(out, relations=out.relations),
    )
    out = ctx.run(ctx.on.config_changed(), later)
    assert out.unit_status == testing.ActiveStatus(
        "raft between units is plain TCP (clusters founded before certificates)"
    )
    nb = layer_argv(out, "ovn-nb-db-server")
    assert nb[2] == f"tcp:{pod(0)}:6643" and "--remote=pssl:6641" in nb


def test_a_tls_cluster_without_certificates_is_blocked(ctx: testing.Context[Any]) -> None:
    peer_app = {"founder": "ovn-central/0", "raft-protocol": "ssl"}
    out = ctx.run(ctx.on.config_changed(), state(tls=False, peer_app=peer_app))
    assert out.unit_status == testing.BlockedStatus("the OVN clusters run over TLS: relate certificates")


def test_debug_logs_the_servers_at_debug_level(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(config={"debug": True}))
    assert "-vconsole:dbg" in layer_argv(out, "ovn-nb-db-server")


# -- more units -------------------------------------------------------------------------


def test_a_non_leader_waits_for_the_founder_then_joins_without_creating(tmp_path: pathlib.Path) -> None:
    ctx = charm_context(CHARM, app_name="ovn-central", unit_id=1)
    early = ctx.run(ctx.on.config_changed(), state(leader=False, peers={0: {}}, unit=1))
    assert early.unit_status == testing.WaitingStatus("waiting for the leader to found the OVN clusters")
    assert not early.get_container("ovn-nb-db-server").plan.services
    peer_app = {"founder": "ovn-central/0", "raft-protocol": "ssl"}
    out = ctx.run(
        ctx.on.config_changed(), state(leader=False, peers={0: {}, 2: {}}, peer_app=peer_app, unit=1)
    )
    assert out.unit_status == testing.ActiveStatus()
    assert executed(ctx, "ovn-nb-db-server") == [], "a joining unit created a cluster"
    assert layer_argv(out, "ovn-nb-db-server")[2] == f"ssl:{pod(1)}:6643"
    northd = layer_argv(out, "ovn-northd")
    nb = ",".join(f"ssl:{pod(n)}:6641" for n in range(3))
    assert f"--ovnnb-db={nb}" in northd


def test_a_founder_gone_from_the_peers_is_waited_for(tmp_path: pathlib.Path) -> None:
    ctx = charm_context(CHARM, app_name="ovn-central", unit_id=1)
    peer_app = {"founder": "ovn-central/0", "raft-protocol": "ssl"}
    out = ctx.run(ctx.on.config_changed(), state(leader=False, peers={}, peer_app=peer_app, unit=1))
    assert out.unit_status == testing.WaitingStatus(
        "waiting for ovn-central/0, which founded the OVN clusters, to join the peer relation"
    )


def listing(units: Sequence[int]) -> set[testing.Exec]:
    """Each server's ``cluster/status`` listing ``units`` as members."""
    execs = {testing.Exec([], stdout="")}
    for name, port in (("ovnnb_db", 6643), ("ovnsb_db", 6644)):
        servers = "".join(f"    {n:04x} ({n:04x} at ssl:{pod(n)}:{port})\n" for n in units)
        execs.add(
            testing.Exec(["ovs-appctl", "-t", f"/run/ovn/{name}.ctl", "cluster/status"], stdout=servers)
        )
    return execs


def with_members(base: testing.State, units: Sequence[int]) -> testing.State:
    return dataclasses.replace(
        base, containers=[dataclasses.replace(c, execs=listing(units)) for c in base.containers]
    )


def test_the_leader_kicks_units_that_left_and_records_members(ctx: testing.Context[Any]) -> None:
    peer_app = {"members": json.dumps(["ovn-central/0", "ovn-central/1", "ovn-central/2"])}
    out = ctx.run(ctx.on.config_changed(), with_members(state(peers={1: {}}, peer_app=peer_app), [0, 1, 2]))
    assert out.unit_status == testing.ActiveStatus()
    kicks = [c for c in executed(ctx, "ovn-nb-db-server") if "cluster/kick" in c]
    assert kicks == [
        ["ovs-appctl", "-t", "/run/ovn/ovnnb_db.ctl", "cluster/kick", "OVN_Northbound", f"ssl:{pod(2)}:6643"]
    ]
    kicks = [c for c in executed(ctx, "ovn-sb-db-server") if "cluster/kick" in c]
    assert kicks == [
        ["ovs-appctl", "-t", "/run/ovn/ovnsb_db.ctl", "cluster/kick", "OVN_Southbound", f"ssl:{pod(2)}:6644"]
    ]
    members = json.loads(out.get_relations("peers")[0].local_app_data["members"])
    assert members == ["ovn-central/0", "ovn-central/1"]
    ctx.exec_history.clear()
    again = ctx.run(ctx.on.update_status(), out)
    assert not [c for h in ctx.exec_history.values() for c in h if "cluster/kick" in c.command]
    assert again.unit_status == testing.ActiveStatus()


def test_the_leader_does_not_kick_a_unit_that_already_left(ctx: testing.Context[Any]) -> None:
    # kicking a server no longer a member made the leader's own server leave the cluster (OVS 3.1)
    peer_app = {"members": json.dumps(["ovn-central/0", "ovn-central/1"])}
    out = ctx.run(ctx.on.config_changed(), with_members(state(peers={}, peer_app=peer_app), [0]))
    assert out.unit_status == testing.ActiveStatus()
    assert not [c for h in ctx.exec_history.values() for c in h if "cluster/kick" in c.command]
    assert json.loads(out.get_relations("peers")[0].local_app_data["members"]) == ["ovn-central/0"]


def test_a_unit_being_removed_leaves_both_clusters(tmp_path: pathlib.Path) -> None:
    ctx = charm_context(CHARM, app_name="ovn-central", unit_id=2)
    peer_app = {"founder": "ovn-central/0", "raft-protocol": "ssl"}
    before = state(leader=False, peers={0: {}, 1: {}}, peer_app=peer_app, unit=2)
    relation = before.get_relations("peers")[0]
    ctx.run(ctx.on.relation_departed(relation, remote_unit=0, departing_unit=2), before)
    assert ["ovs-appctl", "-t", "/run/ovn/ovnnb_db.ctl", "cluster/leave", "OVN_Northbound"] in executed(
        ctx, "ovn-nb-db-server"
    )
    assert ["ovs-appctl", "-t", "/run/ovn/ovnsb_db.ctl", "cluster/leave", "OVN_Southbound"] in executed(
        ctx, "ovn-sb-db-server"
    )


def test_another_unit_departing_makes_this_one_leave_nothing(tmp_path: pathlib.Path) -> None:
    ctx = charm_context(CHARM, app_name="ovn-central", unit_id=1)
    peer_app = {"founder": "ovn-central/0", "raft-protocol": "ssl"}
    before = state(leader=False, peers={0: {}, 2: {}}, peer_app=peer_app, unit=1)
    relation = before.get_relations("peers")[0]
    ctx.run(ctx.on.relation_departed(relation, remote_unit=2, departing_unit=2), before)
    assert not [c for c in executed(ctx, "ovn-nb-db-server") if "cluster/leave" in c]


# -- what others and operators see ---------------------------------------------------------


def test_ovsdb_cms_gets_this_units_address_once_it_serves(ctx: testing.Context[Any]) -> None:
    relation = testing.Relation("ovsdb-cms", interface="ovsdb-cms", remote_app_name="neutron")
    network = testing.Network(
        "ovsdb-cms",
        [testing.BindAddress([testing.Address("10.1.0.31")])],
        ingress_addresses=["10.1.0.31"],
    )
    base = state(networks={network})
    out = ctx.run(
        ctx.on.relation_joined(relation, remote_unit=0),
        dataclasses.replace(base, relations=[*base.relations, relation]),
    )
    data = out.get_relation(relation.id).local_unit_data
    assert data["bound-hostname"] == pod(0)
    assert data["bound-address"] == "10.1.0.31"
    assert data["ingress-bound-address"] == "10.1.0.31"
    assert "protocol" not in data, "TLS is the format's default: nothing to add"
    assert not out.get_relation(relation.id).local_app_data.get("loadbalancer-address")


def test_ovsdb_cms_says_tcp_when_the_unit_has_no_certificate(ctx: testing.Context[Any]) -> None:
    relation = testing.Relation("ovsdb-cms", interface="ovsdb-cms", remote_app_name="neutron")
    base = state(tls=False)
    out = ctx.run(
        ctx.on.relation_joined(relation, remote_unit=0),
        dataclasses.replace(base, relations=[*base.relations, relation]),
    )
    assert out.get_relation(relation.id).local_unit_data["protocol"] == "tcp"


def test_nothing_is_published_while_the_unit_waits(tmp_path: pathlib.Path) -> None:
    ctx = charm_context(CHARM, app_name="ovn-central", unit_id=1)
    relation = testing.Relation("ovsdb-cms", interface="ovsdb-cms", remote_app_name="neutron")
    base = state(leader=False, peers={0: {}}, unit=1)
    out = ctx.run(
        ctx.on.relation_joined(relation, remote_unit=0),
        dataclasses.replace(base, relations=[*base.relations, relation]),
    )
    assert out.unit_status.name == "waiting"
    assert "bound-address" not in out.get_relation(relation.id).local_unit_data


CLUSTER_STATUS = """\
3c1f
Name: OVN_Northbound
Cluster ID: 6a1b (6a1bd4c6-8d53-4c0c-9a43-3a9c1d9a2b10)
Server ID: 3c1f (3c1fd0aa-5d5f-4a35-9d3c-0ee3a4b5c6d7)
Address: ssl:ovn-central-0.ovn-central-endpoints.openstack.svc.cluster.local:6643
Status: cluster member
Role: leader
Term: 4
Leader: self
Vote: self

Servers:
    3c1f (3c1f at ssl:ovn-central-0.ovn-central-endpoints.openstack.svc.cluster.local:6643) (self)
    8e21 (8e21 at ssl:ovn-central-1.ovn-central-endpoints.openstack.svc.cluster.local:6643)
"""


def test_cluster_status_action_reports_role_leader_and_members(ctx: testing.Context[Any]) -> None:
    execs = {testing.Exec(["ovs-appctl"], stdout=CLUSTER_STATUS)}
    base = state()
    base = dataclasses.replace(
        base, containers=[dataclasses.replace(c, execs=execs) for c in base.containers]
    )
    ctx.run(ctx.on.action("cluster-status"), base)
    nb = ctx.action_results["ovn-nb-db-server"]  # type: ignore[index]
    assert nb["status"] == "cluster member" and nb["role"] == "leader" and nb["leader"] == "self"
    assert nb["term"] == "4"
    assert nb["servers"].splitlines()[1].startswith("8e21 (8e21 at ssl:ovn-central-1.")


def test_cluster_status_fails_naming_a_server_that_does_not_answer(ctx: testing.Context[Any]) -> None:
    execs = {testing.Exec(["ovs-appctl"], return_code=1, stderr="no such file")}
    base = state()
    base = dataclasses.replace(
        base, containers=[dataclasses.replace(c, execs=execs) for c in base.containers]
    )
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("cluster-status"), base)
    assert failed.value.message == "ovn-nb-db-server does not answer"
    assert isinstance(failed.value.state.unit_status, ops.StatusBase)
