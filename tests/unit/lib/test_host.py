"""The host applier: packages once at their pin, owned files, only the changed services restarted."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openstack_charms import host as host_module
from openstack_charms import units as units_module
from openstack_charms.host import Completed, HostApplier, HostError, SystemHost
from openstack_charms.plan import HOST, Apt, Command, Directory, File, Service, Snap, Workload
from openstack_charms.status import Blocked, Waiting
from openstack_charms.testing.host import FakeHost
from openstack_charms.units import ProcessServices, load_unit

UNIT = "/etc/systemd/system/api.service"


def workload(**changes: Any) -> Workload:
    base: dict[str, Any] = {
        "packages": (Apt("tinyproxy", "1.11.1-2.1+deb12u1"), Snap("lxd", "5.21/stable")),
        "directories": (Directory("/var/lib/api", user="api", permissions=0o750),),
        "files": (
            File("/etc/api/api.conf", "debug = false\n", user="root", group="api", restarts=("api",)),
            File("/etc/api/worker.conf", "workers = 2\n", restarts=("worker",)),
            File("/etc/api/keys/fernet", "k1\n", user="api", permissions=0o600, restarts=()),
            File(UNIT, "[Service]\nExecStart=/usr/bin/api\n", permissions=0o644, restarts=("api",)),
        ),
        "services": (Service("api"), Service("worker")),
    }
    base.update(changes)
    return Workload(HOST, **base)


@pytest.fixture
def fake(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "root", archive={"tinyproxy": "1.11.1-2.1+deb12u1"})


def applier(fake: FakeHost, tmp_path: Path, w: Workload | None = None) -> HostApplier:
    """A new applier per hook, as each hook is a new process."""
    return HostApplier(w or workload(), tmp_path / "state", fake)


def test_first_apply_installs_writes_and_starts(fake: FakeHost, tmp_path: Path) -> None:
    acted = applier(fake, tmp_path).apply(start=True)
    assert acted == {"api", "worker"}
    assert fake.installed == {"tinyproxy": "1.11.1-2.1+deb12u1"}
    assert set(fake.snaps) == {"lxd"}
    assert fake.read_text("/etc/api/api.conf") == "debug = false\n"
    assert fake.mode("/etc/api/api.conf") == 0o640
    assert fake.mode("/etc/api/keys/fernet") == 0o600
    assert fake.mode("/var/lib/api") == 0o750
    assert fake.owner("/etc/api/keys/fernet") == fake.ids("api", "api")
    assert fake.running_services == {"api", "worker"}
    # packages first (they make users and ship units), the unit file reloaded before any start
    ops = [c[0] for c in fake.calls]
    assert ops.index("apt") < ops.index("mkdir") < ops.index("write") < ops.index("daemon-reload")
    assert ops.index("daemon-reload") < ops.index("start")
    manifest = tmp_path / "state" / "manifest.json"
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
    assert "k1" not in manifest.read_text()


def test_packages_are_installed_once_at_their_pin(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    applier(fake, tmp_path).apply(start=True)
    assert [c for c in fake.calls if c[0] in ("apt", "snap")] == [
        ("apt", "tinyproxy", "1.11.1-2.1+deb12u1"),
        ("snap", "lxd", "5.21/stable", ""),
    ]
    fake.archive = {"tinyproxy": "1.11.2-1"}
    fake.calls.clear()
    applier(
        fake, tmp_path, workload(packages=(Apt("tinyproxy", "1.11.2-1"), Snap("lxd", "5.21/stable")))
    ).apply(start=True)
    assert fake.calls == [("apt", "tinyproxy", "1.11.2-1")]
    assert fake.installed["tinyproxy"] == "1.11.2-1"


def test_steady_apply_makes_no_backend_call_and_reads_no_file(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    manifest = tmp_path / "state" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    fake.calls.clear()
    fake.reads.clear()
    fake.stats = 0
    assert applier(fake, tmp_path).apply(start=True) == set()
    assert fake.calls == []
    assert fake.reads == []
    # one stat per declared file and directory, nothing else
    assert fake.stats == 5
    assert manifest.stat().st_mtime_ns == before


def test_a_changed_file_restarts_only_its_services(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    fake.calls.clear()
    files = list(workload().files)
    files[1] = File("/etc/api/worker.conf", "workers = 4\n", restarts=("worker",))
    assert applier(fake, tmp_path, workload(files=tuple(files))).apply(start=True) == {"worker"}
    assert fake.calls == [("write", "/etc/api/worker.conf"), ("restart", "worker")]


def test_restarts_none_restarts_every_service_and_empty_none(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    files = list(workload().files)
    files[0] = File("/etc/api/api.conf", "debug = true\n", group="api", restarts=None)
    assert applier(fake, tmp_path, workload(files=tuple(files))).apply(start=True) == {"api", "worker"}
    files[2] = File("/etc/api/keys/fernet", "k2\n", user="api", permissions=0o600, restarts=())
    assert applier(fake, tmp_path, workload(files=tuple(files))).apply(start=True) == set()


def test_restart_waits_for_a_start_even_in_a_later_hook(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    files = list(workload().files)
    files[1] = File("/etc/api/worker.conf", "workers = 8\n", restarts=("worker",))
    changed = workload(files=tuple(files))
    assert applier(fake, tmp_path, changed).apply(start=False) == set()
    assert ("restart", "worker") not in fake.calls
    assert applier(fake, tmp_path, changed).apply(start=True) == {"worker"}
    assert applier(fake, tmp_path, changed).apply(start=True) == set()


def test_record_false_keeps_the_manifest_until_record(fake: FakeHost, tmp_path: Path) -> None:
    a = applier(fake, tmp_path)
    a.apply(start=False, record=False)
    assert not (tmp_path / "state" / "manifest.json").exists()
    a.apply(start=True, record=False)
    a.record()
    fake.calls.clear()
    applier(fake, tmp_path).apply(start=True)
    assert fake.calls == []


def test_content_drift_is_rewritten_and_restarts(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    fake.calls.clear()
    fake.path("/etc/api/api.conf").write_text("debug = true\n")
    assert applier(fake, tmp_path).apply(start=True) == {"api"}
    assert fake.calls == [("write", "/etc/api/api.conf"), ("restart", "api")]
    assert fake.read_text("/etc/api/api.conf") == "debug = false\n"


def test_a_removed_file_is_written_again(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    fake.calls.clear()
    fake.path("/etc/api/keys/fernet").unlink()
    applier(fake, tmp_path).apply(start=True)
    assert fake.calls == [("write", "/etc/api/keys/fernet")]
    assert fake.read_text("/etc/api/keys/fernet") == "k1\n"


def test_owner_and_mode_drift_is_repaired_without_a_restart(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    fake.calls.clear()
    fake.drift("/etc/api/keys/fernet", mode=0o644)
    fake.drift("/etc/api/api.conf", uid=4242)
    fake.drift("/var/lib/api", gid=4242, mode=0o777)
    assert applier(fake, tmp_path).apply(start=True) == set()
    assert sorted(fake.calls) == [
        ("chown", "/etc/api/api.conf", "root:api", "640"),
        ("chown", "/etc/api/keys/fernet", "api:api", "600"),
        ("chown", "/var/lib/api", "api:api", "750"),
    ]
    assert fake.mode("/etc/api/keys/fernet") == 0o600
    assert fake.owner("/etc/api/api.conf") == fake.ids("root", "api")
    fake.calls.clear()
    applier(fake, tmp_path).apply(start=True)
    assert fake.calls == []


def test_a_touched_file_with_the_same_content_is_only_recorded(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    fake.calls.clear()
    os.utime(fake.path("/etc/api/api.conf"))
    assert applier(fake, tmp_path).apply(start=True) == set()
    assert fake.calls == []
    assert fake.reads == [*fake.reads[:-1], "/etc/api/api.conf"]


def test_a_lost_manifest_checks_everything_but_restarts_nothing(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    (tmp_path / "state" / "manifest.json").write_text("{not json")
    fake.calls.clear()
    applier(fake, tmp_path).apply(start=True)
    # the packages are asked for again (installing what is installed is dpkg's no-op), nothing else changes
    assert [c[0] for c in fake.calls] == ["apt", "snap", "running", "running"]


def test_make_parents_false_waits_for_the_parent(fake: FakeHost, tmp_path: Path) -> None:
    w = workload(directories=(Directory("/srv/data/api", user="api", make_parents=False),))
    with pytest.raises(Waiting) as e:
        applier(fake, tmp_path, w).apply(start=True)
    assert "/srv/data" in e.value.message and "/srv/data/api" in e.value.message
    assert not any(c[0] in ("write", "start") for c in fake.calls)
    fake.path("/srv/data").mkdir(parents=True)
    applier(fake, tmp_path, w).apply(start=True)
    assert fake.path("/srv/data/api").is_dir()


def test_make_parents_true_makes_them(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path, workload(directories=(Directory("/srv/a/b/c"),))).apply(start=False)
    assert fake.path("/srv/a/b/c").is_dir()


def test_daemon_reload_only_when_a_unit_file_changes(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    files = list(workload().files)
    files[1] = File("/etc/api/worker.conf", "workers = 3\n", restarts=("worker",))
    fake.calls.clear()
    applier(fake, tmp_path, workload(files=tuple(files))).apply(start=True)
    assert ("daemon-reload",) not in fake.calls
    files[3] = File(UNIT, "[Service]\nExecStart=/usr/bin/api --fast\n", permissions=0o644, restarts=("api",))
    fake.calls.clear()
    applier(fake, tmp_path, workload(files=tuple(files))).apply(start=True)
    assert fake.calls == [("write", UNIT), ("daemon-reload",), ("restart", "api")]


def test_stale_files_are_removed_and_stale_services_stopped(fake: FakeHost, tmp_path: Path) -> None:
    applier(fake, tmp_path).apply(start=True)
    fake.calls.clear()
    w = workload(files=workload().files[:3], services=(Service("worker"),))
    applier(fake, tmp_path, w).apply(start=True)
    assert fake.calls == [("remove", UNIT), ("daemon-reload",), ("stop", "api")]
    assert not fake.path(UNIT).exists()


def test_a_service_already_running_is_adopted_without_a_restart(fake: FakeHost, tmp_path: Path) -> None:
    fake.running_services.add("api")
    w = workload(files=(), directories=())
    assert applier(fake, tmp_path, w).apply(start=True) == {"worker"}
    assert ("start", "api") not in fake.calls


def test_a_missing_package_blocks_naming_it(fake: FakeHost, tmp_path: Path) -> None:
    w = workload(packages=(Apt("tinyproxy", "9.9"),))
    with pytest.raises(Blocked, match=r"^apt package tinyproxy=9\.9 is not in the archive$"):
        applier(fake, tmp_path, w).apply(start=True)


def test_a_failing_service_waits_naming_it_and_keeps_progress(fake: FakeHost, tmp_path: Path) -> None:
    fake.failures[("start", "worker")] = HostError("service worker did not start; will retry")
    with pytest.raises(Waiting, match=r"^service worker did not start; will retry$"):
        applier(fake, tmp_path).apply(start=True)
    del fake.failures[("start", "worker")]
    fake.calls.clear()
    assert applier(fake, tmp_path).apply(start=True) == {"worker"}
    assert fake.calls == [("running", "worker"), ("start", "worker")]


def test_a_failed_apply_records_its_progress_even_without_record(fake: FakeHost, tmp_path: Path) -> None:
    fake.failures[("start", "api")] = HostError("service api did not start; will retry")
    with pytest.raises(Waiting):
        applier(fake, tmp_path).apply(start=True, record=False)
    del fake.failures[("start", "api")]
    fake.calls.clear()
    applier(fake, tmp_path).apply(start=True)
    assert fake.calls == [("running", "api"), ("start", "api"), ("running", "worker"), ("start", "worker")]


def test_a_missing_user_waits(tmp_path: Path) -> None:
    fake = FakeHost(tmp_path / "root", users={"root": 0}, groups={"root": 0})
    w = Workload(HOST, files=(File("/etc/api.conf", "x\n", user="api"),))
    with pytest.raises(Waiting, match=r"^waiting for user api to exist$"):
        HostApplier(w, tmp_path / "state", fake).apply(start=True)


def test_host_errors_are_single_lines() -> None:
    assert HostError("first line\nsecond line").status().message == "first line"
    assert isinstance(HostError("x", retry=False).status(), Blocked)


def test_a_container_workload_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"keystone"):
        HostApplier(Workload("keystone"), tmp_path)


def test_run_returns_the_output(fake: FakeHost, tmp_path: Path) -> None:
    fake.commands["keystone-manage"] = lambda c: Completed(0, "synced\n", "")
    assert applier(fake, tmp_path).run(Command(("keystone-manage", "db_sync"))) == "synced\n"


def test_run_failure_waits_and_logs_neither_argv_nor_environment(
    fake: FakeHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.commands["keystone-manage"] = lambda c: Completed(3, "", "Traceback\nboom: table exists\n")
    command = Command(
        ("keystone-manage", "bootstrap", "--bootstrap-password", "s3cret"), environment={"PW": "p4ss"}
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(Waiting) as e:
        applier(fake, tmp_path).run(command)
    assert e.value.message == "keystone-manage bootstrap failed (exit code 3); will retry"
    assert "boom: table exists" in caplog.text
    assert "s3cret" not in caplog.text and "p4ss" not in caplog.text and "Traceback" not in caplog.text


# the real backend, on what needs no root and changes nothing outside tmp_path


def test_system_host_writes_atomically_with_mode(tmp_path: Path) -> None:
    import grp
    import pwd

    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    backend = SystemHost(tmp_path / "state")
    path = str(tmp_path / "etc" / "x.conf")
    st = backend.write(path, b"a = 1\n", me, group, 0o640)
    assert Path(path).read_text() == "a = 1\n"
    assert stat.S_IMODE(st.mode) == 0o640 and backend.stat(path) == st
    assert not list((tmp_path / "etc").glob(".*"))
    os.chmod(path, 0o644)
    assert backend.stat(path) != st
    assert backend.read(str(tmp_path)) is None
    with pytest.raises(HostError, match=r"waiting for user no-such-user to exist"):
        backend.write(path, b"", "no-such-user", group, 0o600)


def test_system_host_run_uses_the_command_environment(tmp_path: Path) -> None:
    backend = SystemHost(tmp_path)
    done = backend.run(
        Command((sys.executable, "-c", "import os; print(os.environ['X'])"), environment={"X": "y"})
    )
    assert done == Completed(0, "y\n", "")
    with pytest.raises(HostError, match=r"timed out after 0\.2 s"):
        backend.run(Command((sys.executable, "-c", "import time; time.sleep(5)"), timeout=0.2))


class FakeApt:
    """charmlibs.apt's surface the backend uses, with an archive that appears after a refresh."""

    class PackageNotFoundError(Exception):
        pass

    class PackageError(Exception):
        def __init__(self, message: str) -> None:
            self.message = message

    class PackageState:
        Present = "present"

    def __init__(self, known_after_update: bool, install_fails: bool = False) -> None:
        self.updates = 0
        self.known_after_update = known_after_update
        self.install_fails = install_fails
        self.ensured: list[str] = []
        fake = self

        class DebianPackage:
            def __init__(self, name: str) -> None:
                self.name = name

            @staticmethod
            def from_system(name: str, version: str) -> DebianPackage:
                if not (fake.updates and fake.known_after_update):
                    raise FakeApt.PackageNotFoundError(name)
                return DebianPackage(f"{name}={version}")

            def ensure(self, state: str) -> None:
                if fake.install_fails:
                    raise FakeApt.PackageError("E: Could not get lock\nE: dpkg was interrupted")
                fake.ensured.append(self.name)

        self.DebianPackage = DebianPackage

    def update(self) -> None:
        self.updates += 1


