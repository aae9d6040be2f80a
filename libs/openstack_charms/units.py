"""systemd units run without systemd: what a machine without it (the sandbox, CI) runs for a service.

:class:`ProcessServices` is a :class:`~.host.ServiceManager` that reads a
service's unit file (the charm's under ``/etc/systemd/system``, else the
package's) with its drop-ins, and runs exactly what it declares: ``ExecStart``
and its neighbours as ``User=``/``Group=``, with its environment, working
directory, umask and runtime directories, keeping a pid file; stop sends the
unit's kill signal and waits as systemd would. The units a service
``Requires=`` or ``Wants=`` start before it (a socket unit's service at once:
there is no socket activation), and those ``PartOf=`` it stop and
restart with it, as packages that split a daemon in several units (Open
vSwitch, OVN, libvirt) need. Imported only where systemd does not run; ``python -m
openstack_charms.units`` runs one operation, in whatever namespaces it is
started in (the sandbox's machines).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import re
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any

from .host import UNIT_PATH, HostError, _base_environment, _last_line, _user_ids

logger = logging.getLogger(__name__)


#: settings that may be given more than once, and are reset by an empty assignment
_LIST_KEYS = frozenset(
    {
        "ExecStartPre",
        "ExecStart",
        "ExecStartPost",
        "Environment",
        "EnvironmentFile",
        "RuntimeDirectory",
        "StateDirectory",
        "CacheDirectory",
        "LogsDirectory",
        "ConfigurationDirectory",
    }
)
_DIRECTORY_ROOTS = {
    "RuntimeDirectory": "/run",
    "StateDirectory": "/var/lib",
    "CacheDirectory": "/var/cache",
    "LogsDirectory": "/var/log",
    "ConfigurationDirectory": "/etc",
}
#: service types whose main process is the one ExecStart starts
_FOREGROUND = frozenset({"simple", "exec", "notify", "notify-reload", "idle", "dbus"})
#: [Unit] dependencies followed (space-separated unit names; only services are started)
_DEPENDENCIES = ("Requires", "Wants", "BindsTo", "PartOf")


@dataclasses.dataclass
class Unit:
    """The ``[Service]`` section of a unit file and its drop-ins, as far as starting it goes."""

    name: str
    path: str
    settings: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: the [Unit] dependencies: Requires, Wants, BindsTo, PartOf -> unit names
    depends: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        """The last value of a setting."""
        values = self.settings.get(key)
        return values[-1] if values else default

    def all(self, key: str) -> list[str]:
        """Every value of a list setting, in order."""
        return list(self.settings.get(key, ()))


def _unit_lines(text: str) -> Iterable[tuple[str, str, str]]:
    """(section, key, value) of a unit file, continuation lines joined."""
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if pending:
            line = pending + " " + line
            pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep:
            yield section, key.strip(), value.strip()


def _has_unit(name: str, unit_path: Iterable[str]) -> bool:
    return any(os.path.isfile(os.path.join(d, f"{name}.service")) for d in unit_path)


def load_unit(name: str, unit_path: Iterable[str] = UNIT_PATH) -> Unit:
    """Read ``name``'s unit file (the first found along ``unit_path``) and its ``.d/*.conf`` drop-ins."""
    unit_name = name if name.endswith(".service") else f"{name}.service"
    dirs = list(unit_path)
    for directory in dirs:
        path = os.path.join(directory, unit_name)
        if os.path.isfile(path):
            break
    else:
        raise HostError(f"service {name} has no unit file", retry=False)
    unit = Unit(unit_name, path)
    dropins: dict[str, str] = {}
    for directory in reversed(dirs):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.listdir(os.path.join(directory, f"{unit_name}.d")):
                if entry.endswith(".conf"):
                    # the same name in a directory earlier in the path masks the later one
                    dropins[entry] = os.path.join(directory, f"{unit_name}.d", entry)
    for source in [path, *(dropins[k] for k in sorted(dropins))]:
        with open(source) as handle:
            text = handle.read()
        for section, key, value in _unit_lines(text):
            if section == "Unit" and key in _DEPENDENCIES:
                names = value.split()
                unit.depends[key] = [*unit.depends.get(key, []), *names] if names else []
            if section != "Service":
                continue
            if key in _LIST_KEYS:
                if value:
                    unit.settings.setdefault(key, []).append(value)
                else:
                    unit.settings[key] = []
            else:
                unit.settings[key] = [value]
    return unit


