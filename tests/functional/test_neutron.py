"""neutron-k8s: the networking API on OVN, from the charm's files, through ovn-central's databases.

An operator's external network, a project's geneve network with its subnet, a
router with its gateway on the external network, and a floating IP on a port:
each call answered by neutron, and the result checked where OVN keeps it, in
the Northbound database (read in ovn-central's container, as an operator would).
"""

from __future__ import annotations

import pathlib
from typing import Any

from clients import openstack, openstack_json
from openstack_charms.sandbox.cloud import Cloud

CENTRAL = "ovn-central/0"
TLS = ["-p", "/etc/ovn/tls/key.pem", "-c", "/etc/ovn/tls/cert.pem", "-C", "/etc/ovn/tls/ca.pem"]


def nbctl(cloud: Cloud, *argv: str) -> str:
    db = f"--db=ssl:{cloud.machine.address(CENTRAL)}:6641"
    code, out, err = cloud.execute(CENTRAL, "ovn-nb-db-server", ["ovn-nbctl", db, *TLS, *argv])
    assert code == 0, err
    return out


def test_neutron_reaches_ovn_over_tls_with_its_own_certificate(cloud: Cloud) -> None:
    status = cloud.model.unit_states["neutron/0"].unit_status
    assert (status.name, status.message) == ("active", "")
    ml2 = cloud.machine.path(
        "neutron/0", "neutron-server", "/etc/neutron/plugins/ml2/ml2_conf.ini"
    ).read_text()
    address = cloud.machine.address(CENTRAL)
    assert f"ovn_nb_connection = ssl:{address}:6641" in ml2
    assert f"ovn_sb_connection = ssl:{address}:6642" in ml2
    assert "ovn_nb_private_key = /etc/neutron/tls/key.pem" in ml2


def test_networks_router_and_floating_ip_land_in_ovn(
    cloud: Cloud, venv: pathlib.Path, admin: dict[str, Any], external_network: dict[str, Any]
) -> None:
    def osc(*args: str) -> Any:
        return openstack_json(venv, admin["clouds_yaml"], admin["cloud"], *args, timeout=120)

    ext = external_network["network"]
    assert ext["provider:network_type"] == "flat" and ext["router:external"] is True
    private = osc("network", "create", "functional-private")
    # the tenant network type the charm configured
    assert private["provider:network_type"] == "geneve"
    osc(
        "subnet",
        "create",
        "--network",
        "functional-private",
        "--subnet-range",
        "10.99.0.0/24",
        "functional-sub",
    )
    router = osc("router", "create", "functional-router")
    openstack(venv, admin["clouds_yaml"], admin["cloud"], "router", "set", "--external-gateway", ext["id"],
              "functional-router", fmt=None)  # fmt: skip
    openstack(venv, admin["clouds_yaml"], admin["cloud"], "router", "add", "subnet", "functional-router",
              "functional-sub", fmt=None)  # fmt: skip
    port = osc("port", "create", "--network", "functional-private", "functional-port")
    fip = osc("floating", "ip", "create", ext["id"])
    openstack(venv, admin["clouds_yaml"], admin["cloud"], "floating", "ip", "set", "--port", port["id"],
              fip["floating_ip_address"], fmt=None)  # fmt: skip

    # OVN holds what neutron was asked: both switches, the router, its NAT rows
    shown = nbctl(cloud, "show")
    assert f"neutron-{private['id']}" in shown and f"neutron-{ext['id']}" in shown
    nat = nbctl(cloud, "lr-nat-list", f"neutron-{router['id']}")
    port_ip = port["fixed_ips"][0]["ip_address"]
    rows = [line.split() for line in nat.splitlines()[1:]]
    assert any(r[0] == "dnat_and_snat" and fip["floating_ip_address"] in r and port_ip in r for r in rows), (
        nat
    )
    assert any(r[0] == "snat" and "10.99.0.0/24" in r for r in rows), nat
    # the external network reaches the physical network through a localnet port
    assert "type: localnet" in shown
