"""PebbleApplier: files pushed only when changed, only affected services restarted."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any, ClassVar

import ops
import pytest
from openstack_charms.pebble import MANIFEST, PebbleApplier, layer
from openstack_charms.plan import Check, Command, Directory, File, Service, Workload
from openstack_charms.testing import container
from ops import testing

META = {"name": "demo", "containers": {"app": {"resource": "app-image"}}}


class Recorder:
    """Counts the Pebble operations the applier performs."""

    def __init__(self) -> None:
        self.calls: list[str] = []


class DemoCharm(ops.CharmBase):
    """Applies whatever workload the test puts on the class."""

    workload: ClassVar[Workload]
    start: ClassVar[bool] = True
    acted: ClassVar[set[str]] = set()

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.config_changed, self._apply)

    def _apply(self, _: ops.EventBase) -> None:
        applier = PebbleApplier(self.unit.get_container("app"), self.workload)
        DemoCharm.acted = applier.apply(start=self.start)


def workload(conf: str = "a = 1", env: str = "x") -> Workload:
    return Workload(
        "app",
        services=[
            Service("api", "uwsgi --ini /etc/app/uwsgi.ini", user="app", environment={"E": env}),
            Service("worker", "app-worker", user="app"),
        ],
        checks=[Check.http("api-up", "http://localhost:80/", restarts=("api",))],
        files=[
            File("/etc/app/app.conf", conf, user="app", group="app"),
            File("/etc/app/uwsgi.ini", "[uwsgi]", restarts=("api",)),
        ],
    )


def run(state: testing.State, wl: Workload, start: bool = True) -> tuple[testing.State, set[str], Any]:
    DemoCharm.workload = wl
    DemoCharm.start = start
    ctx = testing.Context(DemoCharm, meta=META)
    out = ctx.run(ctx.on.config_changed(), state)
    return out, DemoCharm.acted, ctx


@pytest.fixture
def fresh(tmp_path: Path) -> testing.State:
    return testing.State(containers={container("app", tmp_path)})


def test_first_apply_pushes_files_and_starts_every_service(fresh: testing.State) -> None:
    out, acted, ctx = run(fresh, workload())
    container = out.get_container("app")
    root = container.get_filesystem(ctx)
    assert (root / "etc/app/app.conf").read_text() == "a = 1"
    assert acted == {"api", "worker"}
    assert container.service_statuses == {
        "api": ops.pebble.ServiceStatus.ACTIVE,
        "worker": ops.pebble.ServiceStatus.ACTIVE,
    }
    layer = container.layers["charm"].to_dict()
    assert layer["services"]["api"]["command"] == "uwsgi --ini /etc/app/uwsgi.ini"
    assert layer["services"]["api"]["user"] == "app"
    assert layer["checks"]["api-up"]["http"] == {"url": "http://localhost:80/"}
    assert layer["services"]["api"]["on-check-failure"] == {"api-up": "restart"}
    assert "on-check-failure" not in layer["services"]["worker"]
    manifest = json.loads((root / MANIFEST.lstrip("/")).read_text())
    assert manifest["started"] == ["api", "worker"]


def test_unchanged_workload_touches_nothing(fresh: testing.State) -> None:
    once, _, _ = run(fresh, workload())
    twice, acted, _ = run(once, workload())
    assert acted == set()
    assert twice.get_container("app").layers == once.get_container("app").layers


def test_changed_file_restarts_only_the_services_it_names(fresh: testing.State) -> None:
    once, _, _ = run(fresh, workload())
    wl = workload()
    wl = Workload(
        wl.target,
        wl.services,
        wl.checks,
        [wl.files[0], File("/etc/app/uwsgi.ini", "[uwsgi]\nx=1", restarts=("api",))],
    )
    _, acted, _ = run(once, wl)
    assert acted == {"api"}


def test_changed_shared_file_restarts_every_service(fresh: testing.State) -> None:
    once, _, _ = run(fresh, workload())
    out, acted, ctx = run(once, workload(conf="a = 2"))
    assert acted == {"api", "worker"}
    assert (out.get_container("app").get_filesystem(ctx) / "etc/app/app.conf").read_text() == "a = 2"


def test_layer_change_replans(fresh: testing.State) -> None:
    once, _, _ = run(fresh, workload())
    out, _, _ = run(once, workload(env="y"))
    assert out.get_container("app").layers["charm"].to_dict()["services"]["api"]["environment"] == {"E": "y"}


def test_files_pushed_but_nothing_started_until_asked(fresh: testing.State) -> None:
    out, acted, ctx = run(fresh, workload(), start=False)
    assert acted == set()
    assert (out.get_container("app").get_filesystem(ctx) / "etc/app/app.conf").exists()
    assert not out.get_container("app").service_statuses
    _started, acted, _ = run(out, workload(), start=True)
    assert acted == {"api", "worker"}


def test_file_no_longer_declared_is_removed(fresh: testing.State) -> None:
    once, _, _ = run(fresh, workload())
    wl = workload()
    out, _, ctx = run(once, Workload(wl.target, wl.services, wl.checks, wl.files[:1]))
    assert not (out.get_container("app").get_filesystem(ctx) / "etc/app/uwsgi.ini").exists()


def test_recreated_container_gets_everything_again(fresh: testing.State) -> None:
    run(fresh, workload())
    new_pod = testing.State(containers={container("app")})  # empty filesystem, no manifest
    out, acted, ctx = run(new_pod, workload())
    assert acted == {"api", "worker"}
    assert (out.get_container("app").get_filesystem(ctx) / "etc/app/app.conf").read_text() == "a = 1"


def test_unreachable_pebble_is_waiting_not_a_crash() -> None:
    state = testing.State(containers={testing.Container("app", can_connect=False)})

    class Charm(DemoCharm):
        def _apply(self, _: ops.EventBase) -> None:
            from openstack_charms.status import Waiting

            try:
                PebbleApplier(self.unit.get_container("app"), workload()).apply(start=True)
            except Waiting as e:
                self.unit.status = e.status()

    ctx = testing.Context(Charm, meta=META)
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for container app (Pebble)")


def test_failed_command_becomes_waiting_with_its_name() -> None:
    from openstack_charms.status import Waiting

    class Charm(DemoCharm):
        def _apply(self, _: ops.EventBase) -> None:
            try:
                PebbleApplier(self.unit.get_container("app"), workload()).run(
                    Command(("app-manage", "db_sync", "--secret=x"), user="app")
                )
            except Waiting as e:
                self.unit.status = e.status()

    state = testing.State(
        containers={
            testing.Container(
                "app", can_connect=True, execs={testing.Exec(["app-manage"], return_code=1, stderr="boom")}
            )
        }
    )
    ctx = testing.Context(Charm, meta=META)
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("app-manage db_sync failed (exit code 1); will retry")
    assert "--secret=x" not in str(out.unit_status)


def test_declared_directories_are_made_with_their_mode_before_files(tmp_path: Path) -> None:
    wl = workload()
    keys = Workload(
        wl.target,
        wl.services,
        wl.checks,
        [*wl.files, File("/etc/app/keys/0", "secret", permissions=0o600)],
        [Directory("/etc/app/keys", "root", "root", 0o700)],
    )
    out, _, ctx = run(testing.State(containers={container("app", tmp_path)}), keys)
    root = out.get_container("app").get_filesystem(ctx)
    assert stat.S_IMODE((root / "etc/app/keys").stat().st_mode) == 0o700
    assert (root / "etc/app/keys/0").read_text() == "secret"
    manifest = json.loads((root / MANIFEST.lstrip("/")).read_text())
    assert list(manifest["dirs"]) == ["/etc/app/keys"]


def test_files_changed_before_a_start_restart_their_services_at_the_start(tmp_path: Path) -> None:
    # the charms' flow: push files, run the leader's work, then start
    class Charm(DemoCharm):
        def _apply(self, _: ops.EventBase) -> None:
            applier = PebbleApplier(self.unit.get_container("app"), self.workload)
            applier.apply(start=False, record=False)
            DemoCharm.acted = applier.apply(start=True)

    state = testing.State(containers={container("app", tmp_path)})
    once, _, _ = run(state, workload())
    Charm.workload = workload(conf="a = 2")
    ctx = testing.Context(Charm, meta=META)
    ctx.run(ctx.on.config_changed(), once)
    assert DemoCharm.acted == {"api", "worker"}


def test_layer_is_built_from_the_declared_workload_alone() -> None:
    wl = Workload(
        "app",
        services=[Service("api", "app-api", user="app", group="app", summary="the API")],
        checks=[
            Check.http("api-up", "https://localhost:8443/v3", level="alive", restarts=("api",)),
            Check.exec("queue", "app-status --queue", user="app"),
            Check.tcp("port", 5672, "broker"),
        ],
    )
    assert layer(wl) == {
        "summary": "app managed by its charm",
        "services": {
            "api": {
                "override": "replace",
                "summary": "the API",
                "command": "app-api",
                "startup": "enabled",
                "user": "app",
                "group": "app",
                "on-check-failure": {"api-up": "restart"},
            }
        },
        "checks": {
            "api-up": {
                "override": "replace",
                "level": "alive",
                "period": "10s",
                "threshold": 3,
                "http": {"url": "https://localhost:8443/v3"},
            },
            "queue": {
                "override": "replace",
                "level": "ready",
                "period": "10s",
                "threshold": 3,
                "exec": {"command": "app-status --queue", "user": "app"},
            },
            "port": {
                "override": "replace",
                "level": "ready",
                "period": "10s",
                "threshold": 3,
                "tcp": {"port": 5672, "host": "broker"},
            },
        },
    }
    assert "checks" not in layer(Workload("app", services=wl.services))


def test_workloads_of_one_target_merge_and_of_two_targets_refuse() -> None:
    merged = workload() + Workload("app", files=[File("/etc/app/extra.conf", "x")])
    assert [f.path for f in merged.files] == [
        "/etc/app/app.conf",
        "/etc/app/uwsgi.ini",
        "/etc/app/extra.conf",
    ]
    assert [s.name for s in merged.services] == ["api", "worker"]
    with pytest.raises(ValueError, match="cannot merge"):
        workload() + Workload("other")


def test_a_directory_without_parents_waits_for_its_missing_storage() -> None:
    class Charm(DemoCharm):
        def _apply(self, _: ops.EventBase) -> None:
            from openstack_charms.status import Waiting

            wl = Workload("app", directories=[Directory("/srv/images/store", "app", make_parents=False)])
            try:
                PebbleApplier(self.unit.get_container("app"), wl, {"/srv/images": "images"}).apply(start=True)
            except Waiting as e:
                self.unit.status = e.status()

    ctx = testing.Context(Charm, meta=META)
    out = ctx.run(
        ctx.on.config_changed(), testing.State(containers={testing.Container("app", can_connect=True)})
    )
    assert out.unit_status == testing.WaitingStatus("waiting for storage images at /srv/images")
