"""Machine units: what a machine charm's host applier does, done on a machine the sandbox makes.

A machine is one container, :data:`MACHINE`, made like a pod's (its own /etc,
/var and /run over the host's, its own /tmp, its own network namespace and
address on the bridge) plus its own /usr over the host's, a UTS namespace with
the machine's host name, a /sys of its own network (``/sys/class/net`` lists
the machine's interfaces, not the host's) with the host's control groups
mounted in it, and a /dev/kvm of group kvm, as udev makes it. Units the bundle
places on one machine (``to:``) share it. Each unit's charm works on it through
:class:`SandboxHost`, the :class:`~openstack_charms.host.HostBackend` the
sandbox gives machine charms:

- files are written, owned and stat-ed in the machine's filesystem, owners
  named in its own /etc/passwd and /etc/group;
- an apt package is provided from :data:`~.packages.MACHINE_PACKAGES`, the one
  declared map of what stands in for each (Debian's package at its pin for
  Ubuntu's; OpenStack's from the release's venv, laid out as Ubuntu's package
  lays it out); a package the map lacks is an error naming it, and a snap
  cannot be installed;
- services are the packages' and the charm's systemd units, run by
  :class:`~openstack_charms.units.ProcessServices` inside the machine
  (``python -m openstack_charms.units``), so that unit files, environment
  files and runtime directories are the machine's;
- commands run inside the machine as the user and group they name.

What a real machine does that this one does not: systemd's ``Restart=`` (a
service that dies stays dead until the charm restarts it), socket activation
(a socket's service starts at once), a system D-Bus (no polkit, no
systemd-machined), kernel modules, KVM (guests are emulated), and Ubuntu's
versions of the packages (:meth:`provided` lists each substitution).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pathlib
import shlex
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator

from ..host import DEFAULT_PATH, Completed, HostError, Stat
from ..plan import Command, Snap
from .containers import MARKER, Container
from .packages import MACHINE_PACKAGES, Account, MachinePackage, Shipped, ensure_debian

#: the container name of a machine unit (its one "container": the machine)
MACHINE = "machine"
#: where the machine's service manager keeps its pid files and the services' output
SERVICES_DIR = "/var/lib/sandbox-services"
_CLONE_NEWUTS = 0x04000000
_libc = ctypes.CDLL(None, use_errno=True)
LIBS = pathlib.Path(__file__).resolve().parents[2]


def under_tmp() -> list[str]:
    """What the machine's service manager runs from (this Python, the library) when it lives in /tmp.

    A machine has a /tmp of its own, as a pod's containers do; a checkout (and its tox venvs)
    in the host's /tmp must still be seen there, at the same paths.
    """
    paths = {pathlib.Path(sys.prefix).resolve(), LIBS}
    return sorted(str(p) for p in paths if p.is_relative_to("/tmp"))


def hostname_of(unit: str, machine: str | None = None) -> str:
    """The host name of the machine a unit runs on: the bundle's machine it is placed on, else its own."""
    return f"machine-{machine}" if machine else "machine-" + unit.replace("/", "-")


@contextlib.contextmanager
def uts_of(pid: int) -> Iterator[None]:
    """Run the calling thread with ``pid``'s host name (a UTS namespace is a thread's own, as a network's)."""
    own = os.open("/proc/thread-self/ns/uts", os.O_RDONLY)
    try:
        target = os.open(f"/proc/{pid}/ns/uts", os.O_RDONLY)
        try:
            if _libc.setns(target, _CLONE_NEWUTS) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))
        finally:
            os.close(target)
        try:
            yield
        finally:
            _libc.setns(own, _CLONE_NEWUTS)
    finally:
        os.close(own)


def _entry(table: pathlib.Path, name: str) -> list[str] | None:
    with contextlib.suppress(FileNotFoundError):
        for line in table.read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return fields
    return None


