"""ovn-chassis: given a machine and its relations, after an event, what is installed, written and set."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import pytest
from openstack_charms.host import Completed
from openstack_charms.testing import RelationFixture, assert_idempotent, charm_context, state_with
from openstack_charms.testing.host import FakeHost, host_commands
from openstack_charms.testing.relations import ca_fixture, certificates_fixture, ovsdb_cms_fixture
from ops import testing

CHARM = "ovn-chassis"
HOSTNAME = "compute-1"
LB = "10.27.5.1"
OVN_HOST = "/etc/default/ovn-host"
PINS = {"openvswitch-switch": "3.3.9-0ubuntu0.24.04.1", "ovn-host": "24.03.6-0ubuntu0.24.04.1"}
TLS_DIR = "/etc/ovn/tls"
VSCTL = ("ovs-vsctl", "--no-wait", "--timeout=30")
BR_INT = (
    "--",
    "--may-exist",
    "add-br",
    "br-int",
    "--",
    "set",
    "Bridge",
    "br-int",
    "datapath_type=system",
    "fail_mode=secure",
    "other_config:disable-in-band=true",
)
#: the database on localhost TCP, for the machine's services that are not root (nova-compute's os-vif)
MANAGER = ("--", "set-manager", "ptcp:6640:127.0.0.1")


@pytest.fixture(autouse=True)
def machine_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # what nova-compute would call this machine, and the name its certificate is asked for
    monkeypatch.setattr("socket.gethostname", lambda: HOSTNAME)
    monkeypatch.setattr("socket.getfqdn", lambda *_: f"{HOSTNAME}.maas")


@pytest.fixture
def ctx(tmp_path: pathlib.Path) -> testing.Context[Any]:
    return charm_context(CHARM, root=tmp_path)


def host_of(ctx: testing.Context[Any]) -> FakeHost:
    return ctx.host  # type: ignore[attr-defined]


def with_interfaces(ctx: testing.Context[Any], *names: str) -> None:
    """The machine's network interfaces, as /sys/class/net lists them."""
    for name in names:
        host_of(ctx).path(f"/sys/class/net/{name}").mkdir(parents=True)


def relay(protocol: str | None = "tcp", loadbalancer: str | None = LB) -> RelationFixture:
    """ovsdb-cms as ovn-relay leaves it (protocol None: TLS, as sunbeam's always serves)."""
    return ovsdb_cms_fixture(remote_app="ovn-relay", loadbalancer=loadbalancer, protocol=protocol)


def state(
    *fixtures: RelationFixture, config: dict[str, Any] | None = None, leader: bool = True, **kwargs: Any
) -> testing.State:
    return state_with(
        fixtures or (relay(),), base=testing.State(leader=leader, config=config or {}), **kwargs
    )


def provider_bridge(name: str, datapath: str = "system") -> tuple[str, ...]:
    return ("--", "--may-exist", "add-br", name, "--", "set", "Bridge", name, f"datapath_type={datapath}")


def external_ids(**ids: str) -> tuple[str, ...]:
    return tuple(f'external_ids:{key.replace("_", "-")}="{value}"' for key, value in ids.items())


def default_ids(**changes: str) -> tuple[str, ...]:
    ids = {
        "system_id": HOSTNAME,
        "hostname": HOSTNAME,
        "ovn_remote": f"tcp:{LB}:6642",
        "ovn_encap_type": "geneve",
        "ovn_encap_ip": "192.0.2.0",
        "ovn_bridge_datapath_type": "system",
        **changes,
    }
    return external_ids(**ids)


# -- what is missing -------------------------------------------------------------------


def test_blocked_without_ovsdb_cms(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.install(), testing.State(leader=True))
    assert out.unit_status == testing.BlockedStatus("missing relation: ovsdb-cms")
    assert host_of(ctx).calls == []


def test_waits_for_the_load_balancer_of_the_relay(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(relay(loadbalancer=None)))
    assert out.unit_status == testing.WaitingStatus(
        "waiting for ovsdb-cms (loadbalancer-address from ovn-relay)"
    )
    # a machine outside the cluster says so; the unit addresses of the relay are not for it
    assert out.get_relations("ovsdb-cms")[0].local_app_data == {"external-connectivity": "true"}
    assert host_of(ctx).calls == []


def test_a_southbound_over_tls_blocks_until_certificates_are_related(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(relay(protocol=None)))
    assert out.unit_status == testing.BlockedStatus(
        "the OVN southbound database serves TLS: relate certificates"
    )
    assert host_of(ctx).installed == {}


