"""Run the real OpenStack services from exactly what the charms declared.

The charms run in ops.testing as in the unit tests, but every Pebble operation
they make is also carried out for real on this machine, in the unit's workload
container: a mount namespace of its own where /etc, /var and /run are the
machine's with the container's writes on top (overlayfs), and /tmp is its own,
so that the machine's files are read (the OpenStack venv, MariaDB's socket)
and never changed:

- a file pushed is written at its path, with the owner and mode the charm asked;
- a directory made is made, a path removed is removed;
- a command run (db sync, bootstrap) runs, as the user the charm named, from the
  OpenStack release installed in OPENSTACK_VENV (the image's software), and the
  charm sees its real exit code and output;
- replan and restart start and restart the services of the charm's Pebble layer,
  with the layer's own command, user, group and environment;
- the layer's HTTP checks decide when a service is up;
- the users the image would have are created in the container, the unit's
  storage volumes are mounted where charmcraft.yaml says.

Each unit has a network namespace of its own, as a pod, with its own address
on sandbox.py's bridge; its containers, their commands and services, and its
charm's hooks run in it.

The other side of each relation is real too: the database relation carries a
MariaDB database and user created the way mysql-k8s creates them, the amqp
relation a RabbitMQ user and vhost (both at the bridge's gateway), the ingress
relation the URL of a HAProxy frontend in front of every unit of the
application; identity data is what our keystone charm published after creating
the service users in the running keystone.

Everything runs inside the private network namespace set up by sandbox.py.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import errno
import gc
import io
import ipaddress
import itertools
import json
import os
import pathlib
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from charms.keystone_k8s.v0 import identity_credentials as idc
from openstack_charms.testing import RelationFixture
from openstack_charms.testing.model import Link, SimulatedModel
from openstack_charms.testing.relations import amqp_fixture, database_fixture, ingress_fixture
from ops import pebble, testing
from sandbox import BRIDGE, GATEWAY, NETWORK
from scenario import mocking

#: the account the operator's tool asks keystone for over identity-credentials
CREDENTIALS_USER = "functional-operator"
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def host_command(*argv: str) -> list[str]:
    """A command run in the machine's network namespace (where rabbitmqctl reaches its node)."""
    pid = os.environ.get("SANDBOX_HOST_PID")
    return ["nsenter", f"--net=/proc/{pid}/ns/net", *argv] if pid else list(argv)


# -- the units' networks -----------------------------------------------------------