@pytest.fixture
def fake_apt(monkeypatch: pytest.MonkeyPatch) -> Any:
    import charmlibs

    def install(known_after_update: bool, install_fails: bool = False) -> FakeApt:
        apt = FakeApt(known_after_update, install_fails)
        monkeypatch.setitem(sys.modules, "charmlibs.apt", apt)
        monkeypatch.setattr(charmlibs, "apt", apt, raising=False)
        return apt

    return install


def test_apt_refreshes_the_cache_once_when_the_pin_is_not_found(fake_apt: Any, tmp_path: Path) -> None:
    apt = fake_apt(known_after_update=True)
    SystemHost(tmp_path).install_apt("tinyproxy", "1.11.1-2.1+deb12u1")
    assert apt.updates == 1 and apt.ensured == ["tinyproxy=1.11.1-2.1+deb12u1"]


def test_apt_blocks_when_the_pin_is_not_there_after_a_refresh(fake_apt: Any, tmp_path: Path) -> None:
    apt = fake_apt(known_after_update=False)
    with pytest.raises(HostError, match=r"^apt package tinyproxy=9 is not in the archive$") as e:
        SystemHost(tmp_path).install_apt("tinyproxy", "9")
    assert apt.updates == 1 and e.value.retry is False


def test_apt_install_failure_waits(fake_apt: Any, tmp_path: Path) -> None:
    fake_apt(known_after_update=True, install_fails=True)
    with pytest.raises(HostError, match=r"^installing apt package tinyproxy=1 failed; will retry$") as e:
        SystemHost(tmp_path).install_apt("tinyproxy", "1")
    assert e.value.retry is True


