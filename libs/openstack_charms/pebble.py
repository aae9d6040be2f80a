"""The Pebble applier: a container's declared :class:`~.plan.Workload`, with as few Pebble calls as possible.

:class:`PebbleApplier` compares the workload with a small manifest the charm
keeps inside the container (file and directory digests, layer digest, whether
services were started), so that in the steady state a reconcile costs one
Pebble call. The manifest lives on the container's own filesystem: when the
container is recreated the manifest goes with the files, and everything is
pushed and started again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import cast

import ops
from ops import pebble

from .plan import Check, Command, Directory, Service, Workload
from .status import Waiting

logger = logging.getLogger(__name__)

MANIFEST = "/run/openstack-charm/manifest.json"


def service_entry(service: Service, checks: Sequence[Check] = ()) -> dict[str, object]:
    """A service as a Pebble layer entry; ``checks`` that restart it become its ``on-check-failure``."""
    entry: dict[str, object] = {
        "override": "replace",
        "summary": service.summary or service.name,
        "command": service.command,
        "startup": "enabled",
    }
    if service.user:
        entry["user"] = service.user
    if service.group:
        entry["group"] = service.group
    if service.environment:
        entry["environment"] = dict(service.environment)
    # Pebble keys the action by check on the service, not by service on the check
    restarted_by = {c.name: "restart" for c in checks if service.name in c.restarts}
    if restarted_by:
        entry["on-check-failure"] = restarted_by
    return entry


def check_entry(check: Check) -> dict[str, object]:
    """A check as a Pebble layer entry."""
    entry: dict[str, object] = {
        "override": "replace",
        "level": check.level,
        "period": check.period,
        "threshold": check.threshold,
    }
    if check.kind == "http":
        entry["http"] = {"url": check.url}
    elif check.kind == "tcp":
        entry["tcp"] = {"port": check.port, **({"host": check.host} if check.host else {})}
    else:
        entry["exec"] = {"command": check.command, **({"user": check.user} if check.user else {})}
    return entry


def layer(workload: Workload) -> dict[str, object]:
    """The Pebble layer of a container's workload."""
    result: dict[str, object] = {
        "summary": f"{workload.target} managed by its charm",
        "services": {s.name: service_entry(s, workload.checks) for s in workload.services},
    }
    if workload.checks:
        result["checks"] = {c.name: check_entry(c) for c in workload.checks}
    return result


def _layer_digest(layer: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(layer, sort_keys=True).encode()).hexdigest()


class PebbleApplier:
    """Applies a :class:`Workload` to an ``ops.Container``."""

    def __init__(
        self, container: ops.Container, workload: Workload, storages: Mapping[str, str] | None = None
    ) -> None:
        """``storages`` maps the container's storage mount locations to their storage names."""
        self.container = container
        self.workload = workload
        self.storages = dict(storages or {})
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
                group=f.owner_group,
                permissions=f.permissions,
                make_dirs=True,
            )
            restart |= all_services if f.restarts is None else set(f.restarts)
        for stale in set(old_files) - set(new_files):
            with contextlib.suppress(pebble.PathError):
                self.container.remove_path(stale)
        desired = layer(self.workload)
        layer_digest = _layer_digest(desired)
        if manifest.get("layer") != layer_digest:
            self.container.add_layer("charm", pebble.Layer(cast("pebble.LayerDict", desired)), combine=True)
        previously = manifest.get("started", [])
        started = set(previously) if isinstance(previously, list) else set()
        acted: set[str] = set()
        # restarts owed by files changed in a hook that could not start services (the leader's
        # work had to wait) are kept in the manifest, so a later hook still does them
        owed = manifest.get("pending", [])
        self._pending |= restart | (set(owed) & all_services if isinstance(owed, list) else set())
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
        if self._pending:
            new_manifest["pending"] = sorted(self._pending)
        self._known = new_manifest
        return acted

    def _make_dir(self, directory: Directory) -> None:
        # with make_parents, missing parents get the same owner and mode (declare a parent
        # first to choose otherwise); a directory the image already has is left as it is
        try:
            self.container.make_dir(
                directory.path,
                make_parents=directory.make_parents,
                permissions=directory.permissions,
                user=directory.user,
                group=directory.owner_group,
            )
        except pebble.PathError as e:
            if e.kind == "not-found":
                parent = directory.path.rsplit("/", 1)[0] or "/"
                if parent in self.storages:
                    raise Waiting(f"waiting for storage {self.storages[parent]} at {parent}") from e
                raise Waiting(f"waiting for {parent} in container {self.container.name}") from e
            # without make_parents Pebble refuses a directory that exists: the steady state

    def run(self, command: Command) -> str:
        """Run a one-shot command to completion.

        A failure becomes :class:`Waiting` (the next hook retries it), with the
        command's last line of error output in the log, never its arguments.
        """
        name = command.title
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