def test_missing_interfaces_block_naming_them(ctx: testing.Context[Any]) -> None:
    with_interfaces(ctx, "eth2")
    config = {"bridge-interface-mappings": "br-ex:eth1 br-data:eth2 br-data:eth3"}
    out = ctx.run(ctx.on.config_changed(), state(config=config))
    assert out.unit_status == testing.BlockedStatus(
        "config option 'bridge-interface-mappings' names interfaces this machine lacks: eth1, eth3"
    )
    assert host_of(ctx).calls == []
    with_interfaces(ctx, "eth1", "eth3")
    assert ctx.run(ctx.on.update_status(), out).unit_status.name == "active"


def test_one_missing_interface_is_named_alone(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(config={"bridge-interface-mappings": "br-ex:eth1"}))
    assert out.unit_status == testing.BlockedStatus(
        "config option 'bridge-interface-mappings' names an interface this machine lacks: eth1"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"datapath-type": "dpdk"},
            "config option 'datapath-type' is 'dpdk', must be one of system, netdev",
        ),
        ({"encap-type": "gre"}, "config option 'encap-type' is 'gre', must be one of geneve, vxlan"),
        ({"encap-ip": "10.0.0"}, "config option 'encap-ip' is '10.0.0', not an IP address"),
        ({"hostname": "compute_1"}, "config option 'hostname' is 'compute_1', not a host name"),
        (
            {"bridge-interface-mappings": "br-ex"},
            "config option 'bridge-interface-mappings' has 'br-ex', must be <bridge>:<interface> pairs",
        ),
        (
            {"bridge-interface-mappings": "br-ex:eth1 br-data:eth1"},
            "config option 'bridge-interface-mappings' names interface eth1 twice",
        ),
        (
            {"bridge-interface-mappings": "br-int:eth1"},
            "config option 'bridge-interface-mappings' names br-int, the integration bridge OVN manages",
        ),
        (
            {"bridge-interface-mappings": "br-ex:a-very-long-interface"},
            "config option 'bridge-interface-mappings' has 'a-very-long-interface', "
            "not a valid interface name",
        ),
        (
            {"ovn-bridge-mappings": "physnet1:br-ex physnet1:br-data"},
            "config option 'ovn-bridge-mappings' names physical network physnet1 twice",
        ),
        (
            {"ovn-bridge-mappings": "physnet1:br-ex:eth1"},
            "config option 'ovn-bridge-mappings' has 'physnet1:br-ex:eth1', must be <physnet>:<bridge> pairs",
        ),
        (
            {"enable-chassis-as-gw": True},
            "config option 'enable-chassis-as-gw' is true, but ovn-bridge-mappings names no "
            "physical network for external networks",
        ),
    ],
)
def test_invalid_config_is_blocked_naming_the_option(
    ctx: testing.Context[Any], config: dict[str, Any], message: str
) -> None:
    out = ctx.run(ctx.on.config_changed(), state(config=config))
    assert out.unit_status == testing.BlockedStatus(message)
    assert host_of(ctx).calls == []


# -- what it installs, writes and runs ---------------------------------------------------


