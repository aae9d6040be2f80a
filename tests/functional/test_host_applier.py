"""The host applier on this machine, for real: a Debian package with a daemon, its files, its service.

tinyproxy (a small HTTP proxy whose package ships a systemd unit) is installed at
its pin through charmlibs-apt, configured through the applier (a file owned
root:tinyproxy 0640, and /etc/default/tinyproxy, which the package's unit reads
with ``EnvironmentFile=`` and expands as ``$FLAGS``), started through
:class:`ProcessServices` from that unit (no systemd runs here), and checked by
proxying an HTTP request. A changed file restarts it (a new pid, the new config
in the answer); a steady apply then runs no process at all and opens no file
but the manifest, proven by counting wrappers first on PATH and by Python's
audit hooks. At the end the service is stopped and the package purged.

In the sandbox (``tox -e functional``) the test's network namespace has only
loopback and the units' bridge, so the apt-get wrapper runs apt-get in the machine's namespace
(``openstack_charms.sandbox.network.host_command``) for the archive; everything else,
the proxy included, stays inside.
"""

from __future__ import annotations

import contextlib
import grp
import http.server
import os
import pathlib
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from openstack_charms.host import HostApplier, SystemHost
from openstack_charms.plan import HOST, Apt, File, Service, Workload
from openstack_charms.sandbox.network import host_command
from openstack_charms.status import NotReady
from openstack_charms.units import ProcessServices

PACKAGE = "tinyproxy"
#: bookworm's tinyproxy; a Debian update replacing it in the archive means moving this pin
PIN = "1.11.1-2.1+deb12u1"
CONFIG = "/etc/tinyproxy/charm.conf"
DEFAULTS = "/etc/default/tinyproxy"
#: a service the charm declares with a command: the applier writes its unit
PROBE = "host-applier-probe"
PROBE_UNIT = f"/etc/systemd/system/{PROBE}.service"
#: reaches the process verbatim: no variable nor specifier expansion
PROBE_VALUE = "a b $HOME %n"
#: what the counting wrappers count: every package and service tool the applier could run
COUNTED = ("apt-get", "apt-cache", "dpkg", "dpkg-query", "systemctl", "snap")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def installed(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True, check=False
    )
    return done.stdout.endswith(" installed")


@pytest.fixture
def counting_path(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Wrappers first on PATH that log each call of the counted tools; returns the log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    log.touch()
    for tool in COUNTED:
        real = shutil.which(tool)
        if real is None:
            body = f"echo '{tool}: not on this machine' >&2; exit 127"
        elif tool == "apt-get":
            # the archive is reachable from the machine's network namespace only
            body = f'exec {shlex.join(host_command(real))} "$@"'
        else:
            body = f'exec {real} "$@"'
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\necho "{tool} $1" >> {log}\n{body}\n')
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


class Audit:
    """What this process opens and spawns while watching (Python's audit hooks see every open and exec)."""

    def __init__(self) -> None:
        self.watching = False
        self.opened: list[str] = []
        self.spawned: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[object, ...]) -> None:
        if not self.watching:
            return
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            self.opened.append(os.fsdecode(args[0]))
        elif event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.fork"):
            self.spawned.append(f"{event} {args[0]!r}")

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        self.opened.clear()
        self.spawned.clear()
        self.watching = True
        try:
            yield
        finally:
            self.watching = False


