"""The machine side of the library through a machine charm (tests/charms/demo-host) on a fake host."""

from __future__ import annotations

import dataclasses
import pathlib

from openstack_charms.testing import charm_context, complete_state
from ops import testing


def test_a_machine_charm_installs_writes_and_starts_what_it_declares(tmp_path: pathlib.Path) -> None:
    ctx = charm_context("demo-host", root=tmp_path)
    host = ctx.host  # type: ignore[attr-defined]
    out = ctx.run(ctx.on.config_changed(), complete_state("demo-host"))
    assert out.unit_status == testing.ActiveStatus()
    assert host.installed == {"demo-daemon": "1.2-1"}
    conf = host.read_text("/etc/demo/demo.conf")
    assert "transport_url = rabbit://demo:" in conf
    assert host.mode("/etc/demo/demo.conf") == 0o640
    assert host.running_services == {"demo-daemon", "demo-agent"}
    # the agent's unit is written from its declaration; the daemon's comes with its package
    unit = host.read_text("/etc/systemd/system/demo-agent.service")
    assert "ExecStart=" in unit and "/usr/bin/demo-agent" in unit and "User=demo" in unit
    assert not host.path("/etc/systemd/system/demo-daemon.service").exists()


def test_a_config_change_restarts_only_what_reads_the_changed_file(tmp_path: pathlib.Path) -> None:
    ctx = charm_context("demo-host", root=tmp_path)
    host = ctx.host  # type: ignore[attr-defined]
    settled = ctx.run(ctx.on.config_changed(), complete_state("demo-host"))
    host.calls.clear()
    starts = dict(host.starts)
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(settled, config={"debug": True}))
    assert out.unit_status == testing.ActiveStatus()
    assert "debug = true" in host.read_text("/etc/demo/demo.conf")
    assert not [c for c in host.calls if c[0] in ("install_apt", "install_snap")], host.calls
    # both services read demo.conf (restarts=None: every service of the host)
    assert {n: host.starts[n] - starts[n] for n in starts} == {"demo-daemon": 1, "demo-agent": 1}


def test_a_machine_asks_for_a_certificate_for_its_own_names(tmp_path: pathlib.Path) -> None:
    import socket

    ctx = charm_context("demo-host", root=tmp_path)
    with ctx(ctx.on.update_status(), complete_state("demo-host")) as manager:
        manager.run()
        common_name, names = manager.charm.certificate_names()
    assert common_name == socket.getfqdn()
    assert names[0] == common_name and socket.getfqdn().split(".")[0] in names
