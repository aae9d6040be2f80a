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
not the applier's: on a machine they are the charm's own (update-status), and
a check's ``restarts`` is not acted on (the unit's ``Restart=`` restarts a
service that exits; one that hangs is the charm's to find).

Apt repositories (:class:`~openstack_charms.plan.AptRepository`) come before
any package: their keyring packages are installed, their source files
written like any declared file, and ``apt-get update`` run once when one of
them changed (or a source was dropped), and again in the next hook while it
has not succeeded.

Everything that touches the machine goes through a :class:`HostBackend`:
:class:`SystemHost` is the real one; ``openstack_charms.testing.host.FakeHost``
stands in for it in unit tests. Services are managed by :class:`SystemdServices`
where systemd runs, and by :class:`ProcessServices` (which runs what the unit
file declares, itself) where it does not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .plan import APT_SOURCES, HOST, Applier, Apt, Command, Directory, File, Service, Snap, Workload, _digest
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

    def update_package_lists(self) -> None:
        """Read the apt sources' package lists again (``apt-get update``); HostError naming why it failed."""
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
        #: the repositories' source and key files, written before any package is installed
        self._sources: tuple[File, ...] = tuple(f for r in workload.repositories for f in r.files())
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
        if old.get("apt-update"):
            new["apt-update"] = True
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
        self._repositories(old, new)
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
        declared = {f.path for f in (*self._files, *self._sources)}
        # a dropped repository's source is gone already (its own step removed it)
        for stale in sorted(set(new["files"]) - declared):
            self.backend.remove(stale)
            del new["files"][stale]
            reload |= stale.startswith(CHARM_UNITS + "/")
        if reload:
            self.backend.daemon_reload()
        if not start:
            return set()
        return self._services(names, new)

    def _repositories(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Keyring packages, then source files; ``apt-get update`` when a source changed or was dropped."""
        keyrings = [r.keyring_package for r in self.workload.repositories if r.keyring_package]
        self._install_each(keyrings, new["packages"])
        old_files: dict[str, Any] = old.get("files") or {}
        changed = False
        for f in self._sources:
            entry, content_changed = self._file(f, old_files.get(f.path))
            new["files"][f.path] = entry
            changed |= content_changed
        declared = {f.path for f in self._sources}
        for stale in sorted(p for p in old_files if p.startswith(APT_SOURCES + "/") and p not in declared):
            self.backend.remove(stale)
            del new["files"][stale]
            changed = True
        if not changed and not new.get("apt-update"):
            return
        # kept until it succeeds: the sources are written, so only this flag makes the next hook retry
        new["apt-update"] = True
        try:
            self.backend.update_package_lists()
        except HostError as e:
            logger.error("apt-get update: %s", e.message)
            raise HostError("apt-get update failed after an apt source changed; will retry") from None
        del new["apt-update"]
        logger.info(
            "apt sources updated: %s", ", ".join(r.name for r in self.workload.repositories) or "none"
        )

    def _install(self, recorded: dict[str, str]) -> None:
        self._install_each(self.workload.packages, recorded)
        # a package no longer declared stays: others may depend on it, and removing it is the operator's call
        declared = {_package_key(p) for p in self.workload.packages} | {
            _package_key(r.keyring_package) for r in self.workload.repositories if r.keyring_package
        }
        for key in set(recorded) - declared:
            del recorded[key]

    def _install_each(self, packages: Sequence[Apt | Snap], recorded: dict[str, str]) -> None:
        for package in packages:
            key, digest = _package_key(package), _package_digest(package)
            if recorded.get(key) == digest:
                continue
            if isinstance(package, Apt):
                self.backend.install_apt(package.name, package.version)
            else:
                self.backend.install_snap(package)
            recorded[key] = digest
            logger.info("installed %s", key)

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
                from .units import ProcessServices

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

    def update_package_lists(self) -> None:
        update_package_lists(self)

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


#: what refreshes a machine's package lists
APT_UPDATE = Command(
    ("apt-get", "update", "-q"), environment={"DEBIAN_FRONTEND": "noninteractive"}, timeout=600
)


def update_package_lists(host: HostBackend) -> None:
    """``apt-get update`` on ``host``: HostError with its last line when it fails."""
    done = host.run(APT_UPDATE)
    if done.returncode != 0:
        raise HostError(_last_line(done.stderr) or f"exit code {done.returncode}")


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


if TYPE_CHECKING:
    # pyright proves the structural contracts: the applier is a plan.Applier, the real machine a backend
    _applier: type[Applier] = HostApplier
    _backend: type[HostBackend] = SystemHost
    _services: tuple[type[ServiceManager], ...] = (SystemdServices,)