def test_packages_are_installed_at_their_pins_and_the_services_run(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    assert out.unit_status == testing.ActiveStatus(f"chassis {HOSTNAME}; southbound over plain TCP")
    host = host_of(ctx)
    assert [c for c in host.calls if c[0] == "apt"] == [("apt", name, pin) for name, pin in PINS.items()]
    assert host.installed == PINS
    assert host.running_services == {"openvswitch-switch", "ovn-controller"}
    # the packages ship the units: the charm writes none
    assert not host.path("/etc/systemd/system").exists()
    assert host.read_text("/etc/openvswitch/system-id.conf") == f"{HOSTNAME}\n"
    assert 'OVN_CTL_OPTS=""' in host.read_text(OVN_HOST)
    # Open vSwitch is configured once its database server runs
    ops_done = [c[:2] for c in host.calls]
    assert ops_done.index(("start", "openvswitch-switch")) < ops_done.index(("run", "ovs-vsctl"))


def test_the_default_chassis_settings(ctx: testing.Context[Any]) -> None:
    ctx.run(ctx.on.config_changed(), state())
    assert host_commands(host_of(ctx)) == [
        (
            *VSCTL,
            *("--", "set", "Open_vSwitch", ".", *default_ids()),
            *("--", "remove", "Open_vSwitch", ".", "external_ids", "ovn-bridge-mappings", "ovn-cms-options"),
            *BR_INT,
            *MANAGER,
        )
    ]


def test_a_gateway_with_provider_bridges_on_the_userspace_datapath(ctx: testing.Context[Any]) -> None:
    with_interfaces(ctx, "eth1", "bond0")
    config = {
        "enable-chassis-as-gw": True,
        "datapath-type": "netdev",
        "bridge-interface-mappings": "br-ex:eth1 br-data:bond0",
        "ovn-bridge-mappings": "physnet1:br-ex, physnet2:br-data",
        "encap-type": "vxlan",
    }
    out = ctx.run(ctx.on.config_changed(), state(config=config))
    assert out.unit_status == testing.ActiveStatus(f"chassis {HOSTNAME}, gateway; southbound over plain TCP")
    ids = default_ids(
        ovn_encap_type="vxlan",
        ovn_bridge_datapath_type="netdev",
        ovn_bridge_mappings="physnet1:br-ex,physnet2:br-data",
        ovn_cms_options="enable-chassis-as-gw",
    )
    assert host_commands(host_of(ctx)) == [
        (
            *VSCTL,
            # guests' TCP passes the userspace conntrack only if vswitchd reads their virtio-net headers
            *("--", "set", "Open_vSwitch", ".", *ids, "other_config:userspace-tso-enable=true"),
            *(w.replace("=system", "=netdev") for w in BR_INT),
            *provider_bridge("br-ex", "netdev"),
            *provider_bridge("br-data", "netdev"),
            *("--", "--may-exist", "add-port", "br-ex", "eth1"),
            *("--", "--may-exist", "add-port", "br-data", "bond0"),
            *MANAGER,
        )
    ]


def test_a_bridge_without_an_interface_is_made_all_the_same(ctx: testing.Context[Any]) -> None:
    ctx.run(ctx.on.config_changed(), state(config={"ovn-bridge-mappings": "physnet1:br-ex"}))
    (argv,) = host_commands(host_of(ctx))
    assert 'external_ids:ovn-bridge-mappings="physnet1:br-ex"' in argv
    assert argv[-len(provider_bridge("br-ex")) - len(MANAGER) :] == (*provider_bridge("br-ex"), *MANAGER)
    assert "add-port" not in argv


def test_turning_the_gateway_off_removes_it(ctx: testing.Context[Any]) -> None:
    gateway = {"enable-chassis-as-gw": True, "ovn-bridge-mappings": "physnet1:br-ex"}
    on = ctx.run(ctx.on.config_changed(), state(config=gateway))
    host = host_of(ctx)
    host.calls.clear()
    off = ctx.run(
        ctx.on.config_changed(), dataclasses.replace(on, config={**gateway, "enable-chassis-as-gw": False})
    )
    assert off.unit_status == testing.ActiveStatus(f"chassis {HOSTNAME}; southbound over plain TCP")
    (argv,) = host_commands(host)
    assert argv[argv.index("remove") - 1 :] == (
        *("--", "remove", "Open_vSwitch", ".", "external_ids", "ovn-cms-options"),
        *BR_INT,
        *provider_bridge("br-ex"),
        *MANAGER,
    )
    # nothing else changed on the machine: no file written, no service restarted
    assert [c for c in host.calls if c[0] != "run"] == []


def test_a_port_moved_to_another_bridge_leaves_the_old_one(ctx: testing.Context[Any]) -> None:
    with_interfaces(ctx, "eth1")
    before = {"bridge-interface-mappings": "br-ex:eth1", "ovn-bridge-mappings": "physnet1:br-ex"}
    settled = ctx.run(ctx.on.config_changed(), state(config=before))
    host = host_of(ctx)
    host.calls.clear()
    after = {"bridge-interface-mappings": "br-data:eth1", "ovn-bridge-mappings": "physnet1:br-data"}
    ctx.run(ctx.on.config_changed(), dataclasses.replace(settled, config=after))
    (argv,) = host_commands(host)
    # removals first, in the same transaction: the port is free when it is added again
    assert argv[: argv.index("set")] == (
        *VSCTL,
        *("--", "--if-exists", "del-port", "br-ex", "eth1"),
        *("--", "--if-exists", "del-br", "br-ex"),
        "--",
    )
    assert argv[-5 - len(MANAGER) :] == ("--", "--may-exist", "add-port", "br-data", "eth1", *MANAGER)


def test_tls_to_the_southbound_database(ctx: testing.Context[Any]) -> None:
    fixtures = (relay(protocol=None), certificates_fixture(app=CHARM), ca_fixture())
    out = ctx.run(ctx.on.config_changed(), state(*fixtures, model=testing.Model(name="openstack")))
    assert out.unit_status == testing.ActiveStatus(f"chassis {HOSTNAME}")
    host = host_of(ctx)
    cert, key, ca = (f"{TLS_DIR}/{name}.pem" for name in ("cert", "key", "ca"))
    assert host.read_text(cert).startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in host.read_text(key)
    assert (host.mode(cert), host.mode(key), host.mode(ca)) == (0o644, 0o600, 0o644)
    # the relation's CA and the received one are the same here: trusted once
    assert host.read_text(ca).count("BEGIN CERTIFICATE") == 1
    assert (
        f'OVN_CTL_OPTS="--ovn-controller-ssl-key={key} --ovn-controller-ssl-cert={cert} '
        in host.read_text(OVN_HOST)
    )
    assert f"--ovn-controller-ssl-ca-cert={ca}" in host.read_text(OVN_HOST)
    (argv,) = host_commands(host)
    assert f'external_ids:ovn-remote="ssl:{LB}:6642"' in argv


def test_the_tunnel_endpoint_is_the_data_binding_unless_configured(ctx: testing.Context[Any]) -> None:
    data = testing.Network("data", [testing.BindAddress([testing.Address("10.20.30.40")])])
    out = ctx.run(ctx.on.config_changed(), state(networks={data}))
    (argv,) = host_commands(host_of(ctx))
    assert 'external_ids:ovn-encap-ip="10.20.30.40"' in argv
    host_of(ctx).calls.clear()
    ctx.run(ctx.on.config_changed(), dataclasses.replace(out, config={"encap-ip": "10.99.0.7"}))
    (argv,) = host_commands(host_of(ctx))
    assert 'external_ids:ovn-encap-ip="10.99.0.7"' in argv


def test_the_hostname_option_names_the_chassis_as_nova_does(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(config={"hostname": "compute-1.example.com"}))
    assert out.unit_status.message.startswith("chassis compute-1.example.com;")
    (argv,) = host_commands(host_of(ctx))
    assert set(external_ids(system_id="compute-1.example.com", hostname="compute-1.example.com")) <= set(argv)
    assert host_of(ctx).read_text("/etc/openvswitch/system-id.conf") == "compute-1.example.com\n"


def test_debug_restarts_ovn_controller_only(ctx: testing.Context[Any]) -> None:
    settled = ctx.run(ctx.on.config_changed(), state())
    host = host_of(ctx)
    host.calls.clear()
    ctx.run(ctx.on.config_changed(), dataclasses.replace(settled, config={"debug": True}))
    assert 'OVN_CTL_OPTS="--ovn-controller-log=-vfile:dbg"' in host.read_text(OVN_HOST)
    assert host.calls == [("write", OVN_HOST), ("restart", "ovn-controller")]


# -- idempotency and failures ------------------------------------------------------------


def test_a_second_identical_event_runs_nothing(ctx: testing.Context[Any]) -> None:
    with_interfaces(ctx, "eth1")
    config = {"bridge-interface-mappings": "br-ex:eth1", "ovn-bridge-mappings": "physnet1:br-ex"}
    host = host_of(ctx)
    once = assert_idempotent(ctx, state(config=config), ctx.on.config_changed())
    assert once.unit_status.name == "active"
    assert len(host_commands(host)) == 1
    host.calls.clear()
    for event in (ctx.on.config_changed(), ctx.on.update_status(), ctx.on.leader_elected()):
        ctx.run(event, once)
    assert host.calls == []


def test_a_failing_ovs_vsctl_waits_and_is_tried_again(ctx: testing.Context[Any]) -> None:
    host = host_of(ctx)
    host.commands["ovs-vsctl"] = lambda _: Completed(
        1, "", "ovs-vsctl: unix:/var/run/openvswitch/db.sock: ..."
    )
    out = ctx.run(ctx.on.config_changed(), state())
    assert out.unit_status == testing.WaitingStatus("ovs-vsctl --no-wait failed (exit code 1); will retry")
    del host.commands["ovs-vsctl"]
    again = ctx.run(ctx.on.update_status(), out)
    assert again.unit_status.name == "active"
    assert len(host_commands(host)) == 2


def test_a_non_leader_is_a_chassis_too(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(leader=False))
    assert out.unit_status.name == "active"
    assert out.get_relations("ovsdb-cms")[0].local_app_data == {}
    assert len(host_commands(host_of(ctx))) == 1