def test_a_steady_hook_imports_no_package_library(fake: FakeHost, tmp_path: Path) -> None:
    """Each hook is a new process: the steady one must not pay for charmlibs' imports."""
    applier(fake, tmp_path).apply(start=True)
    code = (
        "import sys, pathlib\n"
        "from openstack_charms.host import HostApplier\n"
        "from openstack_charms.testing.host import FakeHost\n"
        "from test_host import workload\n"
        f"fake = FakeHost({str(fake.root)!r})\n"
        f"fake.owners = {fake.owners!r}\n"
        f"HostApplier(workload(), {str(tmp_path / 'state')!r}, fake).apply(start=True)\n"
        "assert fake.calls == [], fake.calls\n"
        "print(sorted(m for m in sys.modules if m.startswith('charmlibs')))\n"
    )
    libs = Path(host_module.__file__).parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(libs), str(Path(__file__).parent)]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# services without systemd: the unit file read as systemd reads it


def write_unit(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)


def test_load_unit_takes_the_charms_unit_first_and_applies_drop_ins(tmp_path: Path) -> None:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    write_unit(lib, "svc.service", "[Service]\nExecStart=/bin/lib\n")
    write_unit(lib / "svc.service.d", "10-env.conf", "[Service]\nEnvironment=A=1\n")
    assert load_unit("svc", [str(etc), str(lib)]).all("ExecStart") == ["/bin/lib"]
    write_unit(
        etc, "svc.service", "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/etc \\\n  --flag\nUser=nobody\n"
    )
    write_unit(etc / "svc.service.d", "20-override.conf", "[Service]\nExecStart=\nExecStart=/bin/override\n")
    unit = load_unit("svc", [str(etc), str(lib)])
    assert unit.path == str(etc / "svc.service")
    assert unit.all("ExecStart") == ["/bin/override"]
    assert unit.all("Environment") == ["A=1"]
    assert unit.get("User") == "nobody"
    with pytest.raises(HostError, match=r"service nope has no unit file"):
        load_unit("nope", [str(etc)])


