"""A machine for machine charms' unit tests: a :class:`~openstack_charms.host.HostBackend` touching nothing.

``FakeHost(tmp_path)`` writes the files the applier would write under that
root (``/etc/x.conf`` becomes ``tmp_path/etc/x.conf``), keeps their owners in
a table (no chown on the test machine), holds what is "installed" and what is
"running", and records every operation in :attr:`FakeHost.calls`, so a test
asserts on what would be installed, written, started::

    host = FakeHost(tmp_path)
    HostApplier(workload, tmp_path / "state", host).apply(start=True)
    assert host.installed == {"tinyproxy": "1.11.1-2.1+deb12u1"}
    assert host.read_text("/etc/tinyproxy/tinyproxy.conf") == "..."
    assert ("start", "tinyproxy") in host.calls

Stats are not calls (the applier's steady hook makes one per declared path);
:attr:`FakeHost.stats` counts them and :attr:`FakeHost.reads` lists the files read.

Apt repositories: ``repositories`` maps a package to the suite it comes from
(``noble-updates/gazpacho``); such a package installs only once ``apt-get
update`` ran while a source in ``/etc/apt/sources.list.d`` named that suite,
as apt would. Device nodes: :attr:`FakeHost.devices` are the character
devices the machine has (``/dev/kvm`` by default, a host with hardware
virtualisation); ``stat`` shows them as such.
"""

from __future__ import annotations

import os
import pathlib
import re
import stat
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..host import Completed, HostError, Stat, update_package_lists
from ..plan import Command, Snap

if TYPE_CHECKING:
    from ..host import HostBackend
    from ..machine import MachineCharm

#: an answer to a command: its exit code, output and error output
Handler = Callable[[Command], Completed]


class FakeHost:
    """A recording :class:`~openstack_charms.host.HostBackend` over a directory."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        archive: Mapping[str, str] | None = None,
        users: Mapping[str, int] | None = None,
        groups: Mapping[str, int] | None = None,
        repositories: Mapping[str, str] | None = None,
        devices: tuple[str, ...] = ("/dev/kvm",),
    ) -> None:
        """``archive`` maps a package to its one available version (``None``: any pin is available).

        ``users``/``groups`` name the accounts that exist (``None``: any name
        exists, with a uid of its own). ``repositories`` maps a package to the
        apt suite it is only in; ``devices`` are the character devices present.
        """
        self.root = pathlib.Path(root)
        self.archive = dict(archive) if archive is not None else None
        self.users = dict(users) if users is not None else None
        self.groups = dict(groups) if groups is not None else None
        self.calls: list[tuple[str, ...]] = []
        self.installed: dict[str, str] = {}
        self.snaps: dict[str, Snap] = {}
        self.running_services: set[str] = set()
        self.starts: dict[str, int] = {}
        """How many times each service was started or restarted (its "pid")."""
        self.owners: dict[str, tuple[int, int]] = {}
        self.stats = 0
        self.reads: list[str] = []
        self.failures: dict[tuple[str, ...], HostError] = {}
        """An operation (as :attr:`calls` records it) mapped to the error it raises."""
        self.commands: dict[str, Handler] = {}
        """A program (``argv[0]``) mapped to what it does; others succeed with no output."""
        self._auto_ids: dict[str, int] = {"root": 0}
        self.repositories = dict(repositories or {})
        self.suites: set[str] = set()
        """The suites the package lists knew at the last ``apt-get update``."""
        self.devices: set[str] = set(devices)

    # inspection

    def path(self, path: str) -> pathlib.Path:
        """Where an absolute machine path lives under the root."""
        if not path.startswith("/"):
            raise ValueError(f"{path} is not absolute")
        return self.root / path.lstrip("/")

    def read_text(self, path: str) -> str:
        """The content of a file on the fake machine."""
        return self.path(path).read_text()

    def mode(self, path: str) -> int:
        """The permission bits of a path."""
        return stat.S_IMODE(self.path(path).stat().st_mode)

    def owner(self, path: str) -> tuple[int, int]:
        """The uid and gid the path belongs to."""
        return self.owners.get(path, (0, 0))

    def drift(
        self, path: str, *, uid: int | None = None, gid: int | None = None, mode: int | None = None
    ) -> None:
        """Change a path's owner or mode by hand (unrecorded), as an operator would."""
        old_uid, old_gid = self.owner(path)
        self.owners[path] = (old_uid if uid is None else uid, old_gid if gid is None else gid)
        if mode is not None:
            self.path(path).chmod(mode)
        # a real chown moves the ctime: so does this chmod to the same mode
        os.chmod(self.path(path), stat.S_IMODE(self.path(path).stat().st_mode))

    def _op(self, *call: str) -> None:
        self.calls.append(call)
        error = self.failures.get(call)
        if error is not None:
            raise error

    def _id(self, table: dict[str, int] | None, name: str, kind: str) -> int:
        if table is not None:
            if name not in table:
                raise HostError(f"waiting for {kind} {name} to exist")
            return table[name]
        return self._auto_ids.setdefault(name, 1000 + len(self._auto_ids))

    # HostBackend: files

    def stat(self, path: str) -> Stat | None:
        self.stats += 1
        if path in self.devices:
            # a character device (root:root 0660), made when the machine booted
            return Stat(1, 0, 0, stat.S_IFCHR | 0o660, 0, 0)
        try:
            st = os.lstat(self.path(path))
        except FileNotFoundError:
            return None
        uid, gid = self.owner(path)
        return Stat(st.st_ino, st.st_ctime_ns, st.st_size, st.st_mode, uid, gid)

    def read(self, path: str) -> bytes | None:
        self.reads.append(path)
        target = self.path(path)
        return target.read_bytes() if target.is_file() else None

    def ids(self, user: str, group: str) -> tuple[int, int]:
        return self._id(self.users, user, "user"), self._id(self.groups, group, "group")

    def write(self, path: str, data: bytes, user: str, group: str, mode: int) -> Stat:
        self._op("write", path)
        ids = self.ids(user, group)
        target = self.path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(target)
        self.owners[path] = ids
        st = self.stat(path)
        assert st is not None
        return st

    def chown(self, path: str, user: str, group: str, mode: int) -> Stat:
        self._op("chown", path, f"{user}:{group}", f"{mode:o}")
        self.owners[path] = self.ids(user, group)
        self.path(path).chmod(mode)
        st = self.stat(path)
        assert st is not None
        return st

    def make_dir(self, path: str, user: str, group: str, mode: int) -> Stat:
        self._op("mkdir", path)
        ids = self.ids(user, group)
        self.path(path).mkdir(parents=True, exist_ok=True)
        self.path(path).chmod(mode)
        self.owners[path] = ids
        st = self.stat(path)
        assert st is not None
        return st

    def remove(self, path: str) -> None:
        self._op("remove", path)
        self.path(path).unlink(missing_ok=True)
        self.owners.pop(path, None)

    # HostBackend: packages

    def update_package_lists(self) -> None:
        # as a real machine does it: the command, which a test may make fail
        update_package_lists(self)

    def install_apt(self, name: str, version: str) -> None:
        self._op("apt", name, version)
        suite = self.repositories.get(name)
        if suite is not None and suite not in self.suites:
            spec = f"{name}={version}" if version else name
            raise HostError(f"apt package {spec} is not in the archive", retry=False)
        if self.archive is not None:
            available = self.archive.get(name)
            if available is None or (version and version != available):
                spec = f"{name}={version}" if version else name
                raise HostError(f"apt package {spec} is not in the archive", retry=False)
            version = available
        self.installed[name] = version or "candidate"

    def install_snap(self, snap: Snap) -> None:
        self._op("snap", snap.name, snap.channel, snap.revision)
        self.snaps[snap.name] = snap

    # HostBackend: services

    def running(self, name: str) -> bool:
        self._op("running", name)
        return name in self.running_services

    def start(self, name: str) -> None:
        self._op("start", name)
        self.running_services.add(name)
        self.starts[name] = self.starts.get(name, 0) + 1

    def restart(self, name: str) -> None:
        self._op("restart", name)
        self.running_services.add(name)
        self.starts[name] = self.starts.get(name, 0) + 1

    def stop(self, name: str) -> None:
        self._op("stop", name)
        self.running_services.discard(name)

    def daemon_reload(self) -> None:
        self._op("daemon-reload")

    # HostBackend: commands

    def run(self, command: Command) -> Completed:
        self._op("run", *command.argv)
        handler = self.commands.get(command.argv[0])
        if handler is not None:
            return handler(command)
        if command.argv[:2] == ("apt-get", "update"):
            self.suites = self._source_suites()
        return Completed(0, "", "")

    def _source_suites(self) -> set[str]:
        sources = self.path("/etc/apt/sources.list.d")
        files = sorted(sources.glob("*.sources")) if sources.is_dir() else []
        return {
            suite
            for f in files
            for line in re.findall(r"^Suites:(.*)$", f.read_text(), re.MULTILINE)
            for suite in line.split()
        }


