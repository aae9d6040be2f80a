"""The machine's workload applied: pinned packages, owned files, systemd units, one-shot commands.

:class:`HostApplier` carries out a :class:`~openstack_charms.plan.Workload` whose
target is :data:`~openstack_charms.plan.HOST`, keeping a manifest (JSON, mode
0600, in a state directory of the charm's) of what it applied, so that a hook
where nothing changed runs no dpkg, apt or systemctl and reads no file but the
manifest.

Drift (someone editing, chmod-ing or removing a declared file by hand) is
noticed with one ``lstat`` per declared file and directory, no process and no
read: the manifest keeps what the file looked like right after the applier
wrote it (inode, ctime, size, type and mode, uid, gid). ctime is the key: every
write, chmod, chown or replacement of the file moves it, and unlike mtime no
tool can set it back. When the stat differs the file is read and compared: a
different or missing content is written again and restarts the file's
services; a wrong owner or mode is repaired without a restart. Directories are
compared on inode, mode and owner (their ctime moves with every file in them).
Packages and running services are trusted from the manifest: a package removed
or a service killed by hand is not looked for in a steady hook (systemd's
``Restart=`` is what brings a crashed service back).

A :class:`~openstack_charms.plan.Service` declared with a ``command`` gets a
unit the applier writes (:func:`unit_file`) unless the charm declares that
file itself; one without takes the unit its package ships. Health checks are
not the applier's: on a machine they are the charm's own (update-status).

Everything that touches the machine goes through a :class:`HostBackend`:
:class:`SystemHost` is the real one; ``openstack_charms.testing.host.FakeHost``
stands in for it in unit tests. Services are managed by :class:`SystemdServices`
where systemd runs, and by :class:`ProcessServices` (which runs what the unit
file declares, itself) where it does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import re
import shlex
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol

from .plan import HOST, Applier, Apt, Command, Directory, File, Service, Snap, Workload, _digest
from .status import Blocked, Waiting

logger = logging.getLogger(__name__)

#: where the units the charm writes live; a change there needs a daemon-reload
CHARM_UNITS = "/etc/systemd/system"
#: where unit files are looked up, the charm's own first (systemd's order)
UNIT_PATH = (CHARM_UNITS, "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
#: the PATH systemd gives a service, and the applier a one-shot command
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MANIFEST_VERSION = 1


class HostError(Exception):
    """A machine operation failed; the message is one line naming the package, path or service.

    ``retry`` says whether a later hook may succeed without the operator
    (becomes Waiting) or not (becomes Blocked).
    """

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry

    def status(self) -> Waiting | Blocked:
        """The not-ready condition this failure is."""
        line = self.message.strip().splitlines()[0] if self.message.strip() else "host operation failed"
        return Waiting(line) if self.retry else Blocked(line)


class Stat(NamedTuple):
    """What the applier remembers of a path: enough to notice any change without reading it."""

    ino: int
    ctime_ns: int
    size: int
    mode: int
    """The whole ``st_mode``: type and permission bits."""
    uid: int
    gid: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stat:
        """From an ``os.stat_result``."""
        return cls(st.st_ino, st.st_ctime_ns, st.st_size, st.st_mode, st.st_uid, st.st_gid)


class Completed(NamedTuple):
    """A finished one-shot command."""

    returncode: int
    stdout: str
    stderr: str


class ServiceManager(Protocol):
    """Starts and stops services by their unit name."""

    def running(self, name: str) -> bool:
        """Whether the service runs now."""
        ...

    def start(self, name: str) -> None:
        """Start the service and have it start at boot; raises HostError."""
        ...

    def restart(self, name: str) -> None:
        """Stop the service if it runs, then start it; raises HostError."""
        ...

    def stop(self, name: str) -> None:
        """Stop the service and no longer start it at boot; raises HostError."""
        ...

    def daemon_reload(self) -> None:
        """Make the service manager read the unit files again."""
        ...


class HostBackend(ServiceManager, Protocol):
    """Every operation :class:`HostApplier` makes on the machine.

    Paths are absolute paths on the machine; every method raises
    :class:`HostError` for a failure a status should report.
    """

    def stat(self, path: str) -> Stat | None:
        """The path's stat without following a symlink, or ``None`` when it does not exist."""
        ...

    def read(self, path: str) -> bytes | None:
        """The file's content, or ``None`` when it is missing or not a regular file."""
        ...

    def ids(self, user: str, group: str) -> tuple[int, int]:
        """The uid and gid of a user and group; HostError (retry) when one does not exist yet."""
        ...

    def write(self, path: str, data: bytes, user: str, group: str, mode: int) -> Stat:
        """Replace the file atomically with this content, owner and mode (parents made root 0755)."""
        ...

    def chown(self, path: str, user: str, group: str, mode: int) -> Stat:
        """Give an existing path this owner and mode."""
        ...

    def make_dir(self, path: str, user: str, group: str, mode: int) -> Stat:
        """Make a directory (missing parents root 0755) with this owner and mode."""
        ...

    def remove(self, path: str) -> None:
        """Remove a file if it exists."""
        ...

    def install_apt(self, name: str, version: str) -> None:
        """Install a Debian package at exactly ``version`` (``""``: the candidate)."""
        ...

    def install_snap(self, snap: Snap) -> None:
        """Install or refresh a snap to its channel and revision, and set its settings."""
        ...

    def run(self, command: Command) -> Completed:
        """Run a command to completion; HostError only when it could not run or timed out."""
        ...


