"""ovn-relay-k8s: the relay's layer, TLS or TCP, the LoadBalancer service, and ovsdb-cms-relay."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterator
from typing import Any

import ops
import pytest
from openstack_charms.sandbox.kubernetes import Kubernetes, real_kubernetes
from openstack_charms.testing import charm_context, container, pushed_files, state_with
from openstack_charms.testing.relations import (
    OVN_CENTRAL_ADDRESSES,
    ca_fixture,
    certificates_fixture,
    fixture_ca,
    ovsdb_cms_fixture,
)
from ops import testing

CHARM = "ovn-relay-k8s"
APP = "ovn-relay"
MODEL = "openstack"
LB = "10.27.5.1"
SERVICE = f"{MODEL}/{APP}-lb"
TRUST = f"Kubernetes refused the LoadBalancer service: juju trust {APP} --scope=cluster"
WAITING_FOR_ADDRESS = testing.WaitingStatus(
    "waiting for Kubernetes to assign the LoadBalancer service an address"
)
CENTRAL_SSL = ",".join(f"ssl:{a}:6642" for a in OVN_CENTRAL_ADDRESSES)
CENTRAL_TCP = ",".join(f"tcp:{a}:6642" for a in OVN_CENTRAL_ADDRESSES)


@pytest.fixture
def kubernetes() -> Iterator[Kubernetes]:
    """The sandbox's Kubernetes, without HAProxy: it keeps the service and assigns LB."""
    with real_kubernetes(Kubernetes(lambda: LB, lambda app: [])) as fake:
        yield fake


@pytest.fixture
def ctx() -> testing.Context[Any]:
    return charm_context(CHARM, app_name=APP, unit_id=0)


def state(
    *,
    leader: bool = True,
    tls: bool = True,
    central: str | None = None,
    peer_app: dict[str, str] | None = None,
    relay: testing.Relation | None = None,
    extra: tuple[Any, ...] = (),
    unit: int = 0,
    **kwargs: Any,
) -> testing.State:
    """A relay unit with ovn-central related (TLS unless ``central="tcp"``) and certificates."""
    relations: list[testing.RelationBase] = [testing.PeerRelation("peers", local_app_data=peer_app or {})]
    if relay is not None:
        relations.append(relay)
    network = testing.Network(
        "ovsdb-cms-relay",
        [testing.BindAddress([testing.Address("10.1.0.41")])],
        ingress_addresses=["10.1.0.41"],
    )
    base = testing.State(
        leader=leader,
        model=testing.Model(name=MODEL),
        relations=relations,
        containers=[container("ovsdb-server", execs={testing.Exec([], stdout="")})],
        networks={network},
        **kwargs,
    )
    fixtures = [ovsdb_cms_fixture(protocol=central), *extra]
    if tls:
        fixtures.append(certificates_fixture(app=APP, model=MODEL, unit=unit))
    return state_with(fixtures, base=base)


def relay_relation() -> testing.Relation:
    return testing.Relation("ovsdb-cms-relay", interface="ovsdb-cms", remote_app_name="openstack-hypervisor")


def argv(out: testing.State) -> list[str]:
    return shlex.split(out.get_container("ovsdb-server").plan.services["ovsdb-server"].command)


def peer_data(out: testing.State) -> dict[str, str]:
    return dict(out.get_relations("peers")[0].local_app_data)


# -- the relay's layer --------------------------------------------------------------------


