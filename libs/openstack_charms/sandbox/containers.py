"""The units' workload containers, as Pebble would run them, each in a filesystem of its own.

A container is a mount namespace where /etc, /var and /run are the machine's
with the container's writes on top (overlayfs) and /tmp is its own, so that
the machine's files are read (the OpenStack venv, MariaDB's socket) and never
changed; it starts in its unit's network namespace. :class:`Machine` carries
out what the charms asked of Pebble there:

- a file pushed is written at its path, with the owner and mode the charm asked;
- a directory made is made, a path removed is removed;
- a command run (db sync, bootstrap) runs, as the user the charm named, from the
  OpenStack release installed in the venv (the image's software);
- replan and restart start and restart the services of the charm's Pebble
  layer, with the layer's own command, user, group and environment;
- and, as Pebble itself does between hooks (:meth:`Machine.supervise`): a service
  that exits is started again after a back-off, every check runs at its period,
  and one that fails ``threshold`` times in a row restarts the services whose
  ``on-check-failure`` name it, and is reported (the charm gets check-failed,
  then check-recovered).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from ops import pebble

from .network import UnitNetwork, has_link, processes_in

#: the environment variable every process of a sandbox carries: its units' state directory
MARKER = "OPENSTACK_SANDBOX_UNITS"
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: a workload container: (unit, container name), as a pod has one per container per unit
ContainerKey = tuple[str, str]

#: what each container has of its own: the host's directories, with the container's writes on top
OVERLAID = ("/etc", "/var", "/run")
#: a holder: a mount namespace of its own, killed with its parent (a run killed before its cleanup)
HOLDER = ("setpriv", "--pdeathsig", "KILL", "unshare", "--mount", "--propagation", "private")


def _entry(table: pathlib.Path, name: str) -> list[str] | None:
    """The fields of ``name``'s line in a passwd or group file."""
    for line in table.read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