def on_fake_host(
    charm_class: type[MachineCharm[Any, Any]], root: pathlib.Path | Callable[[], pathlib.Path]
) -> tuple[type[MachineCharm[Any, Any]], FakeHost | None]:
    """``charm_class`` running on a fake host under ``root`` (its manifest in ``root/state``).

    With a callable ``root`` each run asks it for the unit's root (one fake host per
    distinct root): a test that starts several new units uses it. The fake host is
    returned for a fixed root.
    """
    hosts: dict[pathlib.Path, FakeHost] = {}

    def where() -> pathlib.Path:
        return root() if callable(root) else root

    def host_of(directory: pathlib.Path) -> FakeHost:
        if directory not in hosts:
            hosts[directory] = FakeHost(directory / "machine")
        return hosts[directory]

    class OnFakeHost(charm_class):  # type: ignore[valid-type,misc]
        def host_backend(self) -> FakeHost:
            return host_of(where())

        @property
        def state_dir(self) -> pathlib.Path:
            return where() / "state"

    OnFakeHost.__name__ = charm_class.__name__
    return OnFakeHost, None if callable(root) else host_of(root)


def on_host(
    charm_class: type[MachineCharm[Any, Any]], machine_of: Callable[[str], tuple[HostBackend, pathlib.Path]]
) -> type[MachineCharm[Any, Any]]:
    """``charm_class`` on the machine ``machine_of(unit name)`` gives: its backend and state directory."""

    class OnHost(charm_class):  # type: ignore[valid-type,misc]
        def host_backend(self) -> HostBackend:
            return machine_of(self.unit.name)[0]

        @property
        def state_dir(self) -> pathlib.Path:
            return machine_of(self.unit.name)[1]

    OnHost.__name__ = charm_class.__name__
    return OnHost


def host_commands(host: FakeHost | None) -> list[tuple[str, ...]]:
    """The commands run on a fake host so far."""
    return [call[1:] for call in (host.calls if host else []) if call[:1] == ("run",)]


if TYPE_CHECKING:
    # pyright proves the fake keeps up with the protocol it stands in for
    _backend: type[HostBackend] = FakeHost
