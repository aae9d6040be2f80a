"""Each unit has a network of its own, as a pod: its own address, HAProxy in front of its units."""

from __future__ import annotations

import ipaddress
import pathlib
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest
from openstack_charms.sandbox.cloud import Cloud
from openstack_charms.sandbox.containers import Machine
from openstack_charms.sandbox.network import GATEWAY, NETWORK
from openstack_charms.sandbox.providers import Ingress


def _status(url: str, ca: pathlib.Path | None = None) -> int:
    """The HTTP status ``url`` answers with (an error status is an answer too).

    With ``ca``, an https unit's certificate is verified against it, but not its name: the unit
    is reached at its address, which its certificate does not name.
    """
    context = None
    if ca is not None:
        context = ssl.create_default_context(cafile=str(ca))
        context.check_hostname = False
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return response.status
    except urllib.error.HTTPError as e:
        e.close()
        return e.code


def _refused(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_each_unit_answers_on_its_own_address_only(cloud: Cloud) -> None:
    machine, ingress = cloud.machine, cloud.ingress
    assert ingress is not None
    addresses = {unit: machine.address(unit) for unit in machine.networks}
    assert set(addresses) == {
        "keystone/0",
        "glance/0",
        "placement/0",
        "ovn-central/0",
        "ovn-relay/0",
        "neutron/0",
        "nova/0",
        "ovn-chassis/0",
        "openstack-hypervisor/0",
    }
    # one address per pod and per machine: the chassis and the hypervisor share theirs
    assert addresses["ovn-chassis/0"] == addresses["openstack-hypervisor/0"]
    assert len(set(addresses.values())) == len(addresses) - 1
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(NETWORK) for a in addresses.values())
    # neither the gateway's, nor an ingress frontend's, nor a LoadBalancer service's
    assert not set(addresses.values()) & {GATEWAY, *ingress.addresses.values(), *cloud.lb_addresses}
    routed = {(route.app, route.backend_port) for route in ingress.routes.values()}
    # nova's compute API, its metadata API and its console proxy each have a route
    assert routed == {
        ("keystone", 5000), ("glance", 9292), ("placement", 8778), ("neutron", 9696),
        ("nova", 8774), ("nova", 8775), ("nova", 6082),
    }  # fmt: skip
    ports = {"keystone": 5000, "glance": 9292, "placement": 8778}
    # the APIs served in plain http (neutron serves https, with the certificate its OVN client needs)
    for unit, address in addresses.items():
        app = unit.split("/")[0]
        if app not in ("keystone", "glance", "placement"):
            continue
        # the unit's own interface has its address, inside its pod
        code, out, _ = machine.run(
            (unit, app),
            ["ip", "-4", "-o", "addr", "show", "eth0"],
            environment=None,
            user=None,
            group=None,
            timeout=30,
            working_dir=None,
        )
        assert code == 0 and f" {address}/" in out, out
        # from the sandbox's namespace: the service answers on its unit's address, on no other
        assert 200 <= _status(f"http://{address}:{ports[app]}/") < 500
        others = [a for u, a in addresses.items() if u != unit]
        assert all(_refused(other, ports[app]) for other in others), unit
        # and no more on the sandbox's loopback: it is the unit's own
        assert _refused("127.0.0.1", ports[app])
        with machine.networks[unit].entered():
            assert 200 <= _status(f"http://localhost:{ports[app]}/") < 500


def test_a_request_through_haproxy_reaches_the_unit(cloud: Cloud) -> None:
    machine, ingress = cloud.machine, cloud.ingress
    assert ingress is not None and cloud.ca is not None
    for name, route in ingress.routes.items():
        (unit,) = machine.units(route.app)
        server = unit.replace("/", "-")
        before = ingress.servers()[(name, server)]
        # a lone unit is never taken out of its backend, so it is not checked
        assert before["status"] == "no check"
        assert before["addr"] == f"{machine.address(unit)}:{route.backend_port}"
        direct = _status(
            f"{route.scheme}://{machine.address(unit)}:{route.backend_port}/", cloud.ca.cert_path
        )
        # traefik-public has a certificate: its frontends are https, verified against the sandbox's CA
        scheme = "https" if route.provider in ingress.tls else "http"
        assert _status(f"{scheme}://{route.address}:{route.port}/") == direct
        # HAProxy's own count: this request went to that unit
        assert int(ingress.servers()[(name, server)]["stot"]) == int(before["stot"]) + 1


def test_haproxy_balances_over_every_unit_then_cleanup_leaves_nothing(
    venv: pathlib.Path, tmp_path: pathlib.Path, haproxy: None
) -> None:
    machine = Machine(venv, tmp_path, tmp_path / "units")
    ingress = Ingress(machine, tmp_path, tmp_path)
    units = ["probe/0", "probe/1"]
    try:
        for unit in units:
            key = (unit, "web")
            machine.add_container(*key)
            machine.write(
                key,
                "/var/lib/probe/www/unit",
                unit.encode(),
                make_dirs=True,
                permissions=0o644,
                user="probe",
                group=None,
            )
            machine.start(
                key,
                "web",
                {"command": "python3 -m http.server 8080 --directory /var/lib/probe/www", "user": "probe"},
            )
        url = ingress.route("probe", "ingress", "probe-ingress", 8080)
        ingress.wait_until_up()

        def answers(n: int) -> list[str]:
            seen = []
            for _ in range(n):
                with urllib.request.urlopen(f"{url}/unit", timeout=10) as response:
                    seen.append(response.read().decode())
            return seen

        # round robin: every unit serves its share
        assert sorted(answers(4)) == ["probe/0", "probe/0", "probe/1", "probe/1"]
        # a unit gone is taken out by the health checks: the other serves everything
        machine.stop(("probe/0", "web"), "web")
        deadline = time.monotonic() + 15
        while ingress.servers()[("probe-ingress", "probe-0")]["status"] == "UP":
            assert time.monotonic() < deadline, "HAProxy's checks never found probe/0 down"
            time.sleep(0.2)
        assert set(answers(6)) == {"probe/1"}
        haproxy = ingress.process.pid if ingress.process else None
        holders = [n.holder.pid for n in machine.networks.values()]
        holders += [c.holder.pid for c in machine.containers.values()]
        holders += [r.process.pid for r in machine.processes.values()]
    finally:
        try:
            ingress.close()
        finally:
            machine.cleanup()
    assert haproxy is not None and not pathlib.Path(f"/proc/{haproxy}").exists()
    assert [pid for pid in holders if pathlib.Path(f"/proc/{pid}").exists()] == []
    with pytest.raises(OSError):
        socket.create_connection((ingress.addresses["probe-ingress"], 8080), timeout=2)