def test_process_services_run_exactly_what_the_unit_declares(tmp_path: Path) -> None:
    units = tmp_path / "units"
    out = tmp_path / "out.json"
    env_file = tmp_path / "default"
    env_file.write_text("# defaults\nFLAGS=\"--one --two\"\nQUOTED='a b'\n")
    script = (
        "import json, os, sys, time; "
        "seen = {'argv': sys.argv[1:], 'env': dict(os.environ), 'cwd': os.getcwd()}; "
        f"json.dump(seen, open('{out}.tmp', 'w')); os.replace('{out}.tmp', '{out}'); "
        "time.sleep(60)"
    )
    write_unit(
        units,
        "demo.service",
        "[Service]\n"
        f"EnvironmentFile=-{tmp_path}/missing\n"
        f"EnvironmentFile={env_file}\n"
        'Environment="GREETING=hello world" FLAGS=overridden\n'
        f"WorkingDirectory={tmp_path}\n"
        f'ExecStart={sys.executable} -c "{script}" $FLAGS ${{GREETING}} %n $$HOME\n'
        "KillMode=process\n",
    )
    services = ProcessServices(tmp_path / "state", [str(units)])
    assert not services.running("demo")
    services.start("demo")
    try:
        first = services.pid("demo")
        assert first is not None and services.running("demo")
        # written whole (renamed into place); a busy machine may take seconds to start Python
        for _ in range(1500):
            if out.exists():
                break
            import time

            time.sleep(0.02)
        seen = json.loads(out.read_text())
        assert seen["argv"] == ["--one", "--two", "hello world", "demo.service", "$HOME"]
        assert seen["env"]["QUOTED"] == "a b" and seen["env"]["GREETING"] == "hello world"
        assert seen["env"]["PATH"] == host_module.DEFAULT_PATH
        assert seen["cwd"] == str(tmp_path)
        services.restart("demo")
        assert services.pid("demo") not in (None, first)
    finally:
        services.stop("demo")
    assert not services.running("demo")
    assert not (tmp_path / "state" / "demo.pid").exists()