_NETWORK = ipaddress.ip_network(NETWORK)
#: units take 198.18.1.1 on, the ingress frontends 198.18.0.2 on; counted for the whole
#: run, so that a test's own Machine or Ingress never takes the session cloud's addresses
_UNIT_NUMBERS = itertools.count(1)
_FRONTEND_NUMBERS = itertools.count(2)
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@contextlib.contextmanager
def network_of(pid: int) -> Iterator[None]:
    """Run the calling thread in ``pid``'s network namespace: its sockets are that namespace's.

    A network namespace is a thread's own (unlike a mount namespace), so the
    tests' process can make a request as a unit's pod would, ``localhost``
    included, and come back.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def _ip(*argv: str, netns_of: int | None = None) -> None:
    prefix = ["nsenter", f"--net=/proc/{netns_of}/ns/net"] if netns_of else []
    done = subprocess.run([*prefix, "ip", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {shlex.join(argv)}: {done.stderr.strip()}")


class UnitNetwork:
    """A unit's network namespace, shared by its containers as a pod's: its own address on the bridge.

    A holder process (``unshare --net``, then sleep) keeps the namespace, as a
    pod's pause container does; one end of a veth pair is the unit's ``eth0``,
    the other is plugged into sandbox.py's bridge, where the gateway (MariaDB,
    RabbitMQ) and the ingress frontends are.
    """

    def __init__(self, unit: str) -> None:
        self.unit = unit
        number = next(_UNIT_NUMBERS)
        self.address = str(_NETWORK.network_address + 256 + number)
        self.link = f"unit{number}"
        self.holder = subprocess.Popen(
            [
                "setpriv",
                "--pdeathsig",
                "KILL",
                "unshare",
                "--net",
                "sh",
                "-c",
                "echo ready; exec sleep infinity",
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.holder.stdout is not None
        try:
            if self.holder.stdout.readline() != b"ready\n":
                raise RuntimeError(f"network of {unit}: its holder did not start")
            pid = self.holder.pid
            self.inode = os.stat(self.namespace).st_ino
            _ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", str(pid))
            _ip("link", "set", self.link, "master", BRIDGE, "up")
            _ip("link", "set", "lo", "up", netns_of=pid)
            _ip("addr", "add", f"{self.address}/{_NETWORK.prefixlen}", "dev", "eth0", netns_of=pid)
            _ip("link", "set", "eth0", "up", netns_of=pid)
        except BaseException:
            self.close()
            raise

    @property
    def namespace(self) -> str:
        return f"/proc/{self.holder.pid}/ns/net"

    def entered(self) -> contextlib.AbstractContextManager[None]:
        """The calling thread in this unit's network (see :func:`network_of`)."""
        return network_of(self.holder.pid)

    def processes(self) -> list[int]:
        """The processes (any of their threads) still in this unit's network namespace."""
        found = []
        for ns in pathlib.Path("/proc").glob("[0-9]*/task/*/ns/net"):
            with contextlib.suppress(OSError):
                if os.stat(ns).st_ino == self.inode:
                    found.append(int(ns.parts[4]))
        return found

    def close(self) -> None:
        """Unplug the unit and kill its holder: the namespace goes once nothing holds it."""
        # the veth is deleted, not left to the namespace's end: the closed connections of the
        # unit's killed services (TCP sockets without a process) hold the namespace until they time out
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", self.link)
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(10)
        if self.holder.stdout is not None:
            self.holder.stdout.close()


