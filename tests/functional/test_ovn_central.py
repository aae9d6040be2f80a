"""ovn-central-k8s: OVN's databases and northd run from the charm's scripts and layers, with TLS.

The operator's way in is a unit's container (``juju ssh --container``): the
OVN clients there, with the unit's own certificate, reach the databases on
the unit's address as neutron would.
"""

from __future__ import annotations

import json
import shlex
import time

from openstack_charms.sandbox.cloud import Cloud

UNIT = "ovn-central/0"
DATABASES = (
    ("ovn-nb-db-server", "OVN_Northbound", "ovnnb_db", 6641, 6643),
    ("ovn-sb-db-server", "OVN_Southbound", "ovnsb_db", 6642, 6644),
)
TLS = ["-p", "/etc/ovn/tls/key.pem", "-c", "/etc/ovn/tls/cert.pem", "-C", "/etc/ovn/tls/ca.pem"]


def ovn(cloud: Cloud, container: str, *argv: str) -> str:
    code, out, err = cloud.execute(UNIT, container, list(argv))
    assert code == 0, f"{' '.join(argv)}: {err}"
    return out


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def test_every_server_runs_what_the_layer_declares(cloud: Cloud) -> None:
    status = cloud.model.unit_states[UNIT].unit_status
    # related to certificates in the bundle: TLS, and nothing to say about it
    assert (status.name, status.message) == ("active", "")
    pod = cloud.pod_name(UNIT)
    for container, schema, name, port, raft in DATABASES:
        running = cloud.machine.processes[((UNIT, container), container)]
        layer = shlex.split(running.spec["command"])
        assert layer[:3] == [f"/etc/ovn/{container}.sh", "run", f"ssl:{pod}:{raft}"]
        # the script found the database on the volume (the founder made it) and became ovsdb-server
        argv = _cmdline(running.process.pid)
        assert argv == ["ovsdb-server", *layer[3:], f"/var/lib/ovn/{name}.db"]
        assert f"--remote=pssl:{port}" in argv and "--private-key=/etc/ovn/tls/key.pem" in argv
        text = ovn(cloud, container, "ovs-appctl", "-t", f"/run/ovn/{name}.ctl", "cluster/status", schema)
        assert "Status: cluster member" in text and f"Address: ssl:{pod}:{raft}" in text
    northd = _cmdline(cloud.machine.processes[((UNIT, "ovn-northd"), "ovn-northd")].process.pid)
    assert f"--ovnnb-db=ssl:{pod}:6641" in northd and f"--ovnsb-db=ssl:{pod}:6642" in northd
    assert "Status: active" in ovn(
        cloud, "ovn-northd", "ovn-appctl", "-t", "/run/ovn/ovn-northd.ctl", "status"
    )


def test_a_logical_switch_written_in_the_nb_reaches_the_sb_through_northd(cloud: Cloud) -> None:
    address = cloud.machine.address(UNIT)
    nb, sb = f"--db=ssl:{address}:6641", f"--db=ssl:{address}:6642"
    ovn(cloud, "ovn-nb-db-server", "ovn-nbctl", nb, *TLS, "ls-add", "functional-net")
    assert "functional-net" in ovn(cloud, "ovn-nb-db-server", "ovn-nbctl", nb, *TLS, "show")
    deadline = time.monotonic() + 30
    while True:
        rows = ovn(
            cloud,
            "ovn-sb-db-server",
            "ovn-sbctl",
            sb,
            *TLS,
            "--format=json",
            "--columns=external_ids",
            "list",
            "Datapath_Binding",
        )
        if "functional-net" in rows:
            break
        assert time.monotonic() < deadline, f"northd did not translate the switch: {rows}"
        time.sleep(0.5)
    names = [dict(row[0][1]).get("name") for row in json.loads(rows)["data"]]
    assert "functional-net" in names
    ovn(cloud, "ovn-nb-db-server", "ovn-nbctl", nb, *TLS, "ls-del", "functional-net")


def test_the_databases_refuse_a_client_without_a_certificate(cloud: Cloud) -> None:
    address = cloud.machine.address(UNIT)
    code, _, _ = cloud.execute(
        UNIT, "ovn-nb-db-server", ["ovn-nbctl", "--timeout=5", f"--db=ssl:{address}:6641", "show"]
    )
    assert code != 0, "an ssl client without key and certificate was served"
    code, _, _ = cloud.execute(
        UNIT, "ovn-nb-db-server", ["ovn-nbctl", "--timeout=5", f"--db=tcp:{address}:6641", "show"]
    )
    assert code != 0, "plain TCP was served beside TLS"