def test_a_service_that_dies_at_start_waits_naming_it(tmp_path: Path) -> None:
    units = tmp_path / "units"
    write_unit(
        units,
        "bad.service",
        f"[Service]\nExecStart={sys.executable} -c 'import sys; sys.exit(\"no config\")'\n",
    )
    services = ProcessServices(tmp_path / "state", [str(units)])
    # the start waits only until the process exits: a long window costs nothing here, and a busy
    # machine may take longer than the default to start Python at all
    services.SETTLE = 30
    with pytest.raises(HostError, match=r"^service bad exited with code 1 at start; will retry$"):
        services.start("bad")
    assert not services.running("bad")


def test_split_units_start_with_their_dependencies_and_stop_with_the_unit_they_are_part_of(
    tmp_path: Path,
) -> None:
    # the shape of Open vSwitch's units: a oneshot umbrella requiring two forking daemons
    units = tmp_path / "units"
    marks = tmp_path / "marks"
    marks.mkdir()
    write_unit(
        units,
        "switch.service",
        "[Unit]\nRequires=db.service\nRequires=forwarder.service network.target\n"
        f"[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo up >> {marks}/switch'\n"
        f"ExecStop=/bin/sh -c 'echo down >> {marks}/switch'\nRemainAfterExit=yes\n",
    )
    # forking without PIDFile=: the main process is guessed, as systemd does
    daemon = (
        "[Unit]\nPartOf=switch.service\n[Service]\nType=forking\nExecStart=/bin/sh -c 'sleep 60 & exit 0'\n"
    )
    write_unit(units, "db.service", daemon)
    write_unit(units, "forwarder.service", "[Unit]\nRequires=db.service\n" + daemon.removeprefix("[Unit]\n"))
    services = ProcessServices(tmp_path / "state", [str(units)])
    try:
        services.start("switch")
        assert services.started() == ["db", "forwarder", "switch"]
        db, forwarder = services.pid("db"), services.pid("forwarder")
        assert db is not None and forwarder is not None and db != forwarder
        assert (marks / "switch").read_text() == "up\n"
        services.restart("switch")
        assert services.started() == ["db", "forwarder", "switch"]
        assert services.pid("db") not in (None, db) and services.pid("forwarder") not in (None, forwarder)
        forwarder = services.pid("forwarder")
        services.stop("switch")
        assert services.started() == []
        assert forwarder is not None and units_module._start_time(forwarder) is None
        assert (marks / "switch").read_text() == "up\ndown\nup\ndown\n"
    finally:
        for name in ("forwarder", "db", "switch"):
            services.stop(name)