@pytest.fixture
def origin() -> Iterator[str]:
    """An HTTP server on loopback for the proxy to fetch from; yields its URL."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello through the proxy\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hello"
    finally:
        server.shutdown()
        server.server_close()


def through_proxy(port: int, url: str, timeout: float = 10.0) -> str:
    """The raw HTTP answer to GET ``url`` asked of the proxy on ``port``, waiting for it to listen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(f"GET {url} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
                chunks = []
                while data := s.recv(65536):
                    chunks.append(data)
                return b"".join(chunks).decode(errors="replace")
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def tinyproxy_workload(port: int, via: str) -> Workload:
    config = (
        "User tinyproxy\nGroup tinyproxy\n"
        f"Port {port}\nListen 127.0.0.1\n"
        "Timeout 30\nMaxClients 10\nAllow 127.0.0.1\nLogLevel Info\n"
        f'ViaProxyName "{via}"\n'
    )
    return Workload(
        HOST,
        packages=(Apt(PACKAGE, PIN),),
        files=(
            File(DEFAULTS, f'FLAGS="-c {CONFIG}"\n', permissions=0o644, restarts=("tinyproxy",)),
            File(CONFIG, config, user="root", group="tinyproxy", permissions=0o640, restarts=("tinyproxy",)),
        ),
        services=(
            Service("tinyproxy"),
            Service(
                PROBE, "/bin/sleep 600", user="nobody", group="nogroup", environment={"PROBE": PROBE_VALUE}
            ),
        ),
    )


def proc_status(pid: int) -> dict[str, str]:
    lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def proc_environ(pid: int) -> dict[str, str]:
    entries = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(os.fsdecode(e).partition("=")[::2] for e in entries if e)


def test_tinyproxy_installed_configured_started_restarted_and_steady(
    tmp_path: pathlib.Path, counting_path: pathlib.Path, origin: str
) -> None:
    if os.geteuid() != 0:
        pytest.fail("the host applier's functional test installs a Debian package and needs root")
    if os.path.isdir("/run/systemd/system"):
        pytest.fail("this test proves the applier without systemd; this machine runs systemd")
    if installed(PACKAGE):
        pytest.fail(f"{PACKAGE} is installed already; the test installs and purges it itself")
    user_existed = _exists(pwd.getpwnam, "tinyproxy")
    group_existed = _exists(grp.getgrnam, "tinyproxy")
    leftovers = [
        d for d in ("/var/log/tinyproxy", "/run/tinyproxy", "/etc/tinyproxy") if not os.path.exists(d)
    ]
    audit = Audit()
    state = tmp_path / "state"
    port = free_port()
    backend = SystemHost(state)
    assert isinstance(backend.services, ProcessServices)
    services = backend.services
    figures: dict[str, object] = {}
    try:
        # 1. install at the pin (refreshing the apt cache once if it does not know the pin), write, start
        began = time.monotonic()
        try:
            acted = HostApplier(tinyproxy_workload(port, "first"), state, backend).apply(start=True)
        except NotReady as e:
            log = state / "services" / "tinyproxy.log"
            pytest.fail(f"{e.message}\n{log.read_text() if log.exists() else ''}")
        figures["first apply (s)"] = round(time.monotonic() - began, 2)
        figures["tool calls, first apply"] = len(counting_path.read_text().splitlines())
        assert acted == {"tinyproxy", PROBE}
        assert installed(PACKAGE)
        version = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", PACKAGE], capture_output=True, text=True, check=True
        ).stdout
        assert version == PIN
        st = os.stat(CONFIG)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            0,
            grp.getgrnam("tinyproxy").gr_gid,
            0o640,
        )
        first = services.pid("tinyproxy")
        assert first is not None
        # exactly the unit's ExecStart, $FLAGS expanded from its EnvironmentFile
        argv = pathlib.Path(f"/proc/{first}/cmdline").read_bytes().split(b"\0")[:-1]
        assert argv == [b"/usr/bin/tinyproxy", b"-d", b"-c", CONFIG.encode()]
        answer = through_proxy(port, origin)
        assert answer.startswith("HTTP/1.0 200") and "hello through the proxy" in answer
        assert "first" in answer.split("\r\n\r\n")[0]  # the Via header names our ViaProxyName
        # the daemon dropped to the user its config names
        assert proc_status(first)["Uid"].split()[0] == str(pwd.getpwnam("tinyproxy").pw_uid)
        # the charm's own unit, run as its User= and Group= with its Environment=, exactly
        probe = services.pid(PROBE)
        assert probe is not None
        assert pathlib.Path(f"/proc/{probe}/cmdline").read_bytes() == b"/bin/sleep\x00600\x00"
        status = proc_status(probe)
        assert status["Uid"].split()[0] == str(pwd.getpwnam("nobody").pw_uid)
        assert status["Gid"].split()[0] == str(grp.getgrnam("nogroup").gr_gid)
        environ = proc_environ(probe)
        assert environ["PROBE"] == PROBE_VALUE and environ["USER"] == "nobody"

        # 2. a changed file restarts its service: a new process, answering with the new config
        began = time.monotonic()
        acted = HostApplier(tinyproxy_workload(port, "second"), state, backend).apply(start=True)
        figures["changed apply (s)"] = round(time.monotonic() - began, 2)
        # only the service whose file changed
        assert acted == {"tinyproxy"}
        assert services.pid(PROBE) == probe
        second = services.pid("tinyproxy")
        assert second is not None and second != first
        assert not pathlib.Path(f"/proc/{first}").exists()
        answer = through_proxy(port, origin)
        assert "second" in answer.split("\r\n\r\n")[0]

        # 3. mode drift by hand is repaired, without a restart
        os.chmod(CONFIG, 0o644)
        assert HostApplier(tinyproxy_workload(port, "second"), state, backend).apply(start=True) == set()
        assert stat.S_IMODE(os.stat(CONFIG).st_mode) == 0o640
        assert services.pid("tinyproxy") == second

        # 4. steady: no dpkg, apt or systemctl, no process at all, no file opened but the manifest
        calls_before = counting_path.read_text()
        steady = HostApplier(tinyproxy_workload(port, "second"), state, SystemHost(state))
        with audit.watch():
            began = time.perf_counter()
            acted = steady.apply(start=True)
            figures["steady apply (ms)"] = round((time.perf_counter() - began) * 1000, 2)
        assert acted == set()
        assert counting_path.read_text() == calls_before
        assert audit.spawned == []
        assert audit.opened == [str(state / "manifest.json")]
        assert services.pid("tinyproxy") == second
        figures["tool calls, steady apply"] = 0

        # 5. what the charm no longer declares goes: its services stopped, its files removed
        acted = HostApplier(Workload(HOST, packages=(Apt(PACKAGE, PIN),)), state, backend).apply(start=True)
        assert acted == set()
        assert services.pid("tinyproxy") is None and services.pid(PROBE) is None
        assert not any(os.path.exists(p) for p in (CONFIG, DEFAULTS, PROBE_UNIT))
    finally:
        # 6. leave nothing behind, also on failure: the services, the charm's files, the package
        services.stop("tinyproxy")
        services.stop(PROBE)
        for path in (CONFIG, PROBE_UNIT):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if installed(PACKAGE) or installed("tinyproxy-bin"):
            subprocess.run(
                ["apt-get", "purge", "-y", "-q", PACKAGE, "tinyproxy-bin"],
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                capture_output=True,
                check=True,
            )
        if not user_existed and _exists(pwd.getpwnam, "tinyproxy"):
            subprocess.run(["userdel", "tinyproxy"], check=True)
        if not group_existed and _exists(grp.getgrnam, "tinyproxy"):
            subprocess.run(["groupdel", "tinyproxy"], check=True)
        for leftover in leftovers:
            shutil.rmtree(leftover, ignore_errors=True)
        print(f"\nhost applier, tinyproxy {PIN}: {figures}")
        print("tool calls:", " | ".join(counting_path.read_text().splitlines()))
    assert not installed(PACKAGE) and not installed("tinyproxy-bin")
    assert not os.path.exists(DEFAULTS)


def _exists(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
        return True
    except KeyError:
        return False
