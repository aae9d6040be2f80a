"""Run the real OpenStack services from exactly what the charms declared.

The charms run in ops.testing as in the unit tests, but every Pebble operation
they make is also carried out for real on this machine, which plays the part of
their workload containers:

- a file pushed is written at its path, with the owner and mode the charm asked;
- a directory made is made, a path removed is removed;
- a command run (db sync, bootstrap) runs, as the user the charm named, from the
  OpenStack release installed in OPENSTACK_VENV (the image's software), and the
  charm sees its real exit code and output;
- replan and restart start and restart the services of the charm's Pebble layer,
  with the layer's own command, user, group and environment;
- the layer's HTTP checks decide when a service is up.

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
import grp
import io
import json
import os
import pathlib
import pwd
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

#: the charms' own bookkeeping inside a container (one per container in a pod, one machine here)
CHARM_STATE = "/run/openstack-charm/"
#: the account the operator's tool asks keystone for over identity-credentials
CREDENTIALS_USER = "functional-operator"
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def host_command(*argv: str) -> list[str]:
    """A command run in the machine's network namespace (where rabbitmqctl reaches its node)."""
    pid = os.environ.get("SANDBOX_HOST_PID")
    return ["nsenter", f"--net=/proc/{pid}/ns/net", *argv] if pid else list(argv)


# -- the machine playing the containers ---------------------------------------------