def test_a_required_unit_that_fails_fails_the_start_naming_both(tmp_path: Path) -> None:
    units = tmp_path / "units"
    write_unit(
        units,
        "top.service",
        "[Unit]\nRequires=broken.service\nWants=absent.service\n"
        "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    )
    write_unit(units, "broken.service", "[Service]\nType=forking\nExecStart=/bin/false\n")
    services = ProcessServices(tmp_path / "state", [str(units)])
    with pytest.raises(HostError, match=r"^service top: service broken exited with code 1 at start"):
        services.start("top")
    # a oneshot without RemainAfterExit is not active once it ran
    write_unit(
        units, "top.service", "[Unit]\nWants=absent.service\n[Service]\nType=oneshot\nExecStart=/bin/true\n"
    )
    services.start("top")
    assert not services.running("top")


def test_an_unsupported_type_is_refused(tmp_path: Path) -> None:
    units = tmp_path / "units"
    write_unit(units, "bus.service", "[Service]\nType=dbus-broker\nExecStart=/bin/true\n")
    with pytest.raises(HostError, match=r"Type=dbus-broker") as e:
        ProcessServices(tmp_path / "state", [str(units)]).start("bus")
    assert e.value.retry is False


def test_the_module_runs_one_operation_where_it_is_started(tmp_path: Path) -> None:
    # what the sandbox runs inside a machine: no unit file here is an error it reports as JSON
    done = subprocess.run(
        [sys.executable, "-m", "openstack_charms.units", str(tmp_path), "start", "no-such-unit"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(units_module.__file__).parents[1])},
    )
    assert done.returncode == 1
    assert json.loads(done.stderr) == {"message": "service no-such-unit has no unit file", "retry": False}


