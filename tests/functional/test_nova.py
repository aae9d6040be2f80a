"""nova-k8s and openstack-hypervisor: a real guest booted through nova's libvirt driver.

nova's API, metadata API, scheduler, conductor and console proxy run from
nova-k8s's files and layers against three MariaDB databases, RabbitMQ and our
keystone, glance and placement; nova-compute runs on the hypervisor's machine
from the files the openstack-hypervisor charm wrote (``virt-type=qemu``: QEMU
emulates the guest, /dev/kvm here cannot run one), talking to Debian's
libvirtd. The guest is a Debian cloud kernel and a busybox initramfs built
here from Debian's packages (:mod:`guest`), uploaded as AMI-style images.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import guest
import pytest
from clients import openstack, openstack_json
from conftest import FLAVOR
from openstack_charms.sandbox.cloud import Cloud

HYPERVISOR = "openstack-hypervisor/0"
#: the bundle's machine 0, which runs the OVN chassis too
HOST = "machine-0"
CENTRAL = "ovn-central/0"
SB_TLS = ["-p", "/etc/ovn/tls/key.pem", "-c", "/etc/ovn/tls/cert.pem", "-C", "/etc/ovn/tls/ca.pem"]


@pytest.fixture(scope="module")
def osc(venv: pathlib.Path, admin: dict[str, Any]) -> Callable[..., Any]:
    def call(*args: str, timeout: float = 120) -> Any:
        return openstack_json(venv, admin["clouds_yaml"], admin["cloud"], *args, timeout=timeout)

    return call


@pytest.fixture(scope="module")
def osc_plain(venv: pathlib.Path, admin: dict[str, Any]) -> Callable[..., str]:
    def call(*args: str, timeout: float = 120) -> str:
        return openstack(venv, admin["clouds_yaml"], admin["cloud"], *args, timeout=timeout, fmt=None)

    return call


def virsh(cloud: Cloud, *argv: str) -> str:
    code, out, err = cloud.execute(HYPERVISOR, "machine", ["virsh", "-c", "qemu:///system", *argv])
    assert code == 0, err
    return out


def console_until(osc_plain: Callable[..., str], server: str, marker: str, timeout: float = 180) -> str:
    """The server's console log (through nova, as its user reads it) once it shows ``marker``."""
    deadline, log = time.monotonic() + timeout, ""
    while marker not in log and time.monotonic() < deadline:
        time.sleep(2)
        log = osc_plain("console", "log", "show", server)
    assert marker in log, log[-2000:]
    return log