class Machine:
    """What the charms' Pebble operations really did: files, users, processes."""

    def __init__(self, venv: pathlib.Path, logs: pathlib.Path) -> None:
        self.venv = venv
        self.logs = logs
        self.paths: list[pathlib.Path] = []
        self.users: list[str] = []
        self.processes: dict[tuple[str, str], tuple[subprocess.Popen[bytes], dict[str, Any]]] = {}
        self.execs: list[tuple[str, list[str], int]] = []

    # users and files ------------------------------------------------------------

    def ensure_user(self, name: str | None) -> None:
        """Create the system user an image provides (kolla images have one per service)."""
        if not name or name == "root":
            return
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ],
                check=True,
            )
            self.users.append(name)

    def _ids(self, user: str | None, group: str | None) -> tuple[int, int]:
        self.ensure_user(user)
        uid = pwd.getpwnam(user).pw_uid if user else 0
        gid = grp.getgrnam(group).gr_gid if group else (pwd.getpwnam(user).pw_gid if user else 0)
        return uid, gid

    def _track(self, path: pathlib.Path) -> None:
        top = path
        while not top.parent.exists():
            top = top.parent
        if not any(top == p or p in top.parents for p in self.paths):
            self.paths.append(top)

    def write(
        self,
        path: str,
        data: bytes,
        *,
        make_dirs: bool,
        permissions: int | None,
        user: str | None,
        group: str | None,
    ) -> None:
        """Write a file as Pebble would (parents made with the same owner when asked)."""
        if path.startswith(CHARM_STATE):
            return
        target = pathlib.Path(path)
        if make_dirs:
            self.make_dir(str(target.parent), make_parents=True, permissions=0o755, user=user, group=group)
        uid, gid = self._ids(user, group)
        self._track(target)
        target.write_bytes(data)
        os.chmod(target, permissions if permissions is not None else 0o644)
        os.chown(target, uid, gid)

    def make_dir(
        self, path: str, *, make_parents: bool, permissions: int | None, user: str | None, group: str | None
    ) -> None:
        """Make a directory as Pebble would."""
        if path.startswith(CHARM_STATE):
            return
        target = pathlib.Path(path)
        uid, gid = self._ids(user, group)
        self._track(target)
        if target.is_dir():
            return
        missing = [p for p in reversed(target.parents) if not p.exists()] if make_parents else []
        for directory in [*missing, target]:
            directory.mkdir(mode=permissions if permissions is not None else 0o755)
            os.chown(directory, uid, gid)

    def provide_image_files(self, files: Mapping[str, pathlib.Path]) -> None:
        """Put in place what the workload image ships outside its venv (path in the image -> source)."""
        for path, source in files.items():
            target = pathlib.Path(path)
            self._track(target)
            shutil.copytree(source, target, dirs_exist_ok=True)

    def attach_storage(self, location: str) -> None:
        """Mount a Juju storage volume: a directory owned by root, as a new volume is."""
        self.make_dir(location, make_parents=True, permissions=0o755, user=None, group=None)

    def remove(self, path: str, *, recursive: bool) -> None:
        """Remove a path as Pebble would."""
        target = pathlib.Path(path)
        if target.is_dir() and recursive:
            shutil.rmtree(target)
        elif target.exists():
            target.unlink() if not target.is_dir() else target.rmdir()

    def _env(self, environment: Mapping[str, str] | None) -> dict[str, str]:
        return {"PATH": f"{self.venv / 'bin'}:{SERVICE_PATH}", "LANG": "C.UTF-8", **(environment or {})}

    def run(
        self,
        container: str,
        argv: list[str],
        *,
        environment: Mapping[str, str] | None,
        user: str | None,
        group: str | None,
        timeout: float | None,
        working_dir: str | None,
    ) -> tuple[int, str, str]:
        """Run a one-shot command as the charm asked; return its exit code and output."""
        self.ensure_user(user)
        try:
            done = subprocess.run(
                argv,
                env=self._env(environment),
                user=user,
                group=group or user,
                cwd=working_dir or "/",
                capture_output=True,
                text=True,
                timeout=timeout or 600,
                check=False,
            )
            result = (done.returncode, done.stdout, done.stderr)
        except FileNotFoundError as e:
            result = (127, "", str(e))
        self.execs.append((container, argv, result[0]))
        (self.logs / f"{container}-exec.log").open("a").write(
            f"$ {shlex.join(argv)}\n-> {result[0]}\n{result[1]}{result[2]}\n"
        )
        return result

    # services -------------------------------------------------------------------

    def start(self, container: str, name: str, service: dict[str, Any]) -> None:
        """Start a layer service with its own command, user, group and environment."""
        user = service.get("user")
        self.ensure_user(user)
        log = (self.logs / f"{container}-{name}.log").open("ab")
        process = subprocess.Popen(
            shlex.split(service["command"]),
            env=self._env(service.get("environment")),
            user=user,
            group=service.get("group") or user,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd="/",
            start_new_session=True,
        )
        self.processes[(container, name)] = (process, dict(service))

    def stop(self, container: str, name: str) -> None:
        """Stop a service's whole process group: TERM, then KILL after 20 s."""
        entry = self.processes.pop((container, name), None)
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

    def replan(self, container: str, plan: pebble.Plan) -> None:
        """Start what is stopped, restart what the layer changed, as Pebble's replan does."""
        for name, service in plan.services.items():
            wanted = service.to_dict()
            if wanted.get("startup") != "enabled":
                continue
            running = self.processes.get((container, name))
            if running is not None and running[0].poll() is None and running[1] == wanted:
                continue
            self.stop(container, name)
            self.start(container, name, wanted)

    def restart(self, container: str, plan: pebble.Plan, names: list[str]) -> None:
        """Restart services (start those not running)."""
        for name in names:
            self.stop(container, name)
            self.start(container, name, plan.services[name].to_dict())

    def wait_for_checks(self, plan_by_container: Mapping[str, pebble.Plan], timeout: float = 90) -> None:
        """Wait until every HTTP check of every started container passes (2xx, as Pebble's)."""
        deadline = time.monotonic() + timeout
        pending = {
            (container, name): check.http["url"]
            for container, plan in plan_by_container.items()
            for name, check in plan.checks.items()
            if check.http and any(c == container for c, _ in self.processes)
        }
        while pending:
            for key, url in list(pending.items()):
                if _http_ok(url):
                    del pending[key]
            dead = [k for k, (p, _) in self.processes.items() if p.poll() is not None]
            if dead:
                raise AssertionError(f"service exited: {dead}\n{self.tail(*dead[0])}")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"checks still failing after {timeout} s: {pending}")
            time.sleep(0.5)

    def tail(self, container: str, name: str, lines: int = 40) -> str:
        """The end of a service's output."""
        path = self.logs / f"{container}-{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def cleanup(self) -> None:
        """Stop every service, remove every path written, delete users created."""
        for container, name in list(self.processes):
            self.stop(container, name)
        for path in reversed(self.paths):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
        for user in self.users:
            subprocess.run(["userdel", user], check=False, capture_output=True)


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
            str(path),
            make_parents=kwargs.get("make_parents", False),
            permissions=kwargs.get("permissions"),
            user=kwargs.get("user"),
            group=kwargs.get("group"),
        )

    def remove_path(self: Any, path: Any, *, recursive: bool = False) -> None:
        saved["remove_path"](self, path, recursive=recursive)
        machine.remove(str(path), recursive=recursive)

    def exec_(self: Any, command: list[str], **kwargs: Any) -> Any:
        mock = saved["exec"](self, command, **kwargs)
        code, out, err = machine.run(
            self._container_name,
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
        machine.replan(self._container_name, self.get_plan())
        return result

    def restart_services(self: Any, services: list[str], *args: Any, **kwargs: Any) -> Any:
        result = saved["restart_services"](self, services, *args, **kwargs)
        machine.restart(self._container_name, self.get_plan(), list(services))
        return result

    def start_services(self: Any, services: list[str], *args: Any, **kwargs: Any) -> Any:
        result = saved["start_services"](self, services, *args, **kwargs)
        plan = self.get_plan()
        for name in services:
            if (self._container_name, name) not in machine.processes:
                machine.start(self._container_name, name, plan.services[name].to_dict())
        return result

    def stop_services(self: Any, services: list[str], *args: Any, **kwargs: Any) -> Any:
        result = saved["stop_services"](self, services, *args, **kwargs)
        for name in services:
            machine.stop(self._container_name, name)
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

    def plans(self) -> dict[str, pebble.Plan]:
        """Each container's Pebble plan, as the charms left it."""
        plans = {}
        for state in self.model.states.values():
            for container in state.containers:
                layers = list(container.layers.values())
                if layers:
                    plans[container.name] = pebble.Plan(
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