def test_a_service_with_a_command_gets_a_unit_that_runs_exactly_it(fake: FakeHost, tmp_path: Path) -> None:
    command = '/usr/bin/api --name \'a b\' --literal %n$HOME --quote "x\\"y"'
    service = Service("api", command, user="api", environment={"GREETING": "hi there", "PCT": "100%"})
    w = Workload(HOST, services=(service,))
    assert applier(fake, tmp_path, w).apply(start=True) == {"api"}
    assert fake.calls[:2] == [("write", UNIT), ("daemon-reload",)]
    unit = load_unit("api", [str(fake.path("/etc/systemd/system"))])
    assert unit.get("User") == "api"
    specs = units_module._specifiers(unit, None)
    env = {"HOME": "/nope"}
    line = units_module._exec_line(unit, unit.get("ExecStart"), specs, env)
    assert list(line.argv) == ["/usr/bin/api", "--name", "a b", "--literal", "%n$HOME", "--quote", 'x"y']
    environment = ProcessServices(tmp_path, [])._environment(unit, None, specs)
    assert environment["GREETING"] == "hi there" and environment["PCT"] == "100%"
    # the charm's own unit file wins over the generated one
    own = File(UNIT, "[Service]\nExecStart=/bin/own\n", permissions=0o644)
    applier(fake, tmp_path, Workload(HOST, services=(service,), files=(own,))).apply(start=True)
    assert fake.read_text(UNIT) == own.content


def test_a_service_whose_program_is_missing_waits(tmp_path: Path) -> None:
    write_unit(tmp_path / "units", "gone.service", "[Service]\nExecStart=/nonexistent/daemon\n")
    with pytest.raises(HostError, match=r"^service gone cannot start: No such file or directory$"):
        ProcessServices(tmp_path / "state", [str(tmp_path / "units")]).start("gone")


class FakeSnapModule:
    """charmlibs.snap's surface the backend uses."""

    class Error(Exception):
        pass

    class NotInStoreError(Error):
        pass

    class ChannelNotAvailableError(Error):
        pass

    class RevisionNotAvailableError(Error):
        pass

    class NeedsClassicError(Error):
        pass

    class SocketNotFoundError(Error):
        pass

    def __init__(self, raises: Exception | None = None) -> None:
        self.raises = raises
        self.calls: list[tuple[Any, ...]] = []

    def ensure_installed(self, name: str, channel: str | None, **kwargs: Any) -> bool:
        self.calls.append(("ensure_installed", name, channel, kwargs))
        if self.raises:
            raise self.raises
        return True

    def hold(self, name: str) -> None:
        self.calls.append(("hold", name))

    def set(self, name: str, settings: dict[str, str]) -> None:
        self.calls.append(("set", name, settings))


@pytest.fixture
def fake_snap(monkeypatch: pytest.MonkeyPatch) -> Any:
    import charmlibs

    def install(raises: Exception | None = None) -> FakeSnapModule:
        module = FakeSnapModule(raises)
        monkeypatch.setitem(sys.modules, "charmlibs.snap", module)
        monkeypatch.setattr(charmlibs, "snap", module, raising=False)
        return module

    return install


def test_a_snap_is_installed_held_at_its_revision_and_configured(fake_snap: Any, tmp_path: Path) -> None:
    module = fake_snap()
    SystemHost(tmp_path).install_snap(Snap("microovn", "24.03/stable", "667", settings={"a": "1"}))
    assert module.calls == [
        (
            "ensure_installed",
            "microovn",
            "24.03/stable",
            {"revision": "667", "classic": False, "update": False},
        ),
        ("hold", "microovn"),
        ("set", "microovn", {"a": "1"}),
    ]


def test_snap_errors_block_or_wait(fake_snap: Any, tmp_path: Path) -> None:
    fake_snap(FakeSnapModule.NotInStoreError("no such snap in the store\ndetails"))
    with pytest.raises(HostError, match=r"^snap nope cannot be installed: NotInStoreError$") as e:
        SystemHost(tmp_path).install_snap(Snap("nope"))
    assert e.value.retry is False
    fake_snap(FakeSnapModule.Error("store timeout"))
    with pytest.raises(HostError, match=r"^installing snap lxd failed; will retry$") as e:
        SystemHost(tmp_path).install_snap(Snap("lxd"))
    assert e.value.retry is True