def _specifiers(unit: Unit, user: str | None) -> dict[str, str]:
    prefix, _, rest = unit.name.rpartition(".")[0].partition("@")
    values = {
        "%": "%",
        "n": unit.name,
        "N": unit.name.rpartition(".")[0],
        "p": prefix,
        "i": rest,
        "I": rest,
        "t": "/run",
        "S": "/var/lib",
        "C": "/var/cache",
        "L": "/var/log",
        "E": "/etc",
        "T": "/tmp",
        "V": "/var/tmp",
    }
    if user:
        values["u"] = user
        values["h"] = _base_environment(user).get("HOME", "/")
    else:
        values |= {"u": "root", "h": "/root"}
    return values


def _resolve(unit: Unit, value: str, specs: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "%" and i + 1 < len(value):
            spec = value[i + 1]
            if spec not in specs:
                raise HostError(f"service {unit.name}: unsupported specifier %{spec}", retry=False)
            out.append(specs[spec])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _read_environment_file(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    with open(path) as handle:
        text = handle.read().replace("\\\n", "")
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        with contextlib.suppress(ValueError):
            words = shlex.split(value, comments=False)
            value = " ".join(words)
        env[key.strip()] = value
    return env


def _expand(words: list[str], env: Mapping[str, str]) -> list[str]:
    """Variable expansion as systemd does it: ``$X`` alone is split at whitespace, ``${X}`` stays one word."""
    argv: list[str] = []
    for word in words:
        if word.startswith("$") and word[1:].isidentifier():
            argv.extend(env.get(word[1:], "").split())
            continue
        out, i = [], 0
        while i < len(word):
            if word.startswith("$$", i):
                out.append("$")
                i += 2
            elif (
                word.startswith("${", i)
                and (end := word.find("}", i)) > 0
                and word[i + 2 : end].isidentifier()
            ):
                out.append(env.get(word[i + 2 : end], ""))
                i = end + 1
            else:
                out.append(word[i])
                i += 1
        argv.append("".join(out))
    return argv


@dataclasses.dataclass(frozen=True)
class ExecLine:
    """One ``Exec*=`` command of a unit, parsed."""

    argv: tuple[str, ...]
    ignore_failure: bool
    privileged: bool
    executable: str | None = None
    """With ``@``: the program, ``argv[0]`` being the name it is given."""


def _exec_line(unit: Unit, line: str, specs: Mapping[str, str], env: Mapping[str, str]) -> ExecLine:
    ignore = privileged = False
    expand = True
    argv0: str | None = None
    while line and line[0] in "-@+!:":
        c, line = line[0], line[1:]
        if c == "-":
            ignore = True
        elif c in "+!":
            privileged = True
        elif c == ":":
            expand = False
        else:
            argv0 = ""
    try:
        words = shlex.split(_resolve(unit, line, specs))
    except ValueError:
        raise HostError(f"service {unit.name}: cannot parse its command line", retry=False) from None
    if expand:
        words = _expand(words, env)
    if not words:
        raise HostError(f"service {unit.name}: empty command line", retry=False)
    if argv0 is not None:
        if len(words) < 2:
            raise HostError(f"service {unit.name}: '@' needs a program and its argv[0]", retry=False)
        return ExecLine(tuple(words[1:]), ignore, privileged, executable=words[0])
    return ExecLine(tuple(words), ignore, privileged)


class ProcessServices:
    """Services run as the unit files declare them, where no systemd runs (a :class:`ServiceManager`).

    Reads the unit (the charm's under ``/etc/systemd/system``, else the
    package's under ``/lib`` or ``/usr/lib/systemd/system``, with drop-ins),
    and runs its ``ExecStartPre``/``ExecStart``/``ExecStartPost`` as its
    ``User=``/``Group=`` (and that user's groups), in its ``WorkingDirectory=``
    with its ``Environment=``/``EnvironmentFile=`` and systemd's variable and
    specifier expansion, after making its ``RuntimeDirectory=`` and alike. The
    units it ``Requires=``, ``BindsTo=`` or ``Wants=`` start first (a wanted
    one may fail); those ``PartOf=`` or ``BindsTo=`` it stop before it and
    restart with it. The main process gets a session of its own and, as
    systemd gives every service, an ``INVOCATION_ID``: the processes carrying
    it are the service's "cgroup" (a ``Type=forking`` unit without
    ``PIDFile=`` has the oldest of them as its main process, as systemd
    guesses it). Its output goes to ``state_dir/<name>.log``, and its pid (with
    its start time, against pid reuse) to ``state_dir/<name>.pid``; a
    ``Type=oneshot`` unit runs to its end and, with ``RemainAfterExit=``, is
    active until stopped (``state_dir/<name>.active``). Stop runs
    ``ExecStop=``, then sends ``KillSignal=`` (SIGTERM) to the process
    (``KillMode=process``) or all of the service's processes, waits
    ``TimeoutStopSec=`` (at most 90 s) then kills. Sandboxing settings
    (``PrivateDevices=``, ...), ordering (``After=``: dependencies simply start
    first) and ``Restart=`` are not emulated.
    """

    #: how long a started main process must live for its start to count
    SETTLE = 0.3

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        unit_path: Iterable[str] = UNIT_PATH,
        default_environment: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = pathlib.Path(state_dir)
        self.unit_path = tuple(unit_path)
        #: what every service's environment starts with (systemd's ``DefaultEnvironment=``)
        self.default_environment = dict(default_environment or {})

    def _pid_path(self, name: str) -> pathlib.Path:
        return self.state_dir / f"{name}.pid"

    def _active_path(self, name: str) -> pathlib.Path:
        return self.state_dir / f"{name}.active"

    def _log(self, name: str) -> IO[bytes]:
        # a service's output may hold what its configuration holds: readable by root only
        return os.fdopen(
            os.open(self.state_dir / f"{name}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab"
        )

    def _recorded(self, name: str) -> dict[str, Any] | None:
        try:
            recorded = json.loads(self._pid_path(name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return recorded if isinstance(recorded, dict) else None

    def pid(self, name: str) -> int | None:
        """The main process of the service, if it runs."""
        recorded = self._recorded(name)
        try:
            pid, started = int(recorded["pid"]), recorded["start"]  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            return None
        return pid if _start_time(pid) == started else None

    def running(self, name: str) -> bool:
        return self.pid(name) is not None or self._active_path(name).exists()

    def started(self) -> list[str]:
        """Every service this manager started that has not been stopped since."""
        found = {p.stem for p in self.state_dir.glob("*.pid")} | {
            p.stem for p in self.state_dir.glob("*.active")
        }
        return sorted(n for n in found if self.running(n))

    def daemon_reload(self) -> None:
        """Nothing to do: the unit file is read at every start."""

    def start(self, name: str) -> None:
        self._start(name, frozenset())

    def _start(self, name: str, starting: frozenset[str]) -> None:
        if self.running(name):
            return
        unit = load_unit(name, self.unit_path)
        wanted = set(unit.depends.get("Wants", []))
        needed = [*unit.depends.get("Requires", []), *unit.depends.get("BindsTo", []), *wanted]
        for dependency in dict.fromkeys(needed):
            # no socket activation here: a socket stands for its service, which then opens the
            # socket itself (libvirtd's virtlogd); targets and alike are systemd's own
            other = dependency.removesuffix(".service").removesuffix(".socket")
            if not dependency.endswith((".service", ".socket")) or other == name or other in starting:
                continue
            if dependency.endswith(".socket") and not _has_unit(other, self.unit_path):
                continue
            try:
                self._start(other, starting | {name})
            except HostError as e:
                if dependency not in wanted:
                    raise HostError(f"service {name}: {e.message}", retry=e.retry) from None
                logger.warning("service %s: wanted %s did not start: %s", name, other, e.message)
        kind = unit.get("Type", "simple")
        if kind not in _FOREGROUND and kind not in ("forking", "oneshot"):
            raise HostError(f"service {name}: Type={kind} is not supported without systemd", retry=False)
        user = unit.get("User") or None
        group = unit.get("Group") or None
        specs = _specifiers(unit, user)
        env = self._environment(unit, user, specs)
        env["INVOCATION_ID"] = secrets.token_hex(16)
        self._make_directories(unit, user, group, specs)
        creds: dict[str, Any] = {}
        if user or group:
            uid, gid, groups = _user_ids(user or "root", group)
            creds = {"user": uid, "group": gid, "extra_groups": groups}
        cwd = _resolve(unit, unit.get("WorkingDirectory", "/"), specs).lstrip("-") or "/"
        if cwd == "~":
            cwd = env.get("HOME", "/")
        lines = {
            key: [_exec_line(unit, v, specs, env) for v in unit.all(key)]
            for key in _LIST_KEYS
            if "Exec" in key
        }
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if kind == "oneshot":
            for line in [*lines["ExecStartPre"], *lines["ExecStart"], *lines["ExecStartPost"]]:
                self._run_to_end(name, line, env, cwd, creds)
            if unit.get("RemainAfterExit", "no").lower() in ("yes", "true", "on", "1"):
                self._active_path(name).write_text(env["INVOCATION_ID"])
            return
        if len(lines["ExecStart"]) != 1:
            raise HostError(f"service {name}: needs exactly one ExecStart", retry=False)
        for line in lines["ExecStartPre"]:
            self._run_to_end(name, line, env, cwd, creds)
        main = lines["ExecStart"][0]
        with self._log(name) as log:
            try:
                proc = subprocess.Popen(
                    list(main.argv),
                    executable=main.executable,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    umask=int(unit.get("UMask", "0022"), 8),
                    **({} if main.privileged else creds),
                )
            except OSError as e:
                raise HostError(f"service {name} cannot start: {e.strerror}") from None
        if kind == "forking":
            pid = self._forked_pid(unit, proc, specs, env["INVOCATION_ID"])
        else:
            pid = proc.pid
            deadline = time.monotonic() + self.SETTLE
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            if proc.poll() is not None:
                self._failed(name, f"exited with code {proc.returncode} at start")
        recorded = {"pid": pid, "start": _start_time(pid), "invocation": env["INVOCATION_ID"]}
        self._pid_path(name).write_text(json.dumps(recorded))
        os.chmod(self._pid_path(name), 0o600)
        for line in lines["ExecStartPost"]:
            self._run_to_end(name, line, env, cwd, creds)

    def _failed(self, name: str, what: str) -> None:
        log = self.state_dir / f"{name}.log"
        with contextlib.suppress(OSError):
            logger.error("service %s %s: %s", name, what, _last_line(log.read_text(errors="replace")[-4096:]))
        raise HostError(f"service {name} {what}; will retry")

    def _forked_pid(
        self, unit: Unit, proc: subprocess.Popen[Any], specs: Mapping[str, str], invocation: str
    ) -> int:
        name = unit.name.removesuffix(".service")
        pid_file = _resolve(unit, unit.get("PIDFile"), specs)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self._failed(name, "did not fork within 90 s")
            raise
        if code != 0:
            self._failed(name, f"exited with code {code} at start")
        if not pid_file:
            # systemd's GuessMainPID: the process the start left behind (the oldest, if several)
            left = sorted(_invocation_processes(invocation), key=lambda p: int(_start_time(p) or 0))
            if not left:
                self._failed(name, "left no process running")
            return left[0]
        try:
            with open(pid_file) as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            self._failed(name, f"wrote no pid to {pid_file}")
            raise

    def _run_to_end(
        self, name: str, line: ExecLine, env: Mapping[str, str], cwd: str, creds: Mapping[str, Any]
    ) -> None:
        with self._log(name) as log:
            try:
                code = subprocess.call(
                    list(line.argv),
                    executable=line.executable,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=90,
                    **({} if line.privileged else creds),
                )
            except subprocess.TimeoutExpired:
                code = -1
            except OSError as e:
                if not line.ignore_failure:
                    raise HostError(f"service {name} cannot start: {e.strerror}") from None
                code = 0
        if code != 0 and not line.ignore_failure:
            self._failed(name, f"{os.path.basename(line.argv[0])} exited with code {code}")

    def _environment(self, unit: Unit, user: str | None, specs: Mapping[str, str]) -> dict[str, str]:
        env = _base_environment(user) | self.default_environment
        for value in unit.all("Environment"):
            for assignment in shlex.split(_resolve(unit, value, specs)):
                key, sep, val = assignment.partition("=")
                if sep:
                    env[key] = val
        # systemd: what EnvironmentFile= sets overrides Environment=, whatever their order
        for value in unit.all("EnvironmentFile"):
            path = _resolve(unit, value, specs)
            optional = path.startswith("-")
            try:
                env |= _read_environment_file(path.lstrip("-"))
            except FileNotFoundError:
                if not optional:
                    raise HostError(f"service {unit.name}: {path} is missing") from None
        return env

    def _make_directories(
        self, unit: Unit, user: str | None, group: str | None, specs: Mapping[str, str]
    ) -> None:
        for key, root in _DIRECTORY_ROOTS.items():
            names = [n for v in unit.all(key) for n in _resolve(unit, v, specs).split()]
            if not names:
                continue
            mode = int(unit.get(key.replace("Directory", "DirectoryMode"), "0755"), 8)
            # systemd gives every one of them to the service's user but the configuration directory
            owner = "root" if key == "ConfigurationDirectory" else user or "root"
            uid, gid, _ = _user_ids(owner, None if owner == "root" else group)
            for sub in names:
                path = os.path.join(root, sub)
                try:
                    os.makedirs(path, mode=mode, exist_ok=True)
                    os.chown(path, uid, gid)
                    os.chmod(path, mode)
                except OSError as e:
                    raise HostError(f"service {unit.name}: cannot make {path}: {e.strerror}") from None

    def _parts_of(self, name: str) -> list[str]:
        """The running services that are part of ``name`` (stopped and restarted with it)."""
        parts = []
        for other in self.started():
            if other == name:
                continue
            with contextlib.suppress(HostError):
                depends = load_unit(other, self.unit_path).depends
                if f"{name}.service" in [*depends.get("PartOf", []), *depends.get("BindsTo", [])]:
                    parts.append(other)
        return parts

    def stop(self, name: str) -> None:
        for part in self._parts_of(name):
            self.stop(part)
        pid = self.pid(name)
        active = self._active_path(name)
        if pid is not None or active.exists():
            try:
                unit = load_unit(name, self.unit_path)
            except HostError:
                # the package went first: stop what runs the way systemd stops by default
                unit = Unit(f"{name}.service", "")
            self._exec_stop(unit)
            if pid is not None:
                self._kill(unit, pid, str((self._recorded(name) or {}).get("invocation", "")))
            for sub in _resolve(
                unit, " ".join(unit.all("RuntimeDirectory")), _specifiers(unit, None)
            ).split():
                if unit.get("RuntimeDirectoryPreserve", "no") == "no":
                    _remove_tree(os.path.join("/run", sub))
        for path in (self._pid_path(name), active):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _exec_stop(self, unit: Unit) -> None:
        """The unit's ``ExecStop=`` commands, whose failure only leaves the kill to do the stopping."""
        if not unit.all("ExecStop"):
            return
        user = unit.get("User") or None
        specs = _specifiers(unit, user)
        env = self._environment(unit, user, specs)
        for value in unit.all("ExecStop"):
            line = dataclasses.replace(_exec_line(unit, value, specs, env), ignore_failure=True)
            with contextlib.suppress(HostError):
                self._run_to_end(unit.name.removesuffix(".service"), line, env, "/", {})

    def _kill(self, unit: Unit, pid: int, invocation: str) -> None:
        name = unit.name.removesuffix(".service")
        sig = _signal(unit.get("KillSignal", "SIGTERM"))
        mode = unit.get("KillMode", "control-group")
        whole = mode in ("control-group", "mixed")
        timeout = min(_seconds(unit.get("TimeoutStopSec", "90")), 90.0)
        self._signal(pid, sig, group=mode == "control-group")
        if mode == "control-group" and invocation:
            for other in _invocation_processes(invocation):
                self._signal(other, sig, group=False)
        if not _wait_gone(pid, timeout):
            logger.warning("service %s did not stop within %g s; killing it", name, timeout)
            self._signal(pid, signal.SIGKILL, group=whole)
            if not _wait_gone(pid, 5):
                raise HostError(f"service {name} did not stop; will retry")
        if whole:
            # what the main process left behind goes with it, as its cgroup would
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            for other in _invocation_processes(invocation) if invocation else []:
                self._signal(other, signal.SIGKILL, group=False)

    @staticmethod
    def _signal(pid: int, sig: int, *, group: bool) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                try:
                    os.killpg(pid, sig)
                    return
                except ProcessLookupError:
                    pass
            os.kill(pid, sig)

    def restart(self, name: str) -> None:
        parts = self._parts_of(name)
        self.stop(name)
        self.start(name)
        for part in parts:
            self.start(part)


def _invocation_processes(invocation: str) -> list[int]:
    """The processes started by one invocation of a service (they carry its ``INVOCATION_ID``)."""
    marker = f"INVOCATION_ID={invocation}".encode()
    found = []
    for environ in pathlib.Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in environ.read_bytes().split(b"\0") and _start_time(int(environ.parent.name)):
                found.append(int(environ.parent.name))
    return found


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _signal(name: str) -> int:
    try:
        return (
            int(name)
            if name.isdigit()
            else int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
        )
    except KeyError:
        raise HostError(f"unknown KillSignal={name}", retry=False) from None


def _seconds(value: str) -> float:
    """A systemd time span ("20", "1min 30s", "500ms", "infinity") in seconds."""
    if value.strip() in ("", "infinity"):
        return 90.0
    scale = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
    return sum(
        float(number) * scale.get(suffix, 1.0)
        for number, suffix in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    )


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # fields[0] is the state (field 3): a zombie has exited already
    return None if not fields or fields[0] in ("Z", "X") else fields[19]


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):
            # reap it when it is our own child (it started in this process)
            os.waitpid(pid, os.WNOHANG)
        if _start_time(pid) is None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    """``python -m openstack_charms.units STATE_DIR start|stop|restart|running NAME``, where it is started.

    The sandbox runs it inside a machine's namespaces, so that the unit files,
    environment files and runtime directories are that machine's. A failure
    prints the :class:`HostError` as JSON (``message``, ``retry``) and exits 1;
    ``running`` exits 0 or 3, as ``systemctl is-active`` does. ``DEFAULT_ENVIRONMENT``
    (shell-quoted assignments) is every service's starting environment.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[1] not in ("start", "stop", "restart", "running"):
        print(main.__doc__, file=sys.stderr)
        return 2
    defaults = dict(
        a.split("=", 1) for a in shlex.split(os.environ.get("DEFAULT_ENVIRONMENT", "")) if "=" in a
    )
    services = ProcessServices(args[0], default_environment=defaults)
    try:
        if args[1] == "running":
            return 0 if services.running(args[2]) else 3
        getattr(services, args[1])(args[2])
    except HostError as e:
        print(json.dumps({"message": e.message, "retry": e.retry}), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

if TYPE_CHECKING:
    from .host import ServiceManager

    # pyright proves the service manager keeps to its protocol
    _services: type[ServiceManager] = ProcessServices