@pytest.fixture(scope="module", autouse=True)
def hypervisor_up(osc: Callable[..., Any]) -> None:
    """nova-compute registered, and mapped to cell1 by the leader's scheduler within its 30 s period."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if any(h["State"] == "up" for h in osc("hypervisor", "list")):
            return
        time.sleep(5)


def test_nova_and_the_hypervisor_are_active(cloud: Cloud, osc: Callable[..., Any]) -> None:
    statuses = {s.unit: (s.status, s.message) for s in cloud.statuses()}
    assert statuses["nova/0"] == ("active", "")
    assert statuses[HYPERVISOR] == ("active", f"{HOST} (qemu)")
    # nova-compute registered under the machine's name, and the leader's scheduler mapped it to cell1
    services = osc("compute", "service", "list", "--service", "nova-compute")
    assert [(s["Host"], s["State"], s["Status"]) for s in services] == [(HOST, "up", "enabled")]
    hypervisors = osc("hypervisor", "list")
    assert [(h["Hypervisor Hostname"], h["Hypervisor Type"], h["State"]) for h in hypervisors] == [
        (HOST, "QEMU", "up")
    ]


def test_the_operator_lists_the_compute_nodes_by_action(cloud: Cloud) -> None:
    results = cloud.run_action("nova/0", "list-compute-nodes")
    nodes = json.loads(results["compute-nodes"])
    assert [(n["host"], n["cell"]) for n in nodes] == [(HOST, "cell1")] and results["count"] == 1
    # already mapped by the scheduler's periodic discovery: the action maps nothing more
    assert cloud.run_action("nova/0", "discover-hosts")["count"] == 0


def test_a_server_boots_through_libvirt_and_its_guest_prints_its_marker(
    cloud: Cloud, osc: Callable[..., Any], osc_plain: Callable[..., str], guest_image: dict[str, Any]
) -> None:
    start = time.monotonic()
    server = osc("server", "create", "--flavor", FLAVOR, "--image", guest_image["id"], "--nic", "none",
                 "--wait", "functional-server", timeout=600)  # fmt: skip
    booted = time.monotonic() - start
    print(f"server ACTIVE in {booted:.1f} s")
    assert server["status"] == "ACTIVE"
    assert server["OS-EXT-SRV-ATTR:host"] == HOST
    # libvirt runs it, emulated (type qemu), with the kernel and ramdisk nova took from the AMI
    domain = server["OS-EXT-SRV-ATTR:instance_name"]
    xml = virsh(cloud, "dumpxml", domain)
    assert "<domain type='qemu'" in xml and "<kernel>" in xml and "<initrd>" in xml
    assert domain in virsh(cloud, "list", "--name").split()
    console_until(osc_plain, server["id"], guest.MARKER)
    print(f"guest marker on the console {time.monotonic() - start:.1f} s after the request")
    osc_plain("server", "delete", "--wait", server["id"], timeout=300)
    assert domain not in virsh(cloud, "list", "--all", "--name").split()


def test_a_server_on_a_tenant_network_is_bound_to_this_chassis_and_gets_its_address_and_metadata(
    cloud: Cloud, osc: Callable[..., Any], osc_plain: Callable[..., str], guest_image: dict[str, Any]
) -> None:
    network = osc("network", "create", "functional-guest-net")
    osc(
        "subnet",
        "create",
        "--network",
        network["id"],
        "--subnet-range",
        "10.98.0.0/24",
        "functional-guest-sub",
    )
    start = time.monotonic()
    server = osc("server", "create", "--flavor", FLAVOR, "--image", guest_image["id"], "--network",
                 network["id"], "--wait", "functional-networked", timeout=600)  # fmt: skip
    print(f"server with a port ACTIVE in {time.monotonic() - start:.1f} s")
    assert server["status"] == "ACTIVE"
    (port,) = osc("port", "list", "--server", server["id"])
    port = osc("port", "show", port["ID"])
    # neutron bound the port to this machine (nova's host is the chassis' host name) and OVN says it is up
    assert (port["binding_host_id"], port["binding_vif_type"], port["status"]) == (HOST, "ovs", "ACTIVE")
    db = f"--db=ssl:{cloud.machine.address(CENTRAL)}:6642"
    code, chassis, err = cloud.execute(CENTRAL, "ovn-sb-db-server", ["ovn-sbctl", db, *SB_TLS, "--bare",
        "--columns=chassis", "find", "Port_Binding", f"logical_port={port['id']}"])  # fmt: skip
    assert code == 0, err
    code, name, err = cloud.execute(CENTRAL, "ovn-sb-db-server", ["ovn-sbctl", db, *SB_TLS, "--bare",
        "--columns=name", "list", "Chassis", chassis.strip()])  # fmt: skip
    assert (code, name.strip()) == (0, HOST), err
    # OVN's own DHCP gave the guest the port's address
    address = port["fixed_ips"][0]["ip_address"]
    log = console_until(osc_plain, server["id"], guest.NETWORK_DONE, timeout=300)
    assert f"guest lease: eth0 {address}/24" in log, log[-2000:]
    # the lease routes the metadata address to the network's metadata port; this machine's agent,
    # through the hypervisor's bridge, got the guest nova's own answer about it, as cloud-init would
    assert f"guest route: {guest.METADATA_ADDRESS}/32 via " in log, log[-2000:]
    assert f'guest metadata: "uuid": "{server["id"]}"' in log, log[-2000:]
    print(f"guest's metadata answered {time.monotonic() - start:.1f} s after the request")
    osc_plain("server", "delete", "--wait", server["id"], timeout=300)
    osc_plain("network", "delete", network["id"])