def test_with_certificates_the_relay_serves_tls_and_follows_every_central_unit_over_tls(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    assert out.unit_status == testing.ActiveStatus(f"ssl:{LB}:6642")
    assert argv(out) == [
        "ovsdb-server",
        "--remote=punix:/run/ovn/ovnsb_db.sock",
        "--remote=pssl:6642",
        "--pidfile=/run/ovn/ovnsb_db.pid",
        "--unixctl=/run/ovn/ovnsb_db.ctl",
        "--private-key=/etc/ovn/tls/key.pem",
        "--certificate=/etc/ovn/tls/cert.pem",
        "--ca-cert=/etc/ovn/tls/ca.pem",
        "-vconsole:info",
        "-vsyslog:off",
        f"relay:OVN_Southbound:{CENTRAL_SSL}",
    ]
    files = pushed_files(out, ctx, "ovsdb-server")
    assert {"/etc/ovn/tls/key.pem", "/etc/ovn/tls/cert.pem", "/etc/ovn/tls/ca.pem"} <= set(files)
    assert "BEGIN CERTIFICATE" in files["/etc/ovn/tls/cert.pem"]


def test_the_check_asks_the_relay_whether_it_follows_its_source_and_restarts_it(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    plan = ctx.run(ctx.on.config_changed(), state()).get_container("ovsdb-server").plan
    check = plan.checks["ovsdb-relay-connected"]
    assert check.exec == {
        "command": "ovsdb-client --timeout=2 wait unix:/run/ovn/ovnsb_db.sock OVN_Southbound connected"
    }
    assert plan.services["ovsdb-server"].on_check_failure == {"ovsdb-relay-connected": "restart"}


def test_without_certificates_the_relay_speaks_tcp_and_says_so(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    out = ctx.run(ctx.on.config_changed(), state(tls=False, central="tcp"))
    assert out.unit_status == testing.ActiveStatus(f"tcp:{LB}:6642; plain TCP: relate certificates for TLS")
    command = argv(out)
    assert "--remote=ptcp:6642" in command
    assert command[-1] == f"relay:OVN_Southbound:{CENTRAL_TCP}"
    assert not [a for a in command if a.startswith(("--private-key", "--certificate", "--ca-cert"))]
    assert not [p for p in pushed_files(out, ctx, "ovsdb-server") if p.startswith("/etc/ovn/tls/")]


def test_a_tls_central_without_certificates_is_blocked(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    out = ctx.run(ctx.on.config_changed(), state(tls=False))
    assert out.unit_status == testing.BlockedStatus("ovn-central serves TLS: relate certificates")
    assert not out.get_container("ovsdb-server").plan.services


def test_received_cas_are_trusted_beside_the_units_own(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    out = ctx.run(ctx.on.config_changed(), state(extra=(ca_fixture(),)))
    assert "--ca-cert=/etc/ovn/tls/trusted-cas.pem" in argv(out)
    trusted = pushed_files(out, ctx, "ovsdb-server")["/etc/ovn/tls/trusted-cas.pem"]
    _, ca = fixture_ca()
    assert str(ca).strip() in trusted
    assert trusted.count("BEGIN CERTIFICATE") == 2


def test_debug_logs_the_relay_at_debug_level(ctx: testing.Context[Any], kubernetes: Kubernetes) -> None:
    assert "-vconsole:dbg" in argv(ctx.run(ctx.on.config_changed(), state(config={"debug": True})))


# -- ovn-central ---------------------------------------------------------------------------


def test_without_ovsdb_cms_it_is_blocked_naming_it(ctx: testing.Context[Any], kubernetes: Kubernetes) -> None:
    base = state()
    base = dataclasses.replace(base, relations=[r for r in base.relations if r.endpoint != "ovsdb-cms"])
    out = ctx.run(ctx.on.config_changed(), base)
    assert out.unit_status == testing.BlockedStatus("missing relation: ovsdb-cms")
    assert kubernetes.calls == []


def test_ovn_central_not_yet_answering_is_waited_for_by_name(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    bare = testing.Relation("ovsdb-cms", interface="ovsdb-cms", remote_app_name="ovn-central")
    base = state()
    base = dataclasses.replace(
        base, relations=[bare if r.endpoint == "ovsdb-cms" else r for r in base.relations]
    )
    out = ctx.run(ctx.on.config_changed(), base)
    assert out.unit_status == testing.WaitingStatus(
        "waiting for ovsdb-cms (bound-address from a unit of ovn-central)"
    )
    # the relay asks ovn-central for nothing beyond the format's one key
    assert out.get_relation(bare.id).local_app_data == {"external-connectivity": "false"}


@pytest.mark.parametrize(
    ("units", "app"),
    [
        ({0: {"bound-address": "not an address"}}, {}),
        ({0: {"bound-address": "10.1.0.31", "protocol": "udp"}}, {}),
        ({0: {"bound-address": "10.1.0.31"}}, {"loadbalancer-address": "x; rm -rf /"}),
        ({0: {"bound-address": "10.1.0.31\n--remote=ptcp:1"}}, {"proxy-relation": "maybe"}),
        ({0: {}}, {"proxy-relation": "true", "db_sb_connection_strs": ""}),
    ],
)
def test_bad_ovn_central_data_is_waited_for_never_a_crash(
    ctx: testing.Context[Any], kubernetes: Kubernetes, units: dict[int, dict[str, str]], app: dict[str, str]
) -> None:
    bad = testing.Relation(
        "ovsdb-cms",
        interface="ovsdb-cms",
        remote_app_name="ovn-central",
        remote_units_data=units,
        remote_app_data=app,
    )
    base = state()
    base = dataclasses.replace(
        base, relations=[bad if r.endpoint == "ovsdb-cms" else r for r in base.relations]
    )
    out = ctx.run(ctx.on.relation_changed(bad, remote_unit=0), base)
    assert out.unit_status.name == "waiting", out.unit_status
    assert "ovsdb-cms" in out.unit_status.message
    assert not out.get_container("ovsdb-server").plan.services


# -- the LoadBalancer service ------------------------------------------------------------------


def test_the_leader_applies_the_service_and_records_its_address(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    assert kubernetes.calls == [("apply", SERVICE)]
    service = kubernetes.services[(MODEL, f"{APP}-lb")]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": APP}
    assert service["spec"]["ports"] == [
        {"name": "southbound", "port": 6642, "targetPort": 6642, "protocol": "TCP"}
    ]
    assert peer_data(out)["loadbalancer-address"] == LB


def test_a_steady_hook_asks_kubernetes_nothing(ctx: testing.Context[Any], kubernetes: Kubernetes) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    kubernetes.calls.clear()
    for event in (ctx.on.config_changed(), ctx.on.update_status(), ctx.on.leader_elected()):
        again = ctx.run(event, out)
        assert again.unit_status == out.unit_status
    assert kubernetes.calls == []


def test_while_no_address_is_assigned_the_unit_waits_and_update_status_asks_again(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    kubernetes.assign = False
    out = ctx.run(ctx.on.config_changed(), state(relay=relay_relation()))
    assert out.unit_status == WAITING_FOR_ADDRESS
    assert "loadbalancer-address" not in peer_data(out)
    assert "bound-address" not in out.get_relations("ovsdb-cms-relay")[0].local_unit_data
    # the service is applied once; later hooks only read it
    out = ctx.run(ctx.on.update_status(), out)
    assert out.unit_status == WAITING_FOR_ADDRESS
    assert kubernetes.calls == [("apply", SERVICE), ("get", SERVICE)]
    # Kubernetes assigns one
    service = kubernetes.services[(MODEL, f"{APP}-lb")]
    service["status"] = {"loadBalancer": {"ingress": [{"ip": "10.27.5.9"}]}}
    out = ctx.run(ctx.on.update_status(), out)
    assert out.unit_status == testing.ActiveStatus("ssl:10.27.5.9:6642")
    assert out.get_relations("ovsdb-cms-relay")[0].local_app_data["loadbalancer-address"] == "10.27.5.9"
    assert kubernetes.calls[-1] == ("get", SERVICE)


def test_without_trust_the_unit_is_blocked_naming_juju_trust_then_recovers(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    kubernetes.trusted = False
    out = ctx.run(ctx.on.config_changed(), state(relay=relay_relation()))
    assert out.unit_status == testing.BlockedStatus(TRUST)
    assert "loadbalancer-applied" not in peer_data(out)
    assert not out.get_relations("ovsdb-cms-relay")[0].local_unit_data.get("bound-address")
    # after `juju trust`, the next update-status creates it
    kubernetes.trusted = True
    out = ctx.run(ctx.on.update_status(), out)
    assert out.unit_status == testing.ActiveStatus(f"ssl:{LB}:6642")


def test_a_kubernetes_failure_other_than_refusal_is_waited_for(
    ctx: testing.Context[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from openstack_charms import loadbalancer
    from openstack_charms.loadbalancer import KubernetesError

    def unreachable(field_manager: str) -> Any:
        raise KubernetesError("apply service ovn-relay-lb: connection refused")

    monkeypatch.setattr(loadbalancer, "client", unreachable)
    out = ctx.run(ctx.on.config_changed(), state())
    assert out.unit_status == testing.WaitingStatus(
        "retrying the LoadBalancer service: apply service ovn-relay-lb: connection refused"
    )


def test_a_host_name_instead_of_an_ip_is_blocked_naming_it(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    peers = out.get_relations("peers")[0]
    applied = peer_data(out)["loadbalancer-applied"]
    named = dataclasses.replace(
        peers, local_app_data={"loadbalancer-applied": applied, "loadbalancer-address": "lb.example.com"}
    )
    others = [r for r in out.relations if r.endpoint != "peers"]
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(out, relations=[named, *others]))
    assert out.unit_status == testing.BlockedStatus(
        "the LoadBalancer service got host name lb.example.com; chassis need an IP address"
    )


def test_an_upgrade_applies_the_service_again(ctx: testing.Context[Any], kubernetes: Kubernetes) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    kubernetes.calls.clear()
    out = ctx.run(ctx.on.upgrade_charm(), out)
    assert kubernetes.calls == [("apply", SERVICE)]
    assert out.unit_status.name == "active"


def test_a_non_leader_uses_the_leaders_record_and_asks_kubernetes_nothing(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    leader = ctx.run(ctx.on.config_changed(), state())
    kubernetes.calls.clear()
    follower_ctx = charm_context(CHARM, app_name=APP, unit_id=1)
    relay = relay_relation()
    follower = follower_ctx.run(
        follower_ctx.on.config_changed(),
        state(leader=False, peer_app=peer_data(leader), relay=relay, unit=1),
    )
    assert follower.unit_status == testing.ActiveStatus(f"ssl:{LB}:6642")
    assert kubernetes.calls == []
    published = follower.get_relation(relay.id)
    assert published.local_unit_data["bound-address"] == "10.1.0.41"
    assert published.local_app_data == {}, "only the leader writes the app databag"


def test_a_non_leader_waits_for_the_leader_to_create_the_service(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    out = ctx.run(ctx.on.config_changed(), state(leader=False))
    assert out.unit_status == testing.WaitingStatus(
        "waiting for the leader to create the LoadBalancer service"
    )
    assert kubernetes.calls == []


def test_the_last_leader_removed_deletes_the_service(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    kubernetes.calls.clear()
    ctx.run(ctx.on.remove(), dataclasses.replace(out, planned_units=0))
    assert kubernetes.calls == [("delete", SERVICE)]
    assert kubernetes.services == {}


def test_a_unit_leaving_an_application_that_stays_keeps_the_service(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    kubernetes.calls.clear()
    ctx.run(ctx.on.remove(), dataclasses.replace(out, planned_units=2))
    ctx.run(ctx.on.remove(), dataclasses.replace(out, leader=False, planned_units=0))
    assert kubernetes.calls == []


def test_deleting_is_best_effort(ctx: testing.Context[Any], kubernetes: Kubernetes) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    kubernetes.trusted = False
    ctx.run(ctx.on.remove(), dataclasses.replace(out, planned_units=0))
    kubernetes.trusted = True
    kubernetes.services.clear()
    # already gone: no error either
    ctx.run(ctx.on.remove(), dataclasses.replace(out, planned_units=0))


# -- ovsdb-cms-relay -----------------------------------------------------------------------------


def test_ovsdb_cms_relay_gets_every_units_location_and_the_load_balancer(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    relay = relay_relation()
    out = ctx.run(ctx.on.relation_joined(relay, remote_unit=0), state(relay=relay))
    published = out.get_relation(relay.id)
    juju = {"egress-subnets", "ingress-address", "private-address"}
    assert {k: v for k, v in published.local_unit_data.items() if k not in juju} == {
        "bound-hostname": f"{APP}-0.{APP}-endpoints.{MODEL}.svc.cluster.local",
        "bound-address": "10.1.0.41",
        "ingress-bound-address": "10.1.0.41",
    }
    assert dict(published.local_app_data) == {"loadbalancer-address": LB}


def test_ovsdb_cms_relay_says_tcp_without_certificates(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    relay = relay_relation()
    out = ctx.run(ctx.on.relation_joined(relay, remote_unit=0), state(tls=False, central="tcp", relay=relay))
    assert out.get_relation(relay.id).local_unit_data["protocol"] == "tcp"


def test_what_the_relay_publishes_gives_a_chassis_the_load_balancers_connection_string(
    ctx: testing.Context[Any], kubernetes: Kubernetes
) -> None:
    """The relay's databags, read by the requirer library a machine charm (external) uses."""
    relay = relay_relation()
    out = ctx.run(ctx.on.relation_joined(relay, remote_unit=0), state(relay=relay))
    published = out.get_relation(relay.id)
    seen = ovsdb_cms_fixture(remote_app=APP, addresses=[]).relation
    assert isinstance(seen, testing.Relation)
    seen = dataclasses.replace(
        seen,
        remote_app_data=dict(published.local_app_data),
        remote_units_data={0: dict(published.local_unit_data)},
    )
    from openstack_charms.relations.ovsdb import OVSDBCMSRequirer

    class Chassis(ops.CharmBase):
        def __init__(self, framework: ops.Framework) -> None:
            super().__init__(framework)
            self.is_leader = True
            self.hook = ""
            self.requirer = OVSDBCMSRequirer(self, "ovsdb-cms", external=True)  # type: ignore[arg-type]
            framework.observe(self.on.update_status, self._on)

        def _on(self, _: ops.EventBase) -> None:
            context = self.requirer.context
            assert context is not None
            self.unit.status = ops.ActiveStatus(context.external_sb_connection)

    meta = {"name": "chassis", "requires": {"ovsdb-cms": {"interface": "ovsdb-cms"}}}
    chassis = testing.Context(Chassis, meta=meta)
    result = chassis.run(chassis.on.update_status(), testing.State(relations=[seen]))
    assert result.unit_status == testing.ActiveStatus(f"ssl:{LB}:6642")