def _package_key(package: Apt | Snap) -> str:
    return f"apt:{package.name}" if isinstance(package, Apt) else f"snap:{package.name}"


def _package_digest(package: Apt | Snap) -> str:
    if isinstance(package, Apt):
        return _digest("apt", package.name, package.version)
    # settings may hold secrets: the manifest keeps only this digest of them
    return _digest(
        "snap",
        package.name,
        package.channel,
        package.revision,
        package.classic,
        json.dumps(dict(package.settings), sort_keys=True),
    )


class HostApplier:
    """Applies a :data:`~openstack_charms.plan.HOST` workload to the machine (``plan.Applier``).

    ``state_dir`` holds the manifest (and, with :class:`ProcessServices`, the
    services' pid files and logs); it should outlive the charm's hooks but not
    the machine's packages: ``/var/lib/juju/agents/unit-*/charm-state`` or alike.
    """

    def __init__(
        self, workload: Workload, state_dir: str | os.PathLike[str], backend: HostBackend | None = None
    ) -> None:
        if workload.target != HOST:
            raise ValueError(f"HostApplier applies the {HOST} workload, not {workload.target}")
        self.workload = workload
        self.state_dir = pathlib.Path(state_dir)
        self.manifest_path = self.state_dir / "manifest.json"
        self.backend: HostBackend = backend if backend is not None else SystemHost(self.state_dir)
        written = {f.path for f in workload.files}
        # a service declared with a command needs a unit, unless the charm writes its own
        self._files: tuple[File, ...] = (
            *workload.files,
            *(
                unit
                for unit in (unit_file(s) for s in workload.services if s.command)
                if unit.path not in written
            ),
        )
        self._read: dict[str, Any] | None = None
        self._known: dict[str, Any] | None = None
        self._written: dict[str, Any] | None = None

    # the manifest

    def _manifest(self) -> dict[str, Any]:
        if self._known is not None:
            return self._known
        if self._read is None:
            try:
                loaded = json.loads(self.manifest_path.read_text())
                self._read = (
                    loaded if isinstance(loaded, dict) and loaded.get("v") == MANIFEST_VERSION else {}
                )
            except FileNotFoundError:
                self._read = {}
            except (OSError, ValueError):
                logger.warning("unreadable manifest %s; checking everything", self.manifest_path)
                self._read = {}
            self._written = self._read
        return self._read

    def record(self) -> None:
        """Write what was applied into the manifest (atomically, mode 0600), if it changed."""
        if self._known is None or self._known == self._written:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".manifest.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self._known, handle, sort_keys=True)
            os.replace(tmp, self.manifest_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._written = self._known

    # apply

    def apply(self, *, start: bool, record: bool = True) -> set[str]:
        """Install, write and (with ``start``) start or restart what the workload needs.

        With ``start=False`` the services whose files changed are kept pending
        in the manifest and restarted by the next ``apply(start=True)``, even
        in a later hook. With ``record=False`` the manifest is written by
        :meth:`record` or the next recording apply; what an apply that fails
        half-way did is recorded all the same, since it is done. Returns the
        services started or restarted; failures raise Waiting or Blocked.
        """
        old = self._manifest()
        new: dict[str, Any] = {
            "v": MANIFEST_VERSION,
            # copies of what was applied, updated step by step: a failure half-way records what was done
            "packages": dict(old.get("packages") or {}),
            "dirs": dict(old.get("dirs") or {}),
            "files": dict(old.get("files") or {}),
            "started": list(old.get("started") or []),
            "pending": list(old.get("pending") or []),
        }
        done = False
        try:
            acted = self._apply(old, new, start=start)
            done = True
            return acted
        except HostError as e:
            logger.error("%s", e.message)
            raise e.status() from None
        finally:
            self._known = new
            # the hook ends with the failure: what was done must not be done again in the next one
            if record or not done:
                self.record()

    def _apply(self, old: dict[str, Any], new: dict[str, Any], *, start: bool) -> set[str]:
        self._install(new["packages"])
        old_dirs: dict[str, Any] = old.get("dirs") or {}
        for d in self.workload.directories:
            new["dirs"][d.path] = self._directory(d, old_dirs.get(d.path))
        for stale in set(old_dirs) - {d.path for d in self.workload.directories}:
            # a directory may hold data the charm never wrote: forget it, never remove it
            del new["dirs"][stale]
        names = [s.name for s in self.workload.services]
        old_files: dict[str, Any] = old.get("files") or {}
        pending: set[str] = set(new["pending"])
        reload = False
        for f in self._files:
            entry, content_changed = self._file(f, old_files.get(f.path))
            new["files"][f.path] = entry
            if content_changed:
                pending |= set(names) if f.restarts is None else set(f.restarts)
                new["pending"] = sorted(pending)
                reload |= f.path.startswith(CHARM_UNITS + "/")
        for stale in sorted(set(old_files) - {f.path for f in self._files}):
            self.backend.remove(stale)
            del new["files"][stale]
            reload |= stale.startswith(CHARM_UNITS + "/")
        if reload:
            self.backend.daemon_reload()
        if not start:
            return set()
        return self._services(names, new)

    def _install(self, recorded: dict[str, str]) -> None:
        for package in self.workload.packages:
            key, digest = _package_key(package), _package_digest(package)
            if recorded.get(key) == digest:
                continue
            if isinstance(package, Apt):
                self.backend.install_apt(package.name, package.version)
            else:
                self.backend.install_snap(package)
            recorded[key] = digest
            logger.info("installed %s", key)
        # a package no longer declared stays: others may depend on it, and removing it is the operator's call
        declared = {_package_key(p) for p in self.workload.packages}
        for key in set(recorded) - declared:
            del recorded[key]

    def _directory(self, d: Directory, entry: Any) -> dict[str, Any]:
        digest = d.digest()
        st = self.backend.stat(d.path)
        seen = _recorded(entry, digest)
        if st is not None and seen is not None and _dir_key(st) == _dir_key(seen):
            return entry
        if st is None:
            parent = os.path.dirname(d.path.rstrip("/")) or "/"
            if not d.make_parents and self.backend.stat(parent) is None:
                raise HostError(f"waiting for {parent} to exist (the parent of {d.path})")
            st = self.backend.make_dir(d.path, d.user, d.owner_group, d.permissions)
        elif not stat.S_ISDIR(st.mode):
            raise HostError(f"{d.path} is not a directory", retry=False)
        elif (st.uid, st.gid, stat.S_IMODE(st.mode)) != (
            *self.backend.ids(d.user, d.owner_group),
            d.permissions,
        ):
            st = self.backend.chown(d.path, d.user, d.owner_group, d.permissions)
        return {"digest": digest, "stat": list(st)}

    def _file(self, f: File, entry: Any) -> tuple[dict[str, Any], bool]:
        """The file's manifest entry after making it right, and whether its content changed."""
        digest = f.digest()
        st = self.backend.stat(f.path)
        if st is not None and st == _recorded(entry, digest):
            return entry, False
        data = f.content.encode()
        current = self.backend.read(f.path) if st is not None else None
        if current != data:
            st = self.backend.write(f.path, data, f.user, f.owner_group, f.permissions)
            return {"digest": digest, "stat": list(st)}, True
        assert st is not None
        uid, gid = self.backend.ids(f.user, f.owner_group)
        if (st.uid, st.gid, stat.S_IMODE(st.mode)) != (uid, gid, f.permissions):
            st = self.backend.chown(f.path, f.user, f.owner_group, f.permissions)
        return {"digest": digest, "stat": list(st)}, False

    def _services(self, names: list[str], new: dict[str, Any]) -> set[str]:
        started: set[str] = set(new["started"])
        pending: set[str] = set(new["pending"])
        acted: set[str] = set()
        for name in names:
            if name in started and name not in pending:
                continue
            if name not in started and not self.backend.running(name):
                self.backend.start(name)
            elif name in pending:
                self.backend.restart(name)
            else:
                # already running (a package's postinst started it) with nothing of ours changed
                started.add(name)
                new["started"] = sorted(started)
                continue
            acted.add(name)
            started.add(name)
            pending.discard(name)
            new["started"], new["pending"] = sorted(started), sorted(pending)
        for stale in sorted(started - set(names)):
            self.backend.stop(stale)
            started.discard(stale)
            new["started"] = sorted(started)
        new["pending"] = []
        if acted:
            logger.info("started or restarted %s", ", ".join(sorted(acted)))
        return acted

    def run(self, command: Command) -> str:
        """Run a one-shot command to completion and return its output.

        A failure becomes :class:`Waiting` (the next hook retries it) and logs
        the last line of the command's error output, never its arguments nor
        its environment (passwords travel there).
        """
        try:
            done = self.backend.run(command)
        except HostError as e:
            logger.error("%s: %s", command.title, e.message)
            raise Waiting(f"{command.title} did not finish ({e.message}); will retry") from None
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or ["no error output"]
            logger.error("%s failed with exit code %s: %s", command.title, done.returncode, last[0])
            raise Waiting(f"{command.title} failed (exit code {done.returncode}); will retry")
        return done.stdout


def _recorded(entry: Any, digest: str) -> Stat | None:
    """What the manifest saw of a path last applied with this digest (None: another digest, or garbled)."""
    if not isinstance(entry, dict) or entry.get("digest") != digest:
        return None
    seen = entry.get("stat")
    if (
        not isinstance(seen, list)
        or len(seen) != len(Stat._fields)
        or not all(isinstance(v, int) for v in seen)
    ):
        return None
    return Stat(*seen)


def _dir_key(st: Stat) -> tuple[int, int, int, int]:
    return st.ino, st.mode, st.uid, st.gid


def _systemd_quote(word: str, *, command: bool = True) -> str:
    """One word as systemd reads it back verbatim: quoted, with no specifier (nor, in a command, variable)."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return '"' + (escaped.replace("$", "$$") if command else escaped) + '"'


def unit_file(service: Service) -> File:
    """The unit the charm writes for a service declared with a command (restarting it when it changes).

    The command is split as Pebble splits it and every word quoted, so the
    process gets exactly those arguments; the environment is set verbatim.
    """
    lines = [
        "[Unit]",
        f"Description={service.summary or service.name} (managed by its charm)",
        "After=network-online.target",
        "",
        "[Service]",
        "ExecStart=" + " ".join(_systemd_quote(w) for w in shlex.split(service.command)),
    ]
    if service.user:
        lines.append(f"User={service.user}")
    if service.group:
        lines.append(f"Group={service.group}")
    lines += [
        f"Environment={_systemd_quote(f'{k}={v}', command=False)}" for k, v in service.environment.items()
    ]
    lines += ["Restart=on-failure", "", "[Install]", "WantedBy=multi-user.target", ""]
    return File(
        f"{CHARM_UNITS}/{service.name}.service",
        "\n".join(lines),
        permissions=0o644,
        restarts=(service.name,),
    )


# the real machine


def _user_ids(user: str, group: str | None = None) -> tuple[int, int, list[int]]:
    """Uid, gid and supplementary groups of a user (the group defaults to the user's own)."""
    import grp
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise HostError(f"waiting for user {user} to exist") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    except KeyError:
        raise HostError(f"waiting for group {group} to exist") from None
    return pw.pw_uid, gid, os.getgrouplist(user, gid)


def _base_environment(user: str | None) -> dict[str, str]:
    """What systemd gives a service before its own settings: PATH, and the account of its User=."""
    env = {"PATH": DEFAULT_PATH}
    if user:
        import pwd

        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(user)
            env |= {"HOME": pw.pw_dir, "USER": user, "LOGNAME": user, "SHELL": pw.pw_shell}
    return env


class SystemHost:
    """The real machine (a :class:`HostBackend`): charmlibs' apt and snap, a service manager, the filesystem.

    The service manager is chosen when first needed: :class:`SystemdServices`
    when systemd runs (``/run/systemd/system`` exists), else
    :class:`ProcessServices` keeping its pid files under ``state_dir``.
    """

    def __init__(self, state_dir: str | os.PathLike[str], services: ServiceManager | None = None) -> None:
        self.state_dir = pathlib.Path(state_dir)
        self._services = services

    @property
    def services(self) -> ServiceManager:
        """The service manager of this machine."""
        if self._services is None:
            if os.path.isdir("/run/systemd/system"):
                self._services = SystemdServices()
            else:
                self._services = ProcessServices(self.state_dir / "services")
        return self._services

    # files

    def stat(self, path: str) -> Stat | None:
        try:
            return Stat.of(os.lstat(path))
        except FileNotFoundError:
            return None

    def read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return None
                return handle.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def ids(self, user: str, group: str) -> tuple[int, int]:
        uid, gid, _ = _user_ids(user, group)
        return uid, gid

    def write(self, path: str, data: bytes, user: str, group: str, mode: int) -> Stat:
        uid, gid = self.ids(user, group)
        parent = os.path.dirname(path)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.")
        try:
            # owner and mode before the content: a secret is never readable by others, not even briefly
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise HostError(f"cannot write {path}: {e.strerror}") from None
        return Stat.of(os.lstat(path))

    def chown(self, path: str, user: str, group: str, mode: int) -> Stat:
        uid, gid = self.ids(user, group)
        try:
            os.chown(path, uid, gid, follow_symlinks=False)
            os.chmod(path, mode)
            return Stat.of(os.lstat(path))
        except OSError as e:
            raise HostError(f"cannot set the owner and mode of {path}: {e.strerror}") from None

    def make_dir(self, path: str, user: str, group: str, mode: int) -> Stat:
        # a missing user is waited for before anything is made
        self.ids(user, group)
        try:
            os.makedirs(os.path.dirname(path.rstrip("/")) or "/", mode=0o755, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, mode)
        except OSError as e:
            raise HostError(f"cannot make directory {path}: {e.strerror}") from None
        return self.chown(path, user, group, mode)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    # packages

    def install_apt(self, name: str, version: str) -> None:
        from charmlibs import apt

        spec = f"{name}={version}" if version else name

        def find() -> apt.DebianPackage | None:
            try:
                return apt.DebianPackage.from_system(name, version)
            except apt.PackageNotFoundError:
                return None

        package = find()
        if package is None:
            # the archive may have moved on since the cache was made (or there is none yet): refresh once
            try:
                apt.update()
            except subprocess.CalledProcessError:
                raise HostError(f"apt-get update failed while looking for {spec}; will retry") from None
            package = find()
        if package is None:
            raise HostError(f"apt package {spec} is not in the archive", retry=False)
        try:
            package.ensure(apt.PackageState.Present)
        except apt.PackageError as e:
            logger.error("installing %s: %s", spec, _last_line(e.message))
            raise HostError(f"installing apt package {spec} failed; will retry") from None

    def install_snap(self, snap: Snap) -> None:
        from charmlibs import snap as snaps

        try:
            snaps.ensure_installed(
                snap.name,
                snap.channel or None,
                revision=snap.revision or None,
                classic=snap.classic,
                update=False,
            )
            if snap.revision:
                # a revision is no pin to snapd: hold it, or the next auto-refresh moves it
                snaps.hold(snap.name)
            if snap.settings:
                snaps.set(snap.name, dict(snap.settings))
        except (
            snaps.NotInStoreError,
            snaps.ChannelNotAvailableError,
            snaps.RevisionNotAvailableError,
            snaps.NeedsClassicError,
            snaps.SocketNotFoundError,
        ) as e:
            logger.error("snap %s: %s", snap.name, _last_line(str(e)))
            raise HostError(
                f"snap {snap.name} cannot be installed: {type(e).__name__}", retry=False
            ) from None
        except snaps.Error as e:
            logger.error("snap %s: %s", snap.name, _last_line(str(e)))
            raise HostError(f"installing snap {snap.name} failed; will retry") from None

    # services

    def running(self, name: str) -> bool:
        return self.services.running(name)

    def start(self, name: str) -> None:
        self.services.start(name)

    def restart(self, name: str) -> None:
        self.services.restart(name)

    def stop(self, name: str) -> None:
        self.services.stop(name)

    def daemon_reload(self) -> None:
        self.services.daemon_reload()

    # commands

    def run(self, command: Command) -> Completed:
        kwargs: dict[str, Any] = {}
        if command.user or command.group:
            uid, gid, groups = _user_ids(command.user or "root", command.group)
            kwargs = {"user": uid, "group": gid, "extra_groups": groups}
        # a fixed locale: the charm may parse what the command prints
        env = _base_environment(command.user) | {"LANG": "C.UTF-8"} | dict(command.environment)
        try:
            done = subprocess.run(
                list(command.argv),
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=command.timeout,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired:
            raise HostError(f"timed out after {command.timeout:g} s") from None
        except OSError as e:
            raise HostError(f"cannot run: {e.strerror}") from None
        return Completed(done.returncode, done.stdout, done.stderr)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


class SystemdServices:
    """systemd through charmlibs-systemd (a :class:`ServiceManager`)."""

    def running(self, name: str) -> bool:
        from charmlibs import systemd

        return systemd.service_running(name)

    def _call(self, what: str, name: str, *args: str) -> None:
        from charmlibs import systemd

        try:
            getattr(systemd, f"service_{what}")(*args, name)
        except systemd.SystemdError as e:
            logger.error("systemctl %s %s: %s", what, name, _last_line(str(e)))
            raise HostError(f"service {name} did not {what}; will retry") from None

    def start(self, name: str) -> None:
        self._call("enable", name)
        self._call("start", name)

    def restart(self, name: str) -> None:
        self._call("restart", name)

    def stop(self, name: str) -> None:
        self._call("stop", name)
        self._call("disable", name)

    def daemon_reload(self) -> None:
        from charmlibs import systemd

        try:
            systemd.daemon_reload()
        except systemd.SystemdError as e:
            logger.error("systemctl daemon-reload: %s", _last_line(str(e)))
            raise HostError("systemctl daemon-reload failed; will retry") from None


# services without systemd

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


@dataclasses.dataclass
class Unit:
    """The ``[Service]`` section of a unit file and its drop-ins, as far as starting it goes."""

    name: str
    path: str
    settings: dict[str, list[str]] = dataclasses.field(default_factory=dict)

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
    main process gets a session of its own, its output goes to
    ``state_dir/<name>.log``, and its pid (with its start time, against pid
    reuse) to ``state_dir/<name>.pid``. Stop sends ``KillSignal=`` (SIGTERM)
    to the process (``KillMode=process``) or its process group, waits
    ``TimeoutStopSec=`` (at most 90 s) then kills. Sandboxing settings
    (``PrivateDevices=``, ...) and ``Restart=`` are not emulated; ``Type=forking``
    needs ``PIDFile=``; ``Type=oneshot`` is refused.
    """

    #: how long a started main process must live for its start to count
    SETTLE = 0.3

    def __init__(self, state_dir: str | os.PathLike[str], unit_path: Iterable[str] = UNIT_PATH) -> None:
        self.state_dir = pathlib.Path(state_dir)
        self.unit_path = tuple(unit_path)

    def _pid_path(self, name: str) -> pathlib.Path:
        return self.state_dir / f"{name}.pid"

    def _log(self, name: str) -> IO[bytes]:
        # a service's output may hold what its configuration holds: readable by root only
        return os.fdopen(
            os.open(self.state_dir / f"{name}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab"
        )

    def pid(self, name: str) -> int | None:
        """The main process of the service, if it runs."""
        try:
            recorded = json.loads(self._pid_path(name).read_text())
            pid, started = int(recorded["pid"]), recorded["start"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        return pid if _start_time(pid) == started else None

    def running(self, name: str) -> bool:
        return self.pid(name) is not None

    def daemon_reload(self) -> None:
        """Nothing to do: the unit file is read at every start."""

    def start(self, name: str) -> None:
        if self.running(name):
            return
        unit = load_unit(name, self.unit_path)
        kind = unit.get("Type", "simple")
        if kind not in _FOREGROUND and kind != "forking":
            raise HostError(f"service {name}: Type={kind} is not supported without systemd", retry=False)
        user = unit.get("User") or None
        group = unit.get("Group") or None
        specs = _specifiers(unit, user)
        env = self._environment(unit, user, specs)
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
        if len(lines["ExecStart"]) != 1:
            raise HostError(f"service {name}: needs exactly one ExecStart", retry=False)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
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
            pid = self._forked_pid(unit, proc, specs)
        else:
            pid = proc.pid
            deadline = time.monotonic() + self.SETTLE
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            if proc.poll() is not None:
                self._failed(name, f"exited with code {proc.returncode} at start")
        self._pid_path(name).write_text(json.dumps({"pid": pid, "start": _start_time(pid)}))
        os.chmod(self._pid_path(name), 0o600)
        for line in lines["ExecStartPost"]:
            self._run_to_end(name, line, env, cwd, creds)

    def _failed(self, name: str, what: str) -> None:
        log = self.state_dir / f"{name}.log"
        with contextlib.suppress(OSError):
            logger.error("service %s %s: %s", name, what, _last_line(log.read_text(errors="replace")[-4096:]))
        raise HostError(f"service {name} {what}; will retry")

    def _forked_pid(self, unit: Unit, proc: subprocess.Popen[Any], specs: Mapping[str, str]) -> int:
        pid_file = _resolve(unit, unit.get("PIDFile"), specs)
        if not pid_file:
            raise HostError(f"service {unit.name}: Type=forking without PIDFile=", retry=False)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self._failed(unit.name, "did not fork within 90 s")
            raise
        if code != 0:
            self._failed(unit.name, f"exited with code {code} at start")
        try:
            with open(pid_file) as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            self._failed(unit.name, f"wrote no pid to {pid_file}")
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
        env = _base_environment(user)
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

    def stop(self, name: str) -> None:
        pid = self.pid(name)
        if pid is not None:
            try:
                unit = load_unit(name, self.unit_path)
            except HostError:
                # the package went first: stop what runs the way systemd stops by default
                unit = Unit(f"{name}.service", "")
            sig = _signal(unit.get("KillSignal", "SIGTERM"))
            mode = unit.get("KillMode", "control-group")
            whole_group = mode in ("control-group", "mixed")
            timeout = min(_seconds(unit.get("TimeoutStopSec", "90")), 90.0)
            self._signal(pid, sig, group=mode == "control-group")
            if not _wait_gone(pid, timeout):
                logger.warning("service %s did not stop within %g s; killing it", name, timeout)
                self._signal(pid, signal.SIGKILL, group=whole_group)
                if not _wait_gone(pid, 5):
                    raise HostError(f"service {name} did not stop; will retry")
            if whole_group:
                # what the main process left behind in its session goes with it, as its cgroup would
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            for sub in _resolve(
                unit, " ".join(unit.all("RuntimeDirectory")), _specifiers(unit, None)
            ).split():
                if unit.get("RuntimeDirectoryPreserve", "no") == "no":
                    _remove_tree(os.path.join("/run", sub))
        with contextlib.suppress(FileNotFoundError):
            self._pid_path(name).unlink()

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
        self.stop(name)
        self.start(name)


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


if TYPE_CHECKING:
    # pyright proves the structural contracts: the applier is a plan.Applier, the real machine a backend
    _applier: type[Applier] = HostApplier
    _backend: type[HostBackend] = SystemHost
    _services: tuple[type[ServiceManager], ...] = (SystemdServices, ProcessServices)
