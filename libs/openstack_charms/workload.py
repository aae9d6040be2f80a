"""Pebble workloads declared as data and applied with as few Pebble calls as possible.

A container's desired state is a :class:`Workload`: services, checks and files.
:meth:`Workload.apply` compares it with a small manifest the charm keeps inside
the container (file digests, layer digest, whether services were started), so
that in the steady state a reconcile costs one Pebble call. The manifest lives
on the container's own filesystem: when the container is recreated the manifest
goes with the files, and everything is pushed and started again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence

import ops
from ops import pebble

from .status import Waiting

logger = logging.getLogger(__name__)

MANIFEST = "/run/openstack-charm/manifest.json"


@dataclasses.dataclass(frozen=True)
class File:
    """A file the charm owns inside a container."""

    path: str
    content: str
    user: str = "root"
    group: str = "root"
    permissions: int = 0o640
    restarts: tuple[str, ...] | None = None
    """Services restarted when this file changes; ``None`` means every service of the container."""

    def digest(self) -> str:
        """What identifies this file's desired state."""
        key = f"{self.user}:{self.group}:{self.permissions:o}\n{self.content}"
        return hashlib.sha256(key.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Directory:
    """A directory the workload needs with a given owner and mode (key repositories, data dirs).

    Made before any file is pushed, so a file's parents get this mode rather
    than the 0755 Pebble gives the parents it makes for a push; made again only
    when its declaration changes or the container is new.
    """

    path: str
    user: str = "root"
    group: str = "root"
    permissions: int = 0o750

    def digest(self) -> str:
        """What identifies this directory's desired state."""
        return hashlib.sha256(f"{self.user}:{self.group}:{self.permissions:o}".encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Service:
    """A long-running process of the workload."""

    name: str
    command: str
    user: str | None = None
    group: str | None = None
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    summary: str = ""

    def layer_entry(self) -> dict[str, object]:
        """This service as a Pebble layer entry."""
        entry: dict[str, object] = {
            "override": "replace",
            "summary": self.summary or self.name,
            "command": self.command,
            "startup": "enabled",
        }
        if self.user:
            entry["user"] = self.user
        if self.group:
            entry["group"] = self.group
        if self.environment:
            entry["environment"] = dict(self.environment)
        return entry


@dataclasses.dataclass(frozen=True)
class HTTPCheck:
    """A Pebble health check on an HTTP URL served by the workload."""

    name: str
    url: str
    level: str = "ready"
    period: str = "10s"
    threshold: int = 3

    def layer_entry(self) -> dict[str, object]:
        """This check as a Pebble layer entry."""
        return {
            "override": "replace",
            "level": self.level,
            "period": self.period,
            "threshold": self.threshold,
            "http": {"url": self.url},
        }


@dataclasses.dataclass(frozen=True)
class Command:
    """A one-shot command run in a container (db sync, bootstrap)."""

    argv: tuple[str, ...]
    user: str | None = None
    group: str | None = None
    timeout: float = 600.0
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Workload:
    """Everything a container should run and hold."""

    container: str
    services: Sequence[Service] = ()
    checks: Sequence[HTTPCheck] = ()
    files: Sequence[File] = ()
    directories: Sequence[Directory] = ()

    def layer(self) -> dict[str, object]:
        """The Pebble layer of this workload."""
        layer: dict[str, object] = {
            "summary": f"{self.container} managed by its charm",
            "services": {s.name: s.layer_entry() for s in self.services},
        }
        if self.checks:
            layer["checks"] = {c.name: c.layer_entry() for c in self.checks}
        return layer


def _layer_digest(layer: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(layer, sort_keys=True).encode()).hexdigest()


class PebbleApplier:
    """Applies a :class:`Workload` to an ``ops.Container``."""

    def __init__(self, container: ops.Container, workload: Workload) -> None:
        self.container = container
        self.workload = workload
        self._known: dict[str, object] | None = None
        self._pushed: dict[str, object] | None = None
        #: services whose files changed in an apply without start, restarted by the next start
        self._pending: set[str] = set()

    def _manifest(self) -> dict[str, object]:
        if self._known is not None:
            return self._known
        try:
            pushed: dict[str, object] = json.loads(self.container.pull(MANIFEST).read())
            self._pushed = pushed
            return pushed
        except pebble.PathError:
            return {}
        except pebble.ConnectionError as e:
            raise Waiting(f"waiting for container {self.container.name} (Pebble)") from e
        except ValueError:
            logger.warning("unreadable manifest in %s; pushing everything", self.container.name)
            return {}

    def apply(self, *, start: bool, record: bool = True) -> set[str]:
        """Push changed files, update the layer, (re)start what changed.

        With ``start=False`` nothing is (re)started; services whose files changed
        are restarted by the next ``apply(start=True)`` of this applier. With
        ``record=False`` the manifest is written later, by :meth:`record` or the
        next recording apply (one push instead of two). Returns the names of the
        services restarted or started.
        """
        try:
            acted = self._apply(start=start)
            if record:
                self.record()
            return acted
        except pebble.ConnectionError as e:
            raise Waiting(f"waiting for container {self.container.name} (Pebble)") from e

    def record(self) -> None:
        """Write what was applied into the container's manifest, if it changed."""
        if self._known is not None and self._known != self._pushed:
            self.container.push(MANIFEST, json.dumps(self._known), make_dirs=True, permissions=0o600)
            self._pushed = self._known

    def _apply(self, *, start: bool) -> set[str]:
        manifest = self._manifest()
        old_files = manifest.get("files")
        if not isinstance(old_files, dict):
            old_files = {}
        old_dirs = manifest.get("dirs")
        if not isinstance(old_dirs, dict):
            old_dirs = {}
        new_dirs: dict[str, str] = {}
        for d in self.workload.directories:
            new_dirs[d.path] = d.digest()
            if old_dirs.get(d.path) != new_dirs[d.path]:
                self._make_dir(d)
        all_services = {s.name for s in self.workload.services}
        restart: set[str] = set()
        new_files: dict[str, str] = {}
        for f in self.workload.files:
            digest = f.digest()
            new_files[f.path] = digest
            if old_files.get(f.path) == digest:
                continue
            self.container.push(
                f.path,
                f.content,
                user=f.user,
                group=f.group,
                permissions=f.permissions,
                make_dirs=True,
            )
            restart |= all_services if f.restarts is None else set(f.restarts)
        for stale in set(old_files) - set(new_files):
            with contextlib.suppress(pebble.PathError):
                self.container.remove_path(stale)
        layer = self.workload.layer()
        layer_digest = _layer_digest(layer)
        if manifest.get("layer") != layer_digest:
            self.container.add_layer("charm", pebble.Layer(layer), combine=True)  # type: ignore[arg-type]
        previously = manifest.get("started", [])
        started = set(previously) if isinstance(previously, list) else set()
        acted: set[str] = set()
        self._pending |= restart
        if start and all_services:
            if manifest.get("layer") != layer_digest or not all_services <= started:
                # replan starts what is stopped and restarts what the layer changed
                self.container.replan()
                acted |= all_services - started
            to_restart = sorted(self._pending & started)
            if to_restart:
                self.container.restart(*to_restart)
                acted |= set(to_restart)
            self._pending = set()
            started = all_services
        new_manifest = {
            "files": new_files,
            "dirs": new_dirs,
            "layer": layer_digest,
            "started": sorted(started),
        }
        self._known = new_manifest
        return acted

    def _make_dir(self, directory: Directory) -> None:
        # missing parents get the same owner and mode (declare a parent first to choose
        # otherwise); a directory the image already has is left as it is
        self.container.make_dir(
            directory.path,
            make_parents=True,
            permissions=directory.permissions,
            user=directory.user,
            group=directory.group,
        )

    def run(self, command: Command) -> str:
        """Run a one-shot command to completion.

        A failure becomes :class:`Waiting` (the next hook retries it), with the
        command's last line of error output in the log, never its arguments.
        """
        name = " ".join(command.argv[:2])
        try:
            proc = self.container.exec(
                list(command.argv),
                user=command.user,
                group=command.group,
                timeout=command.timeout,
                environment=dict(command.environment),
            )
            stdout, _ = proc.wait_output()
        except pebble.ExecError as e:
            stderr = e.stderr if isinstance(e.stderr, str) else ""
            last = stderr.strip().splitlines()[-1:] or ["no error output"]
            logger.error("%s failed with exit code %s: %s", name, e.exit_code, last[0])
            raise Waiting(f"{name} failed (exit code {e.exit_code}); will retry") from e
        except pebble.ConnectionError as e:
            raise Waiting(f"waiting for container {self.container.name} (Pebble)") from e
        except pebble.ChangeError as e:
            raise Waiting(f"{name} did not finish: {e.err}; will retry") from e
        return stdout