# -- the machine playing the containers ---------------------------------------------

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
    ) -> None:
        self.key = key
        self.state = state
        self.network = network
        script = ["set -e"]
        for directory in OVERLAID:
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
        # last: the volumes and upper directories above live in the host's /tmp
        script += ["mount -t tmpfs -o mode=1777 tmpfs /tmp", "echo ready", "exec sleep infinity"]
        self.holder = subprocess.Popen(
            ["nsenter", f"--net={network.namespace}", *HOLDER, "sh", "-c", "\n".join(script)],
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
        prefix = ["nsenter", f"--mount={ns}/mnt", f"--net={ns}/net", f"--wdns={working_dir}", "--"]
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
        self.processes: dict[tuple[ContainerKey, str], tuple[subprocess.Popen[bytes], dict[str, Any]]] = {}
        self.execs: list[tuple[ContainerKey, list[str], int]] = []

    # containers -----------------------------------------------------------------

    def add_container(self, unit: str, name: str, storages: Mapping[str, str] | None = None) -> Container:
        """Start a unit's container, with the unit's storage volumes (storage -> location) mounted."""
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
        self.containers[key] = Container(key, unit_dir / "containers" / name, volumes, self.networks[unit])
        return self.containers[key]

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
        return network.entered() if network else contextlib.nullcontext()

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

    def remove(self, key: ContainerKey, path: str, *, recursive: bool) -> None:
        """Remove a path as Pebble would."""
        target = self.containers[key].path(path, follow=False)
        if target.is_dir() and not target.is_symlink() and recursive:
            shutil.rmtree(target)
        elif target.is_symlink() or target.exists():
            target.rmdir() if target.is_dir() and not target.is_symlink() else target.unlink()

    def _env(self, environment: Mapping[str, str] | None) -> dict[str, str]:
        return {"PATH": f"{self.venv / 'bin'}:{SERVICE_PATH}", "LANG": "C.UTF-8", **(environment or {})}

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
        self.processes[(key, name)] = (process, dict(service))

    def stop(self, key: ContainerKey, name: str) -> None:
        """Stop a service's whole process group: TERM, then KILL after 20 s."""
        entry = self.processes.pop((key, name), None)
        if entry is None:
            return
        process = entry[0]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def replan(self, key: ContainerKey, plan: pebble.Plan) -> None:
        """Start what is stopped, restart what the layer changed, as Pebble's replan does."""
        for name, service in plan.services.items():
            wanted = service.to_dict()
            if wanted.get("startup") != "enabled":
                continue
            running = self.processes.get((key, name))
            if running is not None and running[0].poll() is None and running[1] == wanted:
                continue
            self.stop(key, name)
            self.start(key, name, wanted)

    def restart(self, key: ContainerKey, plan: pebble.Plan, names: list[str]) -> None:
        """Restart services (start those not running)."""
        for name in names:
            self.stop(key, name)
            self.start(key, name, plan.services[name].to_dict())

    def wait_for_checks(self, plans: Mapping[ContainerKey, pebble.Plan], timeout: float = 90) -> None:
        """Wait until every HTTP check of every started container passes (2xx, as Pebble's)."""
        deadline = time.monotonic() + timeout
        pending = {
            (key, name): check.http["url"]
            for key, plan in plans.items()
            for name, check in plan.checks.items()
            if check.http and any(k == key for k, _ in self.processes)
        }
        while pending:
            for check, url in list(pending.items()):
                # Pebble checks from the pod: localhost is the unit's
                with self.networks[check[0][0]].entered():
                    ok = _http_ok(url)
                if ok:
                    del pending[check]
            dead = [k for k, (p, _) in self.processes.items() if p.poll() is not None]
            if dead:
                raise AssertionError(f"service exited: {dead}\n{self.tail(*dead[0])}")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"checks still failing after {timeout} s: {pending}")
            time.sleep(0.5)

    def tail(self, key: ContainerKey, name: str, lines: int = 40) -> str:
        """The end of a service's output."""
        path = self._log(key, name)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def cleanup(self) -> None:
        """Stop every service, end every container, remove their state; fail if any of it survived."""
        for key, name in list(self.processes):
            self.stop(key, name)
        for container in self.containers.values():
            container.close()
        for network in self.networks.values():
            network.close()
        shutil.rmtree(self.state, ignore_errors=True)
        # a socket this process opened in a unit's network (a charm's, a check's) keeps that
        # namespace while it is open: those only the garbage collector still holds are closed
        gc.collect()
        alive = [c.key for c in self.containers.values() if pathlib.Path(f"/proc/{c.holder.pid}").exists()]
        alive += [n.unit for n in self.networks.values() if pathlib.Path(f"/proc/{n.holder.pid}").exists()]
        inside = {n.unit: pids for n in self.networks.values() if (pids := n.processes())}
        links = [n.link for n in self.networks.values() if _has_link(n.link)]
        if alive or inside or links or self.state.exists():
            raise AssertionError(
                f"left behind: holders of {alive}, processes in the units' networks {inside},"
                f" links {links}, state {self.state.exists()}"
            )