class Container:
    """One workload container: a mount namespace where OVERLAID are the host's plus its own writes.

    A holder process (``unshare --mount``, then sleep) keeps the namespace alive;
    it starts in its unit's network namespace. Files are reached through
    ``/proc/<holder>/root``, which walks the container's mounts, and processes
    enter both namespaces with ``nsenter`` before taking their user.
    """

    def __init__(
        self,
        key: ContainerKey,
        state: pathlib.Path,
        volumes: Mapping[str, pathlib.Path],
        network: UnitNetwork,
        hostname: str | None = None,
        keep: Sequence[str] = (),
    ) -> None:
        self.key = key
        self.state = state
        self.network = network
        #: a machine's host name (in a UTS namespace of its own); ``None`` for a pod's container
        self.hostname = hostname
        script = ["set -e"]
        # a machine's /usr is its own too: its packages put their programs and units there
        for directory in (*OVERLAID, "/usr") if hostname else OVERLAID:
            upper, work = state / "upper" / directory[1:], state / "work" / directory[1:]
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            layers = shlex.quote(f"lowerdir={directory},upperdir={upper},workdir={work}")
            script.append(f"mount -t overlay overlay -o {layers} {directory}")
        for location, volume in volumes.items():
            script += [
                f"mkdir -p {shlex.quote(location)}",
                f"mount --bind {shlex.quote(str(volume))} {shlex.quote(location)}",
            ]
        if hostname:
            # a machine: its name, a sysfs of its own network (/sys/class/net: its interfaces), and
            # the control groups a machine's init mounts there (libvirt puts its guests in them)
            script += [
                f"hostname {shlex.quote(hostname)}",
                "mkdir /run/.cgroup",
                "mount --rbind /sys/fs/cgroup /run/.cgroup",
                "mount -t sysfs sysfs /sys",
                "mount --move /run/.cgroup /sys/fs/cgroup",
                "rmdir /run/.cgroup",
                # what udev does on the machine: /dev/kvm is group kvm's (libvirt's QEMU user is in it),
                # on a node of the machine's own, the host's left as it is
                "if [ -c /dev/kvm ] && getent group kvm >/dev/null; then",
                "  mknod -m 0660 /run/.kvm c $((0x$(stat -c %t /dev/kvm))) $((0x$(stat -c %T /dev/kvm)))",
                "  chgrp kvm /run/.kvm && mount --bind /run/.kvm /dev/kvm",
                "fi",
            ]
        # what must stay visible under the container's own /tmp is set aside, then put back on it
        for i, path in enumerate(keep):
            script += [f"mkdir /run/.keep{i}", f"mount --bind {shlex.quote(path)} /run/.keep{i}"]
        # last: the volumes and upper directories above live in the host's /tmp
        script.append("mount -t tmpfs -o mode=1777 tmpfs /tmp")
        for i, path in enumerate(keep):
            script += [f"mkdir -p {shlex.quote(path)}", f"mount --move /run/.keep{i} {shlex.quote(path)}"]
            script.append(f"rmdir /run/.keep{i}")
        script += ["echo ready", "exec sleep infinity"]
        holder = [*HOLDER, "--uts"] if hostname else list(HOLDER)
        self.holder = subprocess.Popen(
            ["nsenter", f"--net={network.namespace}", *holder, "sh", "-c", "\n".join(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.holder.stdout is not None and self.holder.stderr is not None
        if self.holder.stdout.readline() != b"ready\n":
            self.holder.wait(10)
            raise RuntimeError(f"container {key}: {self.holder.stderr.read().decode(errors='replace')}")

    @property
    def root(self) -> pathlib.Path:
        return pathlib.Path(f"/proc/{self.holder.pid}/root")

    def processes(self) -> list[int]:
        """The processes in this container's mount namespace (the holder among them)."""
        try:
            return processes_in("mnt", os.stat(f"/proc/{self.holder.pid}/ns/mnt").st_ino)
        except OSError:
            return []

    def named_network_processes(self) -> list[int]:
        """The processes in the network namespaces named in this container (``ip netns add``'s).

        ``ip netns exec`` also gives each its own mount namespace, so :meth:`processes` misses them.
        """
        found: list[int] = []
        for named in self.path("/run/netns").glob("*"):
            with contextlib.suppress(OSError):
                found += processes_in("net", named.stat().st_ino)
        return found

    def path(self, path: str, *, follow: bool = True) -> pathlib.Path:
        """Where the host reaches ``path`` of this container.

        The kernel follows an absolute symlink met under /proc/<pid>/root from the
        host's root (/var/run -> /run would write the host's /run): symlinks are
        resolved here, in the container. The last one only with ``follow``.
        """
        todo = [p for p in pathlib.PurePosixPath(path).parts if p != "/"]
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                done = done[:-1]
                continue
            here = self.root.joinpath(*done, part)
            if (todo or follow) and here.is_symlink():
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, "too many symlinks", path)
                target = pathlib.PurePosixPath(os.readlink(here))
                if target.is_absolute():
                    done = []
                todo = [p for p in target.parts if p not in ("/", ".")] + todo
                continue
            done.append(part)
        return self.root.joinpath(*done)

    def command(
        self, argv: list[str], *, user: str | None, group: str | None, working_dir: str = "/"
    ) -> list[str]:
        """``argv`` run in this container, as ``user``:``group`` named in its own /etc/passwd."""
        ns = f"/proc/{self.holder.pid}/ns"
        prefix = ["nsenter", f"--mount={ns}/mnt", f"--net={ns}/net", f"--wdns={working_dir}"]
        prefix += [f"--uts={ns}/uts", "--"] if self.hostname else ["--"]
        # entering a namespace needs root: the user is taken inside, after it
        ids = [f"--reuid={user}", "--init-groups"] if user else []
        ids += [f"--regid={group}"] if group else []
        return [*prefix, "setpriv", *ids, "--", *argv] if ids else [*prefix, *argv]

    def close(self) -> None:
        """Kill the holder: with no process left in it, the namespace and its mounts go."""
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(10)
        for stream in (self.holder.stdout, self.holder.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def _on_machine(network: UnitNetwork, machine: Container) -> Iterator[None]:
    """In the machine's network, with its host name, as a machine charm's hook runs."""
    from .machines import uts_of

    with network.entered(), uts_of(machine.holder.pid):
        yield


class Machine:
    """What the charms' Pebble operations really did, each container in a filesystem of its own."""

    def __init__(self, venv: pathlib.Path, logs: pathlib.Path, state: pathlib.Path) -> None:
        # overlay upper directories and bind sources must not be under what the containers overlay
        if any(state.resolve().is_relative_to(d) for d in OVERLAID):
            raise ValueError(f"the containers' state cannot live in {state}: it is under {OVERLAID}")
        self.venv = venv
        self.logs = logs
        self.state = state
        self.containers: dict[ContainerKey, Container] = {}
        #: unit -> its network, made with its first container
        self.networks: dict[str, UnitNetwork] = {}
        #: the services Pebble would be running: (container, service) -> its process
        self.processes: dict[tuple[ContainerKey, str], Running] = {}
        #: every check of every container's plan, as Pebble keeps them: (container, check) -> its state
        self.checks: dict[tuple[ContainerKey, str], CheckState] = {}
        self.execs: list[tuple[ContainerKey, list[str], int]] = []

    # containers -----------------------------------------------------------------

    def add_container(
        self,
        unit: str,
        name: str,
        storages: Mapping[str, str] | None = None,
        *,
        hostname: str | None = None,
        keep: Sequence[str] = (),
    ) -> Container:
        """Start a unit's container, with the unit's storage volumes (storage -> location) mounted.

        With ``hostname`` the container is a machine: a host name of its own, and its own /sys.
        ``keep``: host directories under /tmp it still sees (its own /tmp hides the host's).
        """
        unit_dir = self.state / unit.replace("/", "-")
        volumes = {}
        for storage, location in (storages or {}).items():
            # a volume is the unit's, shared by its containers that mount it; new ones are root's, 0755
            volume = unit_dir / "storage" / storage
            volume.mkdir(mode=0o755, parents=True, exist_ok=True)
            volumes[location] = volume
        key = (unit, name)
        if unit not in self.networks:
            self.networks[unit] = UnitNetwork(unit)
        self.containers[key] = Container(
            key, unit_dir / "containers" / name, volumes, self.networks[unit], hostname, keep
        )
        return self.containers[key]

    def share_machine(self, unit: str, other: str) -> Container:
        """Place ``unit`` on the machine ``other`` runs on: the same filesystem, network and services."""
        (name, machine), *_ = [(n, c) for (u, n), c in self.containers.items() if u == other and c.hostname]
        self.containers[(unit, name)] = machine
        self.networks[unit] = self.networks[other]
        return machine

    def _shared(self, unit: str) -> bool:
        """Whether another unit still runs on ``unit``'s machine."""
        network = self.networks.get(unit)
        return any(n is network and u != unit for u, n in self.networks.items())

    def _power_off(self, machine: Container) -> None:
        """A machine shut down: its services stopped, then whatever still runs on it (guests) killed."""
        from .machines import SandboxHost

        SandboxHost(machine, self.state).stop_all()
        # not the namespaces' holders, nor this process (whose threads enter units' networks)
        spared = {machine.network.holder.pid, machine.holder.pid, os.getpid()}
        # what runs in the machine's network, in its filesystem, and in the networks its services
        # named (the metadata agent's haproxy, one per network namespace)
        every = {*machine.network.processes(), *machine.processes(), *machine.named_network_processes()}
        for pid in every:
            if pid not in spared:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def address(self, unit: str) -> str:
        """The unit's own address on the bridge."""
        return self.networks[unit].address

    def units(self, app: str) -> list[str]:
        """The units of ``app`` that have a pod here, in their order."""
        return sorted(
            (u for u in self.networks if u.split("/")[0] == app), key=lambda u: int(u.split("/")[1])
        )

    def charm_runs_in(self, unit: str) -> contextlib.AbstractContextManager[None]:
        """Where the unit's charm runs: in its pod's network (``localhost`` is its workload's)."""
        network = self.networks.get(unit)
        if network is None:
            return contextlib.nullcontext()
        machine = next((c for (u, _), c in self.containers.items() if u == unit and c.hostname), None)
        if machine is None:
            return network.entered()
        return _on_machine(network, machine)

    def container(self, unit_or_app: str, name: str) -> Container:
        """A container by its unit, or by its application while that has one unit."""
        if (unit_or_app, name) in self.containers:
            return self.containers[(unit_or_app, name)]
        found = [
            c for (unit, n), c in self.containers.items() if n == name and unit.split("/")[0] == unit_or_app
        ]
        if len(found) != 1:
            raise KeyError(f"{unit_or_app} has {len(found)} units with a container {name!r}")
        return found[0]

    def path(self, unit_or_app: str, container: str, path: str) -> pathlib.Path:
        """Where the host reads ``path`` as that container sees it."""
        return self.container(unit_or_app, container).path(path)

    def uid(self, unit_or_app: str, container: str, user: str) -> int:
        """``user``'s id in that container's own /etc/passwd (KeyError if it has none)."""
        fields = _entry(self.path(unit_or_app, container, "/etc/passwd"), user)
        if fields is None:
            raise KeyError(f"{container} of {unit_or_app} has no user {user}")
        return int(fields[2])

    # users and files ------------------------------------------------------------

    def ensure_user(self, key: ContainerKey, name: str | None) -> None:
        """Create the system user an image provides (kolla images have one per service), in the container."""
        if not name or name == "root":
            return
        container = self.containers[key]
        if _entry(container.path("/etc/passwd"), name) is not None:
            return
        argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        argv += ["--shell", "/usr/sbin/nologin", name]
        subprocess.run(
            container.command(argv, user=None, group=None),
            env={"PATH": SERVICE_PATH},
            check=True,
            capture_output=True,
        )

    def _ids(self, key: ContainerKey, user: str | None, group: str | None) -> tuple[int, int]:
        self.ensure_user(key, user)
        container = self.containers[key]
        passwd = _entry(container.path("/etc/passwd"), user) if user else None
        uid = int(passwd[2]) if passwd else 0
        if group:
            entry = _entry(container.path("/etc/group"), group)
            if entry is None:
                raise KeyError(f"{key} has no group {group}")
            return uid, int(entry[2])
        return uid, int(passwd[3]) if passwd else 0

    def write(
        self,
        key: ContainerKey,
        path: str,
        data: bytes,
        *,
        make_dirs: bool,
        permissions: int | None,
        user: str | None,
        group: str | None,
    ) -> None:
        """Write a file as Pebble would (parents made with the same owner when asked)."""
        if make_dirs:
            parent = str(pathlib.PurePosixPath(path).parent)
            self.make_dir(key, parent, make_parents=True, permissions=0o755, user=user, group=group)
        uid, gid = self._ids(key, user, group)
        target = self.containers[key].path(path, follow=False)
        # Pebble replaces the file: a symlink there is replaced, not followed (it would lead to the host)
        if target.is_symlink():
            target.unlink()
        target.write_bytes(data)
        os.chmod(target, permissions if permissions is not None else 0o644)
        os.chown(target, uid, gid)

    def make_dir(
        self,
        key: ContainerKey,
        path: str,
        *,
        make_parents: bool,
        permissions: int | None,
        user: str | None,
        group: str | None,
    ) -> None:
        """Make a directory as Pebble would."""
        container = self.containers[key]
        uid, gid = self._ids(key, user, group)
        target = pathlib.PurePosixPath(path)
        if container.path(path).is_dir():
            return
        chain = [*reversed(target.parents), target] if make_parents else [target]
        for directory in chain:
            real = container.path(str(directory))
            if directory == target or not real.exists():
                real.mkdir(mode=permissions if permissions is not None else 0o755)
                os.chown(real, uid, gid)

    def provide_image_files(self, unit: str, container: str, files: Mapping[str, pathlib.Path]) -> None:
        """Put in a container what its image ships outside its venv (path in the image -> source)."""
        for path, source in files.items():
            shutil.copytree(source, self.path(unit, container, path), dirs_exist_ok=True)

    def write_hosts(self, names: Mapping[str, Sequence[str]]) -> None:
        """Every container's /etc/hosts: localhost, then each address with its names (the cluster's DNS)."""
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        lines += [f"{address} {' '.join(hostnames)}" for address, hostnames in names.items()]
        content = "\n".join(lines) + "\n"
        for container in self.containers.values():
            target = container.path("/etc/hosts")
            target.unlink(missing_ok=True)
            target.write_text(content)
            target.chmod(0o644)

    def remove(self, key: ContainerKey, path: str, *, recursive: bool) -> None:
        """Remove a path as Pebble would."""
        target = self.containers[key].path(path, follow=False)
        if target.is_dir() and not target.is_symlink() and recursive:
            shutil.rmtree(target)
        elif target.is_symlink() or target.exists():
            target.rmdir() if target.is_dir() and not target.is_symlink() else target.unlink()

    def _env(self, environment: Mapping[str, str] | None) -> dict[str, str]:
        # the marker lets ``down`` find a service even after the sandbox's controller died
        base = {"PATH": f"{self.venv / 'bin'}:{SERVICE_PATH}", "LANG": "C.UTF-8", MARKER: str(self.state)}
        return {**base, **(environment or {})}

    def _log(self, key: ContainerKey, name: str) -> pathlib.Path:
        unit, container = key
        return self.logs / f"{unit.replace('/', '-')}-{container}-{name}.log"

    def run(
        self,
        key: ContainerKey,
        argv: list[str],
        *,
        environment: Mapping[str, str] | None,
        user: str | None,
        group: str | None,
        timeout: float | None,
        working_dir: str | None,
    ) -> tuple[int, str, str]:
        """Run a one-shot command in the container as the charm asked; return its exit code and output."""
        self.ensure_user(key, user)
        done = subprocess.run(
            self.containers[key].command(
                argv, user=user, group=group or user, working_dir=working_dir or "/"
            ),
            env=self._env(environment),
            capture_output=True,
            text=True,
            timeout=timeout or 600,
            check=False,
        )
        result = (done.returncode, done.stdout, done.stderr)
        self.execs.append((key, argv, result[0]))
        with self._log(key, "exec").open("a") as log:
            log.write(f"$ {shlex.join(argv)}\n-> {result[0]}\n{result[1]}{result[2]}\n")
        return result

    # services -------------------------------------------------------------------

    def start(self, key: ContainerKey, name: str, service: dict[str, Any]) -> None:
        """Start a layer service in the container with its own command, user, group and environment."""
        user = service.get("user")
        self.ensure_user(key, user)
        command = self.containers[key].command(
            shlex.split(service["command"]), user=user, group=service.get("group") or user
        )
        with self._log(key, name).open("ab") as log:
            # nsenter and setpriv exec what follows: the service leads its own process group
            process = subprocess.Popen(
                command,
                env=self._env(service.get("environment")),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        previous = self.processes.get((key, name))
        self.processes[(key, name)] = Running(
            process, dict(service), time.monotonic(), previous.backoff if previous else BACKOFF_FIRST
        )

    def stop(self, key: ContainerKey, name: str) -> None:
        """Stop a service's whole process group: TERM (and CONT: it may be stopped), KILL after 20 s."""
        entry = self.processes.pop((key, name), None)
        if entry is None:
            return
        process = entry.process
        for sig in (signal.SIGTERM, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def replan(self, key: ContainerKey, plan: pebble.Plan) -> None:
        """Start what is stopped, restart what the layer changed, as Pebble's replan does."""
        for name, service in plan.services.items():
            wanted = dict(service.to_dict())
            if wanted.get("startup") != "enabled":
                continue
            running = self.processes.get((key, name))
            if running is not None and running.process.poll() is None and running.spec == wanted:
                continue
            self.stop(key, name)
            self.start(key, name, wanted)
        self.plan_checks(key, plan)

    def restart(self, key: ContainerKey, plan: pebble.Plan, names: list[str]) -> None:
        """Restart services (start those not running)."""
        for name in names:
            self.stop(key, name)
            self.start(key, name, dict(plan.services[name].to_dict()))

    # Pebble's own work between hooks ----------------------------------------------

    def plan_checks(self, key: ContainerKey, plan: pebble.Plan) -> None:
        """Take the checks of a container's plan (their state kept while the check is unchanged)."""
        for name, check in plan.checks.items():
            spec = dict(check.to_dict())
            known = self.checks.get((key, name))
            if known is None or known.spec != spec:
                self.checks[(key, name)] = CheckState(spec, _seconds(spec.get("period"), 10.0))
        for stale in [k for k in self.checks if k[0] == key and k[1] not in plan.checks]:
            del self.checks[stale]

    def check_passes(self, key: ContainerKey, spec: Mapping[str, Any]) -> bool:
        """Run one check as Pebble would, from the unit's pod."""
        unit = key[0]
        timeout = _seconds(spec.get("timeout"), 3.0)
        if "http" in spec:
            with self.networks[unit].entered():
                return _http_ok(spec["http"]["url"], timeout)
        if "tcp" in spec:
            where = (spec["tcp"].get("host") or "localhost", int(spec["tcp"]["port"]))
            with self.networks[unit].entered():
                try:
                    with socket.create_connection(where, timeout=timeout):
                        return True
                except OSError:
                    return False
        if "exec" in spec:
            command = spec["exec"]
            user = command.get("user")
            self.ensure_user(key, user)
            argv = self.containers[key].command(shlex.split(command["command"]), user=user, group=user)
            try:
                done = subprocess.run(
                    argv, env=self._env(command.get("environment")), capture_output=True, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                return False
            return done.returncode == 0
        return True

    def supervise(self, now: float | None = None) -> list[CheckChange]:
        """What Pebble does between hooks: restart exited services, run due checks, act on failures.

        Returns the checks that went down or came back up, for the charm's
        check-failed and check-recovered events.
        """
        now = time.monotonic() if now is None else now
        self._restart_exited(now)
        changes = []
        for (key, name), check in self.checks.items():
            if now < check.due:
                continue
            check.due = now + check.period
            if not any(k == key for k, _ in self.processes):
                continue
            if self.check_passes(key, check.spec):
                check.failures = 0
                if check.down:
                    check.down = False
                    changes.append(CheckChange(key, name, "up", check.threshold))
                continue
            check.failures += 1
            if check.failures == check.threshold:
                check.down = True
                changes.append(CheckChange(key, name, "down", check.failures))
                for (k, service), running in list(self.processes.items()):
                    if k == key and running.spec.get("on-check-failure", {}).get(name) == "restart":
                        with self._log(key, service).open("a") as log:
                            log.write(
                                f"[sandbox] check {name} failed {check.failures} times:"
                                f" restarting {service}\n"
                            )
                        self.stop(key, service)
                        self.start(key, service, running.spec)
        return changes

    def _restart_exited(self, now: float | None = None) -> None:
        """Start again, after its back-off, every service that exited (Pebble's default policy)."""
        now = time.monotonic() if now is None else now
        for (key, name), running in list(self.processes.items()):
            if running.process.poll() is None:
                continue
            # on-success and on-failure default to restart, after a back-off that doubles up to 30 s
            if running.restart_at is None:
                running.restart_at = now + running.backoff
                with self._log(key, name).open("a") as log:
                    log.write(
                        f"[sandbox] {name} exited with {running.process.returncode};"
                        f" restarting in {running.backoff:g} s\n"
                    )
            elif now >= running.restart_at:
                backoff = min(running.backoff * 2, BACKOFF_LIMIT)
                self.start(key, name, running.spec)
                self.processes[(key, name)].backoff = backoff

    def wait_for_checks(self, timeout: float = 90, exits: int = 3) -> None:
        """Wait until every HTTP, TCP and exec check of every running container passes.

        A service that exits is restarted after its back-off, as Pebble does (a
        transient failure at start, such as a database cluster changing its
        members, is Pebble's to ride out); one that exits ``exits`` times
        during the wait is :class:`ServiceExited`.
        """
        deadline = time.monotonic() + timeout
        pending = {k for k in self.checks if any(key == k[0] for key, _ in self.processes)}
        seen: dict[tuple[ContainerKey, str], int] = {}
        while pending:
            for check in list(pending):
                if self.check_passes(check[0], self.checks[check].spec):
                    pending.discard(check)
            for service, running in list(self.processes.items()):
                if running.process.poll() is not None and running.restart_at is None:
                    seen[service] = seen.get(service, 0) + 1
                    if seen[service] >= exits:
                        raise ServiceExited(service, self.tail(*service))
            # Pebble's restarts, without running checks or acting on them (the wait does)
            self._restart_exited()
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"checks still failing after {timeout} s: {sorted(pending)}")
            time.sleep(0.5)

    def remove_unit(self, unit: str) -> None:
        """A unit's pod deleted, as Kubernetes does once Juju removed the unit: services, checks, volumes."""
        for key, name in [k for k in self.processes if k[0][0] == unit]:
            self.stop(key, name)
        for check in [k for k in self.checks if k[0][0] == unit]:
            del self.checks[check]
        shared = self._shared(unit)
        for key in [k for k in self.containers if k[0] == unit]:
            container = self.containers.pop(key)
            if shared:
                # the machine stays, with the other units' software (and this one's, as Juju leaves it)
                continue
            if container.hostname:
                self._power_off(container)
            container.close()
        network = self.networks.pop(unit, None)
        if network is not None and not shared:
            # a socket of this process still open in the unit's network keeps the namespace
            gc.collect()
            network.close()
        shutil.rmtree(self.state / unit.replace("/", "-"), ignore_errors=True)

    def tail(self, key: ContainerKey, name: str, lines: int = 40) -> str:
        """The end of a service's output."""
        path = self._log(key, name)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def cleanup(self) -> None:
        """Stop every service, end every container, remove their state; fail if any of it survived."""
        for key, name in list(self.processes):
            self.stop(key, name)
        # a machine several units run on is one container and one network
        containers = list({id(c): c for c in self.containers.values()}.values())
        networks = list({id(n): n for n in self.networks.values()}.values())
        for container in containers:
            if container.hostname:
                self._power_off(container)
        for container in containers:
            container.close()
        for network in networks:
            network.close()
        shutil.rmtree(self.state, ignore_errors=True)
        # a socket this process opened in a unit's network (a charm's, a check's) keeps that
        # namespace while it is open: those only the garbage collector still holds are closed
        gc.collect()
        alive = [c.key for c in self.containers.values() if pathlib.Path(f"/proc/{c.holder.pid}").exists()]
        alive += [n.unit for n in self.networks.values() if pathlib.Path(f"/proc/{n.holder.pid}").exists()]
        inside = {n.unit: pids for n in self.networks.values() if (pids := n.processes())}
        links = [n.link for n in self.networks.values() if has_link(n.link)]
        if alive or inside or links or self.state.exists():
            raise LeftBehind(
                f"left behind: holders of {alive}, processes in the units' networks {inside},"
                f" links {links}, state {self.state.exists()}"
            )


#: Pebble's service back-off: the first delay, doubled after each restart up to the limit
BACKOFF_FIRST = 0.5
BACKOFF_LIMIT = 30.0


@dataclasses.dataclass
class Running:
    """A service's process, the layer entry it was started from, and Pebble's back-off for it."""

    process: subprocess.Popen[bytes]
    spec: dict[str, Any]
    started: float
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None


@dataclasses.dataclass
class CheckState:
    """A check of a plan, as Pebble tracks it: failures in a row, and whether it is down."""

    spec: dict[str, Any]
    period: float
    due: float = 0.0
    failures: int = 0
    down: bool = False

    @property
    def threshold(self) -> int:
        return int(self.spec.get("threshold") or 3)


@dataclasses.dataclass(frozen=True)
class CheckChange:
    """A check that went down (``threshold`` failures in a row) or came back up."""

    key: ContainerKey
    check: str
    status: Literal["up", "down"]
    failures: int


class ServiceExited(RuntimeError):
    """A service exited while its checks were awaited."""

    def __init__(self, service: tuple[ContainerKey, str], log_tail: str) -> None:
        (unit, container), name = service
        super().__init__(f"{unit}: service {name} of container {container} exited")
        self.unit = unit
        self.log_tail = log_tail


class LeftBehind(RuntimeError):
    """Cleanup found something of the sandbox still there."""


def _seconds(value: object, default: float) -> float:
    """A Pebble duration (``10s``, ``500ms``, ``1m``) in seconds."""
    text = str(value or "").strip()
    if not text:
        return default
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError as e:
        # its socket, in a unit's network, would keep that namespace until the garbage collector runs
        e.close()
        return False
    except (urllib.error.URLError, OSError, ValueError):
        return False
