"""The declared plan: what each target (a container, or the machine) runs and holds.

Pure data, no ops calls: a charm returns one :class:`Workload` per target and
an ordered list of :class:`LeaderTask`; an applier per kind of target
(``pebble.PebbleApplier`` for containers, ``host.HostApplier`` for the machine)
carries it out with as few calls as the manifest it keeps allows.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

#: the target of a machine charm's workload
HOST = "host"


def _digest(*parts: object) -> str:
    return hashlib.sha256("\n".join(str(p) for p in parts).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class File:
    """A file the charm owns in its target, with owner and mode.

    ``restarts`` names the services restarted when the file changes; ``None``
    means every service of the target, ``()`` none (a key repository the service
    re-reads on its own).
    """

    path: str
    content: str
    user: str = "root"
    group: str | None = None
    """``None``: the user's name."""
    permissions: int = 0o640
    restarts: tuple[str, ...] | None = None

    @property
    def owner_group(self) -> str:
        """The group the file belongs to."""
        return self.group or self.user

    def digest(self) -> str:
        """What identifies this file's desired state (content, owner and mode)."""
        return _digest(f"{self.user}:{self.owner_group}:{self.permissions:o}", self.content)


@dataclasses.dataclass(frozen=True)
class Directory:
    """A directory the workload needs with its own owner and mode, made before any file.

    With ``make_parents=False`` the parent must exist already (a storage volume's
    mount point): a missing parent is waited for, never replaced by a directory
    that would die with the container.
    """

    path: str
    user: str = "root"
    group: str | None = None
    permissions: int = 0o750
    make_parents: bool = True

    @property
    def owner_group(self) -> str:
        """The group the directory belongs to."""
        return self.group or self.user

    def digest(self) -> str:
        """What identifies this directory's desired state."""
        return _digest(f"{self.user}:{self.owner_group}:{self.permissions:o}", self.make_parents)


@dataclasses.dataclass(frozen=True)
class Service:
    """A long-running process: a Pebble service in a container, a systemd unit on a host.

    On a host, ``command`` may stay empty when the package ships the unit; a
    unit the charm writes itself is a :class:`File` under ``/etc/systemd/system``.
    """

    name: str
    command: str = ""
    user: str | None = None
    group: str | None = None
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    summary: str = ""


@dataclasses.dataclass(frozen=True)
class Check:
    """A health check: an HTTP URL answering 2xx, a command exiting 0, or a TCP port accepting.

    ``restarts`` names services of the same workload that are restarted when
    the check fails (reaches its threshold), as :attr:`File.restarts` names
    those a changed file restarts. In a container Pebble does it (the services'
    ``on-check-failure``); a check restarting nothing is only reported. On a
    host checks are not the applier's, and systemd's ``Restart=`` stands in.
    """

    name: str
    kind: Literal["http", "exec", "tcp"]
    url: str = ""
    command: str = ""
    host: str = ""
    port: int = 0
    user: str | None = None
    level: Literal["alive", "ready"] = "ready"
    period: str = "10s"
    threshold: int = 3
    restarts: tuple[str, ...] = ()

    @classmethod
    def http(
        cls,
        name: str,
        url: str,
        *,
        level: Literal["alive", "ready"] = "ready",
        restarts: tuple[str, ...] = (),
    ) -> Check:
        """A check that ``url`` answers with a success status."""
        return cls(name, "http", url=url, level=level, restarts=restarts)

    @classmethod
    def exec(
        cls,
        name: str,
        command: str,
        *,
        user: str | None = None,
        level: Literal["alive", "ready"] = "ready",
        restarts: tuple[str, ...] = (),
    ) -> Check:
        """A check that ``command`` exits 0."""
        return cls(name, "exec", command=command, user=user, level=level, restarts=restarts)

    @classmethod
    def tcp(
        cls,
        name: str,
        port: int,
        host: str = "",
        *,
        level: Literal["alive", "ready"] = "ready",
        restarts: tuple[str, ...] = (),
    ) -> Check:
        """A check that ``host:port`` (default: this target) accepts a connection."""
        return cls(name, "tcp", port=port, host=host, level=level, restarts=restarts)


@dataclasses.dataclass(frozen=True)
class Command:
    """A one-shot command run in a target (db sync, bootstrap)."""

    argv: tuple[str, ...]
    user: str | None = None
    group: str | None = None
    timeout: float = 600.0
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def title(self) -> str:
        """How statuses and logs name it: the program and its first argument, never the rest."""
        return " ".join(self.argv[:2])