def _has_link(name: str) -> bool:
    # /sys/class/net is the machine's (sysfs was mounted there): ask the kernel in this namespace
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError as e:
        # its socket, in a unit's network, would keep that namespace until the garbage collector runs
        e.close()
        return False
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def real_pebble(machine: Machine) -> Iterator[None]:
    """Make ops.testing's Pebble also do, on ``machine``, what the charm asked of it."""
    client = mocking._MockPebbleClient

    def key(self: Any) -> ContainerKey:
        context = self._context
        return f"{context.app_name}/{context.unit_id}", self._container_name

    saved = {
        name: getattr(client, name)
        for name in (
            "push",
            "make_dir",
            "remove_path",
            "exec",
            "replan_services",
            "restart_services",
            "start_services",
            "stop_services",
        )
    }

    def push(self: Any, path: Any, source: Any, **kwargs: Any) -> None:
        saved["push"](self, path, source, **kwargs)
        data = source.read() if hasattr(source, "read") else source
        data = data.encode(kwargs.get("encoding") or "utf-8") if isinstance(data, str) else bytes(data)
        machine.write(
            key(self),
            str(path),
            data,
            make_dirs=kwargs.get("make_dirs", False),
            permissions=kwargs.get("permissions"),
            user=kwargs.get("user"),
            group=kwargs.get("group"),
        )

    def make_dir(self: Any, path: Any, **kwargs: Any) -> None:
        saved["make_dir"](self, path, **kwargs)
        machine.make_dir(
            key(self),
            str(path),
            make_parents=kwargs.get("make_parents", False),
            permissions=kwargs.get("permissions"),
            user=kwargs.get("user"),
            group=kwargs.get("group"),
        )

    def remove_path(self: Any, path: Any, *, recursive: bool = False) -> None:
        saved["remove_path"](self, path, recursive=recursive)
        machine.remove(key(self), str(path), recursive=recursive)

    def exec_(self: Any, command: list[str], **kwargs: Any) -> Any:
        mock = saved["exec"](self, command, **kwargs)
        code, out, err = machine.run(
            key(self),
            list(command),
            environment=kwargs.get("environment"),
            user=kwargs.get("user"),
            group=kwargs.get("group"),
            timeout=kwargs.get("timeout"),
            working_dir=kwargs.get("working_dir"),
        )
        return mocking._MockExecProcess(
            change_id=mock._change_id,
            args=mock._args,
            return_code=code,
            stdin=mock.stdin,
            stdout=io.StringIO(out),
            stderr=io.StringIO(err),
        )

    def replan_services(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = saved["replan_services"](self, *args, **kwargs)
        machine.replan(key(self), self.get_plan())
        return result

    def restart_services(self: Any, services: list[str], *args: Any, **kwargs: Any) -> Any:
        result = saved["restart_services"](self, services, *args, **kwargs)
        machine.restart(key(self), self.get_plan(), list(services))
        return result

    def start_services(self: Any, services: list[str], *args: Any, **kwargs: Any) -> Any:
        result = saved["start_services"](self, services, *args, **kwargs)
        plan = self.get_plan()
        for name in services:
            if (key(self), name) not in machine.processes:
                machine.start(key(self), name, plan.services[name].to_dict())
        return result

    def stop_services(self: Any, services: list[str], *args: Any, **kwargs: Any) -> Any:
        result = saved["stop_services"](self, services, *args, **kwargs)
        for name in services:
            machine.stop(key(self), name)
        return result

    replacements = {
        "push": push,
        "make_dir": make_dir,
        "remove_path": remove_path,
        "exec": exec_,
        "replan_services": replan_services,
        "restart_services": restart_services,
        "start_services": start_services,
        "stop_services": stop_services,
    }
    for name, fn in replacements.items():
        setattr(client, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(client, name, fn)


# -- ingress: HAProxy in front of every unit ------------------------------------------

#: Debian bookworm's haproxy (from its security archive); an update replacing it there moves this pin
HAPROXY_PIN = "2.6.12-1+deb12u4"
HAPROXY = "/usr/sbin/haproxy"


def _dpkg_version(package: str) -> str | None:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status} ${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    status, _, version = done.stdout.rpartition(" ")
    return version if status.endswith(" installed") else None


def ensure_haproxy() -> None:
    """Install Debian's haproxy at its pin, unless it is; it stays, as the OpenStack venv does.

    apt-get runs in the machine's network namespace (the archive is not reachable
    from the sandbox's), refreshing the package lists once if they do not know
    the pin. Without systemd, the package's postinst may start its own daemon
    through the init script: that one is stopped, the tests run their own.
    """
    if _dpkg_version("haproxy") == HAPROXY_PIN:
        return
    fresh = _dpkg_version("haproxy") is None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=600"]
    madison = subprocess.run(["apt-cache", "madison", "haproxy"], capture_output=True, text=True, check=False)
    if f" {HAPROXY_PIN} " not in madison.stdout:
        subprocess.run(host_command(*apt, "update"), env=env, capture_output=True, check=True, timeout=600)
    done = subprocess.run(
        host_command(
            *apt, "install", "--no-install-recommends", "--allow-downgrades", f"haproxy={HAPROXY_PIN}"
        ),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"apt-get install haproxy={HAPROXY_PIN}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    if fresh and os.path.exists("/run/haproxy.pid"):
        subprocess.run(["/etc/init.d/haproxy", "stop"], capture_output=True, check=False, timeout=60)


@dataclasses.dataclass(frozen=True)
class Route:
    """One ingress relation: a frontend on its provider's address, every unit of ``app`` behind it."""

    app: str
    address: str
    port: int
    backend_port: int
    scheme: str


class Ingress:
    """The ingress providers (traefik-k8s in the bundle) stood in by one HAProxy process.

    Each provider application (traefik-internal, traefik-public) has an address of
    its own on the units' bridge, as each traefik has its load balancer's; each
    ingress relation is a frontend on its provider's address at the port the
    requirer asked, and a backend with every unit of the requirer at its own
    address, health-checked. HAProxy runs in the sandbox's network namespace, a
    child of the run in the foreground; its configuration is rendered here and
    it is restarted on each change.
    """

    def __init__(self, machine: Machine, state: pathlib.Path, logs: pathlib.Path) -> None:
        self.machine = machine
        self.config = state / "haproxy.cfg"
        self.stats_socket = state / "haproxy.sock"
        self.log = logs / "haproxy.log"
        #: provider application -> its address on the bridge
        self.addresses: dict[str, str] = {}
        #: frontend name (``<app>-<endpoint>``) -> its route
        self.routes: dict[str, Route] = {}
        self.process: subprocess.Popen[bytes] | None = None

    def address(self, provider: str) -> str:
        """The provider's address, added to the bridge the first time it is asked."""
        if provider not in self.addresses:
            address = str(_NETWORK.network_address + next(_FRONTEND_NUMBERS))
            _ip("addr", "add", f"{address}/32", "dev", BRIDGE)
            self.addresses[provider] = address
        return self.addresses[provider]

    def route(self, app: str, endpoint: str, provider: str, port: int, scheme: str = "http") -> str:
        """Route ``provider``'s frontend for ``app``'s ``endpoint`` to its units on ``port``; the URL."""
        address = self.address(provider)
        name = f"{app}-{endpoint}"
        taken = [n for n, r in self.routes.items() if n != name and (r.address, r.port) == (address, port)]
        if taken:
            raise ValueError(f"{provider} already serves {taken[0]} on port {port}")
        self.routes[name] = Route(app, address, port, port, scheme)
        self.restart()
        return f"http://{address}:{port}"

    def render(self) -> str:
        """HAProxy's configuration for the routes."""
        lines = [
            "global",
            "    log stdout format raw local0",
            f"    stats socket {self.stats_socket} mode 600 level admin",
            "defaults",
            "    mode http",
            "    log global",
            "    option httplog",
            # a request that met a unit going away tries another
            "    option redispatch",
            "    retries 3",
            "    timeout connect 5s",
            # image uploads and tempest's slow calls
            "    timeout client 300s",
            "    timeout server 300s",
            "    timeout check 5s",
            "    default-server check inter 1s fall 2 rise 1",
        ]
        for name, route in sorted(self.routes.items()):
            tls = " ssl verify none" if route.scheme == "https" else ""
            lines += [
                f"frontend {name}",
                f"    bind {route.address}:{route.port}",
                f"    default_backend {name}",
                f"backend {name}",
                "    balance roundrobin",
                # every API's root answers its versions without a token (200 or 300)
                "    option httpchk GET /",
                "    http-check expect rstatus ^[23]",
            ]
            for unit in self.machine.units(route.app):
                server = unit.replace("/", "-")
                lines.append(f"    server {server} {self.machine.address(unit)}:{route.backend_port}{tls}")
        return "\n".join(lines) + "\n"

    def restart(self) -> None:
        """Render, check and (re)start HAProxy; return once every frontend accepts connections."""
        self.stop()
        self.config.write_text(self.render())
        checked = subprocess.run(
            [HAPROXY, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True
        )
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy -c {self.config}: {checked.stdout}{checked.stderr}")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", HAPROXY, "-db", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 10
        waiting = {(r.address, r.port) for r in self.routes.values()}
        while waiting:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log.read_text(errors='replace')[-2000:]}")
            for where in list(waiting):
                with contextlib.suppress(OSError), socket.create_connection(where, timeout=1):
                    waiting.discard(where)
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy does not listen on {sorted(waiting)}")
            time.sleep(0.1)

    def servers(self) -> dict[tuple[str, str], dict[str, str]]:
        """HAProxy's own view of every server: (backend, server) -> its stats (``status``, ``stot``, ...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().removeprefix("# ")))
        return {
            (row["pxname"], row["svname"]): row
            for row in rows
            if row.get("svname") not in (None, "FRONTEND", "BACKEND")
        }

    def wait_until_up(self, timeout: float = 30) -> None:
        """Wait until HAProxy's health checks found every unit up."""
        deadline = time.monotonic() + timeout
        while True:
            down = {k: v["status"] for k, v in self.servers().items() if v["status"] != "UP"}
            if not down:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"HAProxy still finds these down after {timeout} s: {down}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            self.process = None

    def close(self) -> None:
        """Stop HAProxy and take the providers' addresses off the bridge; fail if HAProxy survived."""
        pid = self.process.pid if self.process else None
        self.stop()
        for address in self.addresses.values():
            with contextlib.suppress(RuntimeError):
                _ip("addr", "del", f"{address}/32", "dev", BRIDGE)
        if pid is not None and pathlib.Path(f"/proc/{pid}").exists():
            raise AssertionError(f"left behind: haproxy {pid}")


# -- the providers we do not write, for real ------------------------------------------


@dataclasses.dataclass
class Providers:
    """MariaDB, RabbitMQ and ingress answering our charms' requests for real."""

    ingress: Ingress | None = None
    databases: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    rabbit_users: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __call__(
        self, link: Link, app_data: Mapping[str, str], unit_data: Mapping[str, str]
    ) -> RelationFixture | None:
        if link.interface == "mysql_client":
            return self._database(link, app_data)
        if link.interface == "rabbitmq":
            return self._amqp(link, app_data)
        if link.interface == "keystone-credentials":
            # what a requirer of identity-credentials asks, written by the interface library
            request = idc.CredentialsRequest(username=CREDENTIALS_USER).to_databag()
            relation = testing.Relation(
                link.ours.endpoint,
                id=link.id,
                interface=link.interface,
                remote_app_name=link.other.app,
                remote_app_data={k: v for k, v in request.items() if v is not None},
            )
            return RelationFixture(relation)
        if link.interface == "ingress":
            if "port" not in app_data or self.ingress is None:
                return None
            url = self.ingress.route(
                link.ours.app,
                link.ours.endpoint,
                link.other.app,
                int(json.loads(app_data["port"])),
                scheme=json.loads(app_data.get("scheme", '"http"')),
            )
            return ingress_fixture(link.ours.endpoint, url, app=link.ours.app, relation_id=link.id)
        return None

    def _database(self, link: Link, request: Mapping[str, str]) -> RelationFixture | None:
        name = request.get("database")
        if not name:
            return None
        user, password = f"relation-{link.id}", secrets.token_urlsafe(24)
        # what mysql-k8s does for a new request: a database, and a user of its own with every right on it
        mariadb(
            f"DROP DATABASE IF EXISTS `{name}`; DROP USER IF EXISTS '{user}'@'%';"
            f"CREATE DATABASE `{name}`; CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';"
            f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'%';"
        )
        self.databases.append((name, user))
        return database_fixture(
            link.ours.endpoint,
            name,
            password=password,
            username=user,
            endpoints=f"{GATEWAY}:3306",
            relation_id=link.id,
        )

    def _amqp(self, link: Link, request: Mapping[str, str]) -> RelationFixture | None:
        username, vhost = request.get("username"), request.get("vhost")
        if not username or not vhost:
            return None
        # hex: a password starting with "-" would be read by rabbitmqctl as an option
        password = secrets.token_hex(24)
        # what rabbitmq-k8s does: the vhost, the user, all permissions on the vhost
        for argv in (
            ("delete_user", username),
            ("add_vhost", vhost),
            ("add_user", username, password),
            ("set_permissions", "-p", vhost, username, ".*", ".*", ".*"),
        ):
            subprocess.run(
                host_command("rabbitmqctl", "-q", *argv),
                capture_output=True,
                timeout=60,
                check=argv[0] != "delete_user" and argv[0] != "add_vhost",
            )
        self.rabbit_users.append((username, vhost))
        return amqp_fixture(link.ours.endpoint, password=password, hostname=GATEWAY, relation_id=link.id)

    def cleanup(self) -> None:
        """Drop every database, database user, broker user and vhost created."""
        for name, user in self.databases:
            mariadb(f"DROP DATABASE IF EXISTS `{name}`; DROP USER IF EXISTS '{user}'@'%';")
        for user, vhost in self.rabbit_users:
            for argv in (("delete_user", user), ("delete_vhost", vhost)):
                subprocess.run(host_command("rabbitmqctl", "-q", *argv), capture_output=True, timeout=60)


def mariadb(sql: str) -> str:
    """Run SQL as MariaDB's root (the server on loopback, as CI has it, through the gateway's forwarder).

    The gateway, not the sandbox's loopback: it is the same from a unit's network.
    """
    done = subprocess.run(
        ["mariadb", "-h", GATEWAY, "-P", "3306", "-uroot", "-N", "-e", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mariadb: {done.stderr.strip()}")
    return done.stdout


# -- a deployed cloud -------------------------------------------------------------------


class Cloud:
    """Our charms deployed together, their workloads running on this machine."""

    def __init__(self, model: SimulatedModel, machine: Machine, ingress: Ingress | None = None) -> None:
        self.model = model
        self.machine = machine
        self.ingress = ingress

    def plans(self) -> dict[ContainerKey, pebble.Plan]:
        """Each container's Pebble plan, as the charms left it."""
        plans = {}
        for unit, state in self.model.unit_states.items():
            for container in state.containers:
                layers = list(container.layers.values())
                if layers:
                    plans[(unit, container.name)] = pebble.Plan(
                        {
                            "services": {
                                k: v
                                for layer in layers
                                for k, v in layer.to_dict().get("services", {}).items()
                            },
                            "checks": {
                                k: v for layer in layers for k, v in layer.to_dict().get("checks", {}).items()
                            },
                        }
                    )
        return plans

    def settle(self, max_rounds: int = 10) -> dict[str, Any]:
        """Run every charm, let started services come up, repeat until all are active and nothing changes.

        At the end HAProxy has found every unit up: the URLs the charms published answer.
        """
        statuses = self.model.settle(
            max_rounds, between_rounds=lambda: self.machine.wait_for_checks(self.plans()), until_active=True
        )
        if self.ingress is not None:
            self.ingress.wait_until_up()
        return statuses
