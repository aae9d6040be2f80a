"""`python -m openstack_charms.sandbox` as a newcomer runs it: up, the printed client, status, run, down.

Each test deploys a bundle with the command line, from the machine's own network
namespace, uses the cloud only through what the command printed and wrote, and
takes it down; then nothing of it may be left: no process, database, database
user, RabbitMQ user or vhost, no file of its state, and none of the services'
files on the machine. One cloud at a time (the databases have the charms' names).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from openstack_charms.testing import REPO

OVERLAYS = REPO / "bundles" / "overlays"
#: what the charms write in their containers, never on the machine
#: what the services and charms write on their pods and machines, never on the host
SERVICE_PATHS = (
    "/etc/keystone",
    "/etc/glance",
    "/etc/placement",
    "/var/lib/glance",
    "/etc/openvswitch/system-id.conf",
    "/var/lib/openvswitch/conf.db",
    "/run/openvswitch",
    "/run/ovn",
    # the hypervisor's: nova's files, libvirtd's socket, the venv's programs where Ubuntu puts them
    "/etc/nova",
    "/var/lib/nova",
    "/run/libvirt/libvirt-sock",
    "/usr/bin/nova-compute",
    "/usr/lib/systemd/system/nova-compute.service",
)


def sandbox(state: pathlib.Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    """The sandbox's command line, its output echoed for the CI log."""
    done = subprocess.run(
        [sys.executable, "-m", "openstack_charms.sandbox", "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(REPO / "libs")),
    )
    print(f"$ sandbox {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def client(command: str, *args: str, timeout: float = 120) -> str:
    """Run the printed ``openstack`` command with more arguments; its output."""
    done = subprocess.run(
        [command, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"{command} {' '.join(args)}: {done.stderr}"
    return done.stdout


def statuses(state: pathlib.Path) -> dict[str, tuple[str, str]]:
    """unit -> (workload status, message), from `status`."""
    done = sandbox(state, "status", timeout=120)
    assert done.returncode == 0
    rows = {}
    for line in done.stdout.splitlines()[1:]:
        fields = line.split(None, 4)
        message = fields[4] if len(fields) > 4 else ""
        rows[fields[1]] = (fields[2], message)
    return rows


def made(state: pathlib.Path) -> dict[str, list[list[str]]]:
    return json.loads((state / "made.json").read_text())


def assert_nothing_left(state: pathlib.Path, made: dict[str, list[list[str]]]) -> None:
    assert not state.exists(), f"{state} is still there"
    marker = f"OPENSTACK_SANDBOX_UNITS={state / 'units'}".encode()
    left = []
    for environ in pathlib.Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                left.append(environ.parent.name)
        except OSError:
            continue
    assert left == [], f"processes of the sandbox left: {left}"
    databases = subprocess.run(
        ["mariadb", "-uroot", "-N", "-e", "SHOW DATABASES; SELECT user FROM mysql.user"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [n for n, u in made["databases"] if n in databases or u in databases] == []
    users = subprocess.run(["rabbitmqctl", "-q", "list_users"], capture_output=True, text=True, check=True)
    vhosts = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=True)
    rabbit = {line.split()[0] for line in users.stdout.splitlines()[1:] if line.strip()}
    assert [u for u, _ in made["rabbit_users"] if u in rabbit] == []
    assert [v for _, v in made["rabbit_users"] if v in vhosts.stdout.split()[1:]] == []
    assert [p for p in SERVICE_PATHS if os.path.lexists(p)] == []


@pytest.fixture
def state(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    path = tmp_path / "sandbox"
    yield path
    if path.exists():
        sandbox(path, "down", timeout=300)


def test_up_use_status_run_down_with_the_default_bundle(state: pathlib.Path, tmp_path: pathlib.Path) -> None:
    up = sandbox(state, "up")
    assert up.returncode == 0
    assert "every unit is active: converged in" in up.stdout
    assert re.search(
        r"hooks run: glance \d+, keystone \d+, neutron \d+, nova \d+, openstack-hypervisor \d+,"
        r" ovn-central \d+, ovn-chassis \d+, ovn-relay \d+, placement \d+",
        up.stdout,
    )
    assert "stand-in: mysql (mysql-k8s)" in up.stdout
    assert "openstack.yaml + hypervisor.yaml + userspace-datapath.yaml" in up.stdout
    assert "stand-in: openstack-hypervisor, ovn-chassis (machines): namespaces per machine" in up.stdout
    # the command as printed
    printed = re.search(r"^\s+(\S+/bin/openstack) --os-cloud sandbox token issue$", up.stdout, re.M)
    assert printed, up.stdout
    openstack = printed.group(1)
    token = json.loads(client(openstack, "--os-cloud", "sandbox", "token", "issue", "-f", "json"))
    assert token["project_id"]
    catalog = json.loads(client(openstack, "--os-cloud", "sandbox", "catalog", "list", "-f", "json"))
    assert {entry["Type"] for entry in catalog} == {"identity", "image", "placement", "network", "compute"}
    # traefik-public has a certificate from the sandbox's CA, which the clouds.yaml trusts
    public = [e["url"] for entry in catalog for e in entry["Endpoints"] if e["interface"] == "public"]
    assert len(public) == 5 and all(url.startswith("https://") for url in public), public
    image = tmp_path / "image.raw"
    image.write_bytes(os.urandom(1 << 20))
    created = json.loads(
        client(
            openstack,
            "--os-cloud",
            "sandbox",
            "image",
            "create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--file",
            str(image),
            "sandbox-image",
            "-f",
            "json",
        )
    )
    assert created["status"] == "active" and created["size"] == 1 << 20
    assert {unit: s for unit, (s, _) in statuses(state).items()} == {
        "keystone/0": "active",
        "glance/0": "active",
        "placement/0": "active",
        "ovn-central/0": "active",
        "ovn-relay/0": "active",
        "neutron/0": "active",
        "nova/0": "active",
        "ovn-chassis/0": "active",
        "openstack-hypervisor/0": "active",
        "mysql/0": "active",
        "rabbitmq/0": "active",
        "traefik-public/0": "active",
        "traefik-internal/0": "active",
        "certificates/0": "active",
    }
    # an operator's shell in a unit's container: its exit code and output come back
    northd = sandbox(
        state,
        "exec",
        "ovn-central/0",
        "ovn-northd",
        "--",
        "ovn-appctl",
        "-t",
        "/run/ovn/ovn-northd.ctl",
        "status",
    )
    assert northd.returncode == 0 and northd.stdout == "Status: active\n"
    assert sandbox(state, "exec", "ovn-central/0", "ovn-northd", "--", "false").returncode == 1
    # and on a machine: its Open vSwitch, which the chassis charm configured
    bridges = sandbox(state, "exec", "ovn-chassis/0", "machine", "--", "ovs-vsctl", "list-br")
    assert bridges.returncode == 0 and bridges.stdout.split() == ["br-ex", "br-int"], bridges.stdout
    # the hypervisor on the same machine: its libvirtd, which nova-compute (as nova) reaches
    libvirt = sandbox(state, "exec", "openstack-hypervisor/0", "machine", "--", "su", "-s", "/bin/sh", "nova",
                      "-c", "virsh -c qemu:///system uri")  # fmt: skip
    assert libvirt.returncode == 0 and libvirt.stdout.strip() == "qemu:///system", libvirt.stderr
    missing = sandbox(state, "exec", "ovn-central/0", "no-such-container", "--", "true")
    assert missing.returncode == 1 and "ovn-central/0 has no container 'no-such-container'" in missing.stderr
    password = sandbox(state, "run", "keystone/0", "get-admin-password")
    assert password.returncode == 0 and re.fullmatch(r"password: \S{16,}\n", password.stdout)
    refused = sandbox(state, "run", "keystone/0", "no-such-action")
    assert refused.returncode == 1
    again = sandbox(state, "up")
    assert again.returncode != 0 and "already up" in again.stderr
    assert [p for p in SERVICE_PATHS if os.path.lexists(p)] == []
    what = made(state)
    assert sorted(n for n, _ in what["databases"]) == [
        "glance", "keystone", "neutron", "nova", "nova_api", "nova_cell0", "placement",
    ]  # fmt: skip
    down = sandbox(state, "down", timeout=300)
    assert down.returncode == 0
    assert_nothing_left(state, what)


def test_a_bundle_naming_a_charm_we_do_not_have_is_refused(
    state: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(
        "bundle: kubernetes\napplications:\n  vault:\n    charm: vault-k8s\n    scale: 1\nrelations: []\n"
    )
    done = sandbox(state, "up", str(bundle))
    assert done.returncode != 0
    assert "'vault' is charm 'vault-k8s'" in done.stderr
    assert not state.exists()


def _uwsgi_master(state: pathlib.Path, unit: str, container: str, service: str) -> int:
    """The pid of a unit's service: the process whose output goes to that service's log."""
    log = state / "logs" / f"{unit.replace('/', '-')}-{container}-{service}.log"
    for fd in pathlib.Path("/proc").glob("[0-9]*/fd/1"):
        try:
            if os.readlink(fd) == str(log) and os.getpgid(int(fd.parts[2])) == int(fd.parts[2]):
                return int(fd.parts[2])
        except OSError:
            continue
    raise AssertionError(f"no process writes {log}")


def _wait_for(state: pathlib.Path, unit: str, predicate: str, timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        status = statuses(state)[unit]
        if re.search(predicate, f"{status[0]} {status[1]}"):
            return status
        assert time.monotonic() < deadline, f"{unit} is still {status} after {timeout} s"
        time.sleep(1)


def test_three_keystones_behind_haproxy_survive_one_that_hangs(state: pathlib.Path) -> None:
    up = sandbox(state, "up", "--overlay", str(OVERLAYS / "ha.yaml"))
    assert up.returncode == 0
    openstack = str(state / "bin" / "openstack")
    units = statuses(state)
    assert [u for u in units if u.startswith("keystone/")] == ["keystone/0", "keystone/1", "keystone/2"]
    assert all(s == "active" for s, _ in units.values()), units
    # keystone/1's API hangs (stopped, not dead: Pebble's restart on exit does not help)
    hung = _uwsgi_master(state, "keystone/1", "keystone", "keystone-api")
    os.killpg(hung, signal.SIGSTOP)
    # Pebble's check fails three times in a row: the charm is told, Pebble restarts the service
    status = _wait_for(state, "keystone/1", r"^waiting keystone-api-up failing", 90)
    print(f"keystone/1 while hung: {status}")
    for _ in range(3):
        token = json.loads(client(openstack, "--os-cloud", "sandbox", "token", "issue", "-f", "json"))
        assert token["id"]
    _wait_for(state, "keystone/1", r"^active", 120)
    assert _uwsgi_master(state, "keystone/1", "keystone", "keystone-api") != hung
    assert not pathlib.Path(f"/proc/{hung}").exists()
    token = json.loads(client(openstack, "--os-cloud", "sandbox", "token", "issue", "-f", "json"))
    assert token["id"]
    _three_ovn_centrals_keep_answering_with_one_stopped(state)
    _a_floating_ip_through_three_neutrons_lands_in_the_cluster(state, openstack)
    what = made(state)
    down = sandbox(state, "down", timeout=300)
    assert down.returncode == 0
    assert_nothing_left(state, what)


#: an OVN client in an ovn-central container, with that unit's certificate
OVN_TLS = ("-p", "/etc/ovn/tls/key.pem", "-c", "/etc/ovn/tls/cert.pem", "-C", "/etc/ovn/tls/ca.pem")


def _nbctl(state: pathlib.Path, unit: str, db: str, *argv: str) -> str:
    done = sandbox(state, "exec", unit, "ovn-nb-db-server", "--", "ovn-nbctl", f"--db={db}", *OVN_TLS, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _three_ovn_centrals_keep_answering_with_one_stopped(state: pathlib.Path) -> None:
    done = sandbox(state, "status", timeout=120)
    addresses = {
        fields[1]: fields[3]
        for line in done.stdout.splitlines()[1:]
        if (fields := line.split())[1].startswith("ovn-central/")
    }
    assert list(addresses) == ["ovn-central/0", "ovn-central/1", "ovn-central/2"]
    cluster = ",".join(f"ssl:{a}:6641" for a in addresses.values())
    _nbctl(state, "ovn-central/0", cluster, "ls-add", "ha-net")
    # one raft cluster: what was written through the leader is read on every member
    for unit, address in addresses.items():
        assert "ha-net" in _nbctl(state, unit, f"ssl:{address}:6641", "--no-leader-only", "show"), unit
    # ovn-central/2's Northbound server hangs: the unit says which check fails, the other two
    # still hold the majority and take writes
    hung = _uwsgi_master(state, "ovn-central/2", "ovn-nb-db-server", "ovn-nb-db-server")
    os.kill(hung, signal.SIGSTOP)
    try:
        status = _wait_for(state, "ovn-central/2", r"^waiting ovn-nb-db-server-connected failing", 120)
        print(f"ovn-central/2 while its NB server is stopped: {status}")
        survivors = ",".join(f"ssl:{addresses[u]}:6641" for u in ("ovn-central/0", "ovn-central/1"))
        _nbctl(state, "ovn-central/1", survivors, "ls-add", "ha-net-2")
    finally:
        os.kill(hung, signal.SIGCONT)
    _wait_for(state, "ovn-central/2", r"^active", 120)
    # the member that was away caught up
    shown = _nbctl(
        state, "ovn-central/2", f"ssl:{addresses['ovn-central/2']}:6641", "--no-leader-only", "show"
    )
    assert "ha-net-2" in shown


def _a_floating_ip_through_three_neutrons_lands_in_the_cluster(state: pathlib.Path, openstack: str) -> None:
    def osc(*args: str) -> Any:
        return json.loads(client(openstack, "--os-cloud", "sandbox", *args, "-f", "json"))

    def run(*args: str) -> None:
        client(openstack, "--os-cloud", "sandbox", *args)

    ext = osc("network", "create", "--external", "--provider-network-type", "flat",
              "--provider-physical-network", "physnet1", "ha-ext")  # fmt: skip
    run(
        "subnet",
        "create",
        "--network",
        "ha-ext",
        "--subnet-range",
        "203.0.113.0/24",
        "--no-dhcp",
        "ha-ext-sub",
    )
    osc("network", "create", "ha-private")
    run("subnet", "create", "--network", "ha-private", "--subnet-range", "10.98.0.0/24", "ha-sub")
    router = osc("router", "create", "ha-router")
    run("router", "set", "--external-gateway", ext["id"], "ha-router")
    run("router", "add", "subnet", "ha-router", "ha-sub")
    port = osc("port", "create", "--network", "ha-private", "ha-port")
    fip = osc("floating", "ip", "create", ext["id"])
    run("floating", "ip", "set", "--port", port["id"], fip["floating_ip_address"])
    # read through another member of the raft cluster than the one neutron may have written to
    done = sandbox(state, "status", timeout=120)
    address = next(f[3] for line in done.stdout.splitlines()[1:] if (f := line.split())[1] == "ovn-central/2")
    nat = _nbctl(state, "ovn-central/2", f"ssl:{address}:6641", "--no-leader-only", "lr-nat-list",
                 f"neutron-{router['id']}")  # fmt: skip
    rows = [line.split() for line in nat.splitlines()[1:]]
    port_ip = port["fixed_ips"][0]["ip_address"]
    assert any(r[0] == "dnat_and_snat" and fip["floating_ip_address"] in r and port_ip in r for r in rows), (
        nat
    )
    # and the gateway chassis, behind three relays, still reaches the southbound database
    connected = sandbox(state, "exec", "ovn-chassis/0", "machine", "--", "ovn-appctl", "-t", "ovn-controller",
                        "connection-status")  # fmt: skip
    assert connected.stdout.strip() == "connected", connected


def test_with_the_tls_overlay_every_catalog_url_is_https_and_verified(state: pathlib.Path) -> None:
    up = sandbox(state, "up", "--overlay", str(OVERLAYS / "tls.yaml"))
    assert up.returncode == 0
    openstack = str(state / "bin" / "openstack")
    catalog = json.loads(client(openstack, "--os-cloud", "sandbox", "catalog", "list", "-f", "json"))
    urls = [e["url"] for entry in catalog for e in entry["Endpoints"]]
    # five services (keystone, glance, placement, neutron, nova), three interfaces each
    assert len(urls) == 15 and all(url.startswith("https://") for url in urls), urls
    # the units serve https themselves: Pebble's checks (curl against the unit's CA) found them up
    assert all(s == "active" for s, _ in statuses(state).values())
    # the client verifies: without the sandbox's CA the same cloud is refused
    clouds = (state / "clouds.yaml").read_text()
    assert f"cacert: {state / 'ca' / 'ca.pem'}" in clouds
    untrusting = state / "untrusting.yaml"
    untrusting.write_text("\n".join(line for line in clouds.splitlines() if "cacert" not in line) + "\n")
    refused = subprocess.run(
        [openstack, "--os-cloud", "sandbox", "token", "issue"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OS_CLIENT_CONFIG_FILE=str(untrusting)),
    )
    assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    token = json.loads(client(openstack, "--os-cloud", "sandbox", "token", "issue", "-f", "json"))
    assert token["id"]
    what = made(state)
    assert sandbox(state, "down", timeout=300).returncode == 0
    assert_nothing_left(state, what)
