"""ovn-chassis on a machine of the sandbox, reaching the southbound database through ovn-relay.

The machine bundle's chassis (bundles/hypervisor.yaml with the userspace-datapath
overlay) runs Debian's Open vSwitch and ovn-controller from their own systemd
units, configured by the charm; it reaches OVN through the relay's LoadBalancer
address, which the relay publishes on the offer it consumes. What is checked is
what an operator would look at: the machine's Open vSwitch database, ovn-controller's
own connection status, and the chassis' rows in the southbound database; then a
router's gateway is scheduled on it and claimed by its ovn-controller.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

from clients import openstack, openstack_json
from openstack_charms.plan import Command
from openstack_charms.sandbox.cloud import Cloud

CHASSIS = "ovn-chassis/0"
HOSTNAME = "machine-0"
CENTRAL = "ovn-central/0"
TLS = ["-p", "/etc/ovn/tls/key.pem", "-c", "/etc/ovn/tls/cert.pem", "-C", "/etc/ovn/tls/ca.pem"]


def on_machine(cloud: Cloud, *argv: str) -> str:
    done = cloud.hosts[CHASSIS].run(Command(argv, timeout=60))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def ctl(cloud: Cloud, tool: str, port: int, *argv: str) -> str:
    db = f"--db=ssl:{cloud.machine.address(CENTRAL)}:{port}"
    container = "ovn-sb-db-server" if port == 6642 else "ovn-nb-db-server"
    code, out, err = cloud.execute(CENTRAL, container, [tool, db, *TLS, *argv])
    assert code == 0, err
    return out


def sb_rows(cloud: Cloud, table: str) -> list[dict[str, Any]]:
    data = json.loads(ctl(cloud, "ovn-sbctl", 6642, "--format=json", "list", table))
    return [dict(zip(data["headings"], row, strict=True)) for row in data["data"]]


def ovs_map(value: Any) -> dict[str, str]:
    """An OVSDB map in JSON (``["map", [[k, v], ...]]``) as a dict."""
    assert value[0] == "map", value
    return dict(value[1])


def test_the_chassis_runs_open_vswitch_and_ovn_controller_as_configured(cloud: Cloud) -> None:
    status = cloud.model.unit_states[CHASSIS].unit_status
    assert status.name == "active", status.message
    assert status.message.startswith(f"chassis {HOSTNAME}, gateway"), status.message
    assert on_machine(cloud, "hostname") == HOSTNAME
    # the relay's LoadBalancer address, as the relay published it on ovsdb-cms-relay
    published = {
        bag.get("loadbalancer-address")
        for (unit, _), (bag, _) in cloud.model.databags().items()
        if unit.startswith("ovn-relay/")
    } - {None}
    assert len(published) == 1, published
    (lb,) = published
    ids = ovs_map(
        json.loads(
            on_machine(cloud, "ovs-vsctl", "--format=json", "--columns=external_ids", "list", "Open_vSwitch")
        )["data"][0][0]
    )
    assert {
        k: ids.get(k) for k in ("ovn-remote", "system-id", "hostname", "ovn-encap-ip", "ovn-cms-options")
    } == {
        "ovn-remote": f"ssl:{lb}:6642",
        "system-id": HOSTNAME,
        "hostname": HOSTNAME,
        "ovn-encap-ip": cloud.machine.address(CHASSIS),
        "ovn-cms-options": "enable-chassis-as-gw",
    }
    # the userspace datapath the overlay chose, on br-int and the provider bridge
    for bridge in ("br-int", "br-ex"):
        assert on_machine(cloud, "ovs-vsctl", "get", "Bridge", bridge, "datapath_type") == "netdev"
    # ovn-controller, started from the package's unit with the charm's TLS options, is connected
    assert on_machine(cloud, "ovn-appctl", "-t", "ovn-controller", "connection-status") == "connected"
    defaults = cloud.hosts[CHASSIS].read("/etc/default/ovn-host")
    assert defaults is not None and b"--ovn-controller-ssl-cert=" in defaults


def test_the_chassis_registers_in_the_southbound_as_a_gateway(cloud: Cloud) -> None:
    chassis = {row["name"]: row for row in sb_rows(cloud, "Chassis")}
    assert set(chassis) == {HOSTNAME}
    row = chassis[HOSTNAME]
    assert row["hostname"] == HOSTNAME
    assert ovs_map(row["other_config"]).get("ovn-cms-options") == "enable-chassis-as-gw"
    assert ovs_map(row["other_config"]).get("ovn-bridge-mappings") == "physnet1:br-ex"
    encaps = sb_rows(cloud, "Encap")
    assert [(e["type"], e["ip"]) for e in encaps] == [("geneve", cloud.machine.address(CHASSIS))]


def test_a_router_gateway_is_scheduled_on_the_gateway_chassis_and_claimed(
    cloud: Cloud, venv: pathlib.Path, admin: dict[str, Any], external_network: dict[str, Any]
) -> None:
    def osc(*args: str) -> Any:
        return openstack_json(venv, admin["clouds_yaml"], admin["cloud"], *args, timeout=120)

    router = osc("router", "create", "chassis-router")
    openstack(venv, admin["clouds_yaml"], admin["cloud"], "router", "set", "--external-gateway",
              external_network["network"]["id"], "chassis-router", fmt=None)  # fmt: skip
    ports = osc("port", "list", "--router", router["id"], "--long")
    (gateway,) = [p for p in ports if p["Device Owner"] == "network:router_gateway"]
    scheduled = ctl(cloud, "ovn-nbctl", 6641, "lrp-get-gateway-chassis", f"lrp-{gateway['ID']}")
    # one gateway chassis, named after the port and the chassis, at the first priority
    assert scheduled.split() == [f"lrp-{gateway['ID']}_{HOSTNAME}", "1"], scheduled
    # the chassis' ovn-controller claims the router's gateway port (its chassisredirect binding)
    deadline = time.monotonic() + 60
    claimed = ""
    while time.monotonic() < deadline:
        claimed = ctl(
            cloud, "ovn-sbctl", 6642, "--bare", "--columns=chassis", "find", "Port_Binding",
            f"logical_port=cr-lrp-{gateway['ID']}",
        ).strip()  # fmt: skip
        if claimed:
            break
        time.sleep(1)
    chassis = {row["name"]: row["_uuid"][1] for row in sb_rows(cloud, "Chassis")}
    assert claimed == chassis[HOSTNAME]