class SandboxHost:
    """A machine unit's host (a :class:`~openstack_charms.host.HostBackend`), inside its container."""

    def __init__(self, container: Container, state: pathlib.Path, venv: pathlib.Path | None = None) -> None:
        self.container = container
        #: the sandbox's units directory: every process started here carries it (see ``down``)
        self.state = state
        #: the OpenStack release's venv, which stands in for Ubuntu's OpenStack packages
        self.venv = venv
        #: Ubuntu package -> (the version the charm pinned, what was given instead)
        self.substituted: dict[str, tuple[str, MachinePackage]] = {}

    # files -----------------------------------------------------------------------

    def _path(self, path: str) -> pathlib.Path:
        # the last component is not followed: a symlink is replaced, never written through
        return self.container.path(path, follow=False)

    def stat(self, path: str) -> Stat | None:
        try:
            return Stat.of(os.lstat(self._path(path)))
        except FileNotFoundError:
            return None

    def read(self, path: str) -> bytes | None:
        target = self.container.path(path)
        if not target.is_file():
            return None
        return target.read_bytes()

    def ids(self, user: str, group: str) -> tuple[int, int]:
        passwd = _entry(self.container.path("/etc/passwd"), user)
        if passwd is None:
            raise HostError(f"waiting for user {user} to exist")
        entry = _entry(self.container.path("/etc/group"), group)
        if entry is None:
            raise HostError(f"waiting for group {group} to exist")
        return int(passwd[2]), int(entry[2])

    def _parents(self, path: str) -> pathlib.Path:
        parent = str(pathlib.PurePosixPath(path).parent)
        missing = []
        while self.stat(parent) is None:
            missing.append(parent)
            parent = str(pathlib.PurePosixPath(parent).parent)
        for directory in reversed(missing):
            self.container.path(directory).mkdir(mode=0o755)
        return self.container.path(str(pathlib.PurePosixPath(path).parent))

    def write(self, path: str, data: bytes, user: str, group: str, mode: int) -> Stat:
        uid, gid = self.ids(user, group)
        parent = self._parents(path)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{pathlib.PurePosixPath(path).name}.")
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, parent / pathlib.PurePosixPath(path).name)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise HostError(f"cannot write {path}: {e.strerror}") from None
        return self._stat(path)

    def _stat(self, path: str) -> Stat:
        st = self.stat(path)
        assert st is not None
        return st

    def chown(self, path: str, user: str, group: str, mode: int) -> Stat:
        uid, gid = self.ids(user, group)
        target = self._path(path)
        os.chown(target, uid, gid, follow_symlinks=False)
        os.chmod(target, mode)
        return self._stat(path)

    def make_dir(self, path: str, user: str, group: str, mode: int) -> Stat:
        self.ids(user, group)
        self._parents(path.rstrip("/"))
        with contextlib.suppress(FileExistsError):
            self._path(path).mkdir(mode=mode)
        if not stat.S_ISDIR(self._stat(path).mode):
            raise HostError(f"{path} is not a directory", retry=False)
        return self.chown(path, user, group, mode)

    def remove(self, path: str) -> None:
        self._path(path).unlink(missing_ok=True)

    # packages --------------------------------------------------------------------

    def update_package_lists(self) -> None:
        """Nothing to refresh: :data:`~.packages.MACHINE_PACKAGES` stands in for every archive."""

    def install_apt(self, name: str, version: str) -> None:
        package = MACHINE_PACKAGES.get(name)
        if package is None:
            raise HostError(
                f"apt package {name} is not one the sandbox provides ({', '.join(sorted(MACHINE_PACKAGES))})",
                retry=False,
            )
        try:
            ensure_debian(package.debian)
        except (LookupError, RuntimeError, subprocess.SubprocessError) as e:
            raise HostError(f"providing apt package {name}: {str(e).splitlines()[0]}") from None
        for account in package.accounts:
            self._account(account)
        for path, owner, group, mode in package.directories:
            self.make_dir(path, owner, group, mode)
        for shipped in package.files:
            self.write(shipped.path, self._shipped(shipped), shipped.owner, shipped.group, shipped.mode)
        for program in package.programs:
            self._link(f"/usr/bin/{program}", program)
        self.substituted[name] = (version, package)

    def _link(self, path: str, program: str) -> None:
        if self.venv is None:
            raise HostError(f"{path}: the sandbox has no OpenStack venv", retry=False)
        target = self._path(path)
        if os.path.islink(target) and os.readlink(target) == str(self.venv / "bin" / program):
            return
        target.unlink(missing_ok=True)
        target.symlink_to(self.venv / "bin" / program)

    def _shipped(self, shipped: Shipped) -> bytes:
        if self.venv is None:
            raise HostError(f"{shipped.path}: the sandbox has no OpenStack venv", retry=False)
        if not shipped.from_venv:
            return shipped.text.encode()
        return (self.venv / shipped.from_venv).read_bytes()

    def _account(self, account: Account) -> None:
        """The user and group a package's maintainer script adds (and the groups it joins), in the machine."""
        passwd = self.container.path("/etc/passwd")
        if _entry(passwd, account.name) is None:
            self._root(
                "useradd", "--system", "--user-group", "--home-dir", account.home, "--no-create-home",
                "--shell", account.shell, account.name,
            )  # fmt: skip
        for group in account.groups:
            members = _entry(self.container.path("/etc/group"), group)
            if members is None:
                raise HostError(f"group {group} does not exist for {account.name} to join", retry=False)
            if account.name not in members[3].split(","):
                self._root("usermod", "--append", "--groups", group, account.name)

    def _root(self, *argv: str) -> None:
        done = subprocess.run(
            self.container.command(list(argv), user=None, group=None),
            env={"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise HostError(f"{argv[0]} {argv[-1]}: {done.stderr.strip()[-300:]}", retry=False)

    def install_snap(self, snap: Snap) -> None:
        raise HostError(f"snap {snap.name} cannot be installed: the sandbox has no snapd", retry=False)

    # services --------------------------------------------------------------------

    def _services(self, verb: str, name: str) -> int:
        argv = [sys.executable, "-m", "openstack_charms.units", SERVICES_DIR, verb, name]
        done = subprocess.run(
            self.container.command(argv, user=None, group=None),
            env={
                "PATH": DEFAULT_PATH,
                "LANG": "C.UTF-8",
                "PYTHONPATH": str(LIBS),
                # systemd's DefaultEnvironment: every service carries the sandbox's marker
                "DEFAULT_ENVIRONMENT": shlex.quote(f"{MARKER}={self.state}"),
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode == 1:
            try:
                error = json.loads(done.stderr.strip().splitlines()[-1])
                raise HostError(str(error["message"]), retry=bool(error["retry"]))
            except (ValueError, KeyError, TypeError, IndexError):
                pass
        if done.returncode not in (0, 3):
            raise HostError(f"service {name}: {verb} failed ({done.stderr.strip()[-300:]})")
        return done.returncode

    def running(self, name: str) -> bool:
        return self._services("running", name) == 0

    def start(self, name: str) -> None:
        self._services("start", name)

    def restart(self, name: str) -> None:
        self._services("restart", name)

    def stop(self, name: str) -> None:
        self._services("stop", name)

    def daemon_reload(self) -> None:
        """Nothing to do: the machine's service manager reads a unit at every start."""

    def stop_all(self) -> None:
        """Stop every service the machine runs (``down``)."""
        directory = self.container.path(SERVICES_DIR)
        names = {p.stem for p in directory.glob("*.pid")} | {p.stem for p in directory.glob("*.active")}
        for name in sorted(names):
            with contextlib.suppress(HostError):
                self.stop(name)

    def log(self, name: str) -> pathlib.Path:
        """Where a service's output goes."""
        return self.container.path(f"{SERVICES_DIR}/{name}.log")

    def logs(self) -> list[str]:
        """The services that wrote any output."""
        return sorted(p.stem for p in self.container.path(SERVICES_DIR).glob("*.log"))

    # commands --------------------------------------------------------------------

    def run(self, command: Command) -> Completed:
        env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", MARKER: str(self.state), **command.environment}
        argv = self.container.command(list(command.argv), user=command.user, group=command.group)
        try:
            done = subprocess.run(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=command.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HostError(f"timed out after {command.timeout:g} s") from None
        return Completed(done.returncode, done.stdout, done.stderr)

    def provided(self) -> list[str]:
        """What stood in for each package the charm installed, one line each."""
        lines = []
        for name, (version, package) in sorted(self.substituted.items()):
            given = [f"Debian {', '.join(package.debian)}"] if package.debian else []
            if package.files or package.accounts:
                given.append("the release's venv")
            lines.append(f"{name} {version or '(any)'} -> {' and '.join(given) or 'nothing'}")
        return lines
