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

The other side of each relation is real too: the database relation carries a
MariaDB database and user created the way mysql-k8s creates them, the amqp
relation a RabbitMQ user and vhost, the ingress relation the address the
service really answers on; identity data is what our keystone charm published
after creating the service users in the running keystone.

Everything runs inside the private network namespace set up by sandbox.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import pathlib
import secrets
import shlex
import shutil
import signal
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
from scenario import mocking

#: the account the operator's tool asks keystone for over identity-credentials
CREDENTIALS_USER = "functional-operator"
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def host_command(*argv: str) -> list[str]:
    """A command run in the machine's network namespace (where rabbitmqctl reaches its node)."""
    pid = os.environ.get("SANDBOX_HOST_PID")
    return ["nsenter", f"--net=/proc/{pid}/ns/net", *argv] if pid else list(argv)


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
    files are reached through ``/proc/<holder>/root``, which walks the container's
    mounts, and processes enter it with ``nsenter`` before taking their user.
    """

    def __init__(self, key: ContainerKey, state: pathlib.Path, volumes: Mapping[str, pathlib.Path]) -> None:
        self.key = key
        self.state = state
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
            [*HOLDER, "sh", "-c", "\n".join(script)],
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
        prefix = ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", f"--wdns={working_dir}", "--"]
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
        self.containers[key] = Container(key, unit_dir / "containers" / name, volumes)
        return self.containers[key]

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
                if _http_ok(url):
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
        shutil.rmtree(self.state, ignore_errors=True)
        alive = [c.key for c in self.containers.values() if pathlib.Path(f"/proc/{c.holder.pid}").exists()]
        if alive or self.state.exists():
            raise AssertionError(f"left behind: holders of {alive}, state {self.state.exists()}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 200 <= response.status < 300
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


# -- the providers we do not write, for real ------------------------------------------


@dataclasses.dataclass
class Providers:
    """MariaDB, RabbitMQ and ingress answering our charms' requests for real."""

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
            if "port" not in app_data:
                return None
            # no proxy here: the URL users reach is where the service answers
            url = f"http://127.0.0.1:{json.loads(app_data['port'])}"
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
            endpoints="127.0.0.1:3306",
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
        return amqp_fixture(link.ours.endpoint, password=password, hostname="127.0.0.1", relation_id=link.id)

    def cleanup(self) -> None:
        """Drop every database, database user, broker user and vhost created."""
        for name, user in self.databases:
            mariadb(f"DROP DATABASE IF EXISTS `{name}`; DROP USER IF EXISTS '{user}'@'%';")
        for user, vhost in self.rabbit_users:
            for argv in (("delete_user", user), ("delete_vhost", vhost)):
                subprocess.run(host_command("rabbitmqctl", "-q", *argv), capture_output=True, timeout=60)


def mariadb(sql: str) -> str:
    """Run SQL as MariaDB's root (the server on loopback, as CI has it)."""
    done = subprocess.run(
        ["mariadb", "-h", "127.0.0.1", "-P", "3306", "-uroot", "-N", "-e", sql],
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

    def __init__(self, model: SimulatedModel, machine: Machine) -> None:
        self.model = model
        self.machine = machine

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
        """Run every charm, let started services come up, repeat until all are active and nothing changes."""
        return self.model.settle(
            max_rounds, between_rounds=lambda: self.machine.wait_for_checks(self.plans()), until_active=True
        )