@dataclasses.dataclass(frozen=True)
class Apt:
    """A Debian package at a pinned version (``version=""`` takes the archive's candidate)."""

    name: str
    version: str = ""


@dataclasses.dataclass(frozen=True)
class Snap:
    """A snap from a channel (or a pinned revision), with its settings."""

    name: str
    channel: str = "latest/stable"
    revision: str = ""
    classic: bool = False
    settings: Mapping[str, str] = dataclasses.field(default_factory=dict)


Package = Apt | Snap

#: where the apt sources the charms declare live
APT_SOURCES = "/etc/apt/sources.list.d"


@dataclasses.dataclass(frozen=True)
class AptRepository:
    """An apt source the workload's packages come from: a deb822 file in :data:`APT_SOURCES`.

    It is trusted through the keyring at ``signed_by``: one a package of the
    machine's own archive ships (``keyring_package``, installed before the source
    is added), or the armoured ``key`` the charm declares, written there.
    """

    name: str
    """Names the file: ``/etc/apt/sources.list.d/<name>.sources``."""
    uris: str
    suites: str
    components: str = "main"
    signed_by: str = ""
    keyring_package: Apt | None = None
    key: str = ""

    def __post_init__(self) -> None:
        fields = (self.name, self.uris, self.suites, self.components, self.signed_by)
        # one line each: a value must not add a line (an option, another source) to the file
        if any(not value.isprintable() for value in fields) or not self.name or "/" in self.name:
            raise ValueError(f"apt repository {self.name!r}: every field is one printable line")

    def files(self) -> tuple[File, ...]:
        """The source file, and the key file when the charm ships the key."""
        lines = [
            "Types: deb",
            f"URIs: {self.uris}",
            f"Suites: {self.suites}",
            f"Components: {self.components}",
        ]
        if self.signed_by:
            lines.append(f"Signed-By: {self.signed_by}")
        # apt reads them as root; nothing in them is secret, and no service re-reads them
        source = File(
            f"{APT_SOURCES}/{self.name}.sources", "\n".join(lines) + "\n", permissions=0o644, restarts=()
        )
        if not self.key:
            return (source,)
        if not self.signed_by:
            raise ValueError(f"apt repository {self.name} ships a key but names no signed_by path for it")
        return (File(self.signed_by, self.key, permissions=0o644, restarts=()), source)


@dataclasses.dataclass(frozen=True)
class Workload:
    """Everything one target runs and holds: a container's name, or :data:`HOST`."""

    target: str
    services: Sequence[Service] = ()
    checks: Sequence[Check] = ()
    files: Sequence[File] = ()
    directories: Sequence[Directory] = ()
    packages: Sequence[Package] = ()
    repositories: Sequence[AptRepository] = ()
    """Apt sources added (and the package lists refreshed) before any package is installed."""

    def __add__(self, other: Workload) -> Workload:
        """Both declarations in one target (e.g. a uwsgi API's parts and the service's own files)."""
        if other.target != self.target:
            raise ValueError(f"cannot merge workloads of {self.target} and {other.target}")
        return Workload(
            self.target,
            (*self.services, *other.services),
            (*self.checks, *other.checks),
            (*self.files, *other.files),
            (*self.directories, *other.directories),
            (*self.packages, *other.packages),
            (*self.repositories, *other.repositories),
        )


@dataclasses.dataclass(frozen=True)
class LeaderTask:
    """Leader work run once per distinct ``inputs`` (and again after each charm upgrade).

    Tasks run in the order declared, after every target has its files and
    before any service starts; a task waits for the ones before it. ``inputs``
    should hold what the task's outcome depends on and nothing that changes
    without making it worth re-running (a database's address, not its password).
    """

    name: str
    target: str
    command: Command
    inputs: str = ""


class Applier(Protocol):
    """Carries out one :class:`Workload` on its target (one per container, one for the host)."""

    workload: Workload

    def apply(self, *, start: bool, record: bool = True) -> set[str]:
        """Bring the target to the workload; with ``start``, (re)start what needs it. Returns what acted."""
        ...

    def record(self) -> None:
        """Keep what was applied in the target's manifest (a steady hook then costs one read)."""
        ...

    def run(self, command: Command) -> str:
        """Run a one-shot command to completion and return its output; failure raises Waiting."""
        ...
