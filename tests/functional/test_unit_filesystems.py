"""Each unit's containers have a filesystem of their own: the machine's files are read, never changed."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest
from openstack_charms.sandbox.cloud import Cloud
from openstack_charms.sandbox.containers import Machine

#: what the charms write, in their containers only
SERVICE_PATHS = ("/etc/keystone", "/etc/glance", "/etc/placement", "/var/lib/glance", "/run/openstack-charm")
SERVICE_USERS = ("keystone", "glance", "placement")


def _host_has_user(name: str) -> bool:
    return subprocess.run(["getent", "passwd", name], capture_output=True, check=False).returncode == 0


def test_the_cloud_changed_nothing_on_the_machine(cloud: Cloud) -> None:
    assert [p for p in SERVICE_PATHS if os.path.lexists(p)] == []
    assert [u for u in SERVICE_USERS if _host_has_user(u)] == []
    conf = cloud.machine.path("keystone", "keystone", "/etc/keystone/keystone.conf")
    assert conf.is_file()
    assert conf.stat().st_uid == cloud.machine.uid("keystone", "keystone", "keystone")
    # each container has only the users its own image would have
    with pytest.raises(KeyError):
        cloud.machine.uid("glance", "glance", "keystone")
    # the charm's manifest of what it applied is its container's own
    assert cloud.machine.path("keystone", "keystone", "/run/openstack-charm/manifest.json").is_file()
    # the storage volume is mounted in glance's container, not on the machine
    assert cloud.machine.path("glance", "glance", "/var/lib/glance/images").is_dir()


def test_a_container_sees_the_machine_but_writes_its_own(venv: pathlib.Path, tmp_path: pathlib.Path) -> None:
    machine = Machine(venv, tmp_path, tmp_path / "units")
    key = ("probe/0", "workload")
    try:
        container = machine.add_container(*key, {"data": "/var/lib/probe/data"})
        machine.write(
            key,
            "/etc/probe/probe.conf",
            b"[DEFAULT]\n",
            make_dirs=True,
            permissions=0o640,
            user="probe",
            group=None,
        )
        # /var/run -> /run is an absolute symlink: followed in the container, not on the machine
        machine.write(
            key, "/var/run/probe.pid", b"1\n", make_dirs=False, permissions=None, user=None, group=None
        )
        # a new volume is root's, as Juju's are
        machine.write(
            key, "/var/lib/probe/data/x", b"", make_dirs=False, permissions=None, user=None, group=None
        )
        code, out, err = machine.run(
            key,
            ["sh", "-c", "id -un; cat /etc/probe/probe.conf /run/probe.pid; test ! -w /var/lib/probe/data"],
            environment=None,
            user="probe",
            group=None,
            timeout=30,
            working_dir=None,
        )
        assert (code, out, err) == (0, "probe\n[DEFAULT]\n1\n", "")
        # the machine's files are there, the container's are not on the machine
        assert container.path("/var/tmp").is_dir() and container.path("/etc/os-release").is_file()
        assert not os.path.lexists("/etc/probe") and not os.path.lexists("/run/probe.pid")
        assert not _host_has_user("probe")
        assert (tmp_path / "units" / "probe-0" / "storage" / "data" / "x").is_file()
        machine.start(key, "sleeper", {"command": "sleep 600", "user": "probe"})
        holder = container.holder.pid
        service = machine.processes[(key, "sleeper")].process.pid
    finally:
        machine.cleanup()
    assert not pathlib.Path(f"/proc/{holder}").exists()
    assert not pathlib.Path(f"/proc/{service}").exists()
    assert not (tmp_path / "units").exists()
