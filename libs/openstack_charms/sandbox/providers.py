"""The charms we do not write, stood in by real software on this machine.

- ``mysql-k8s`` (``mysql_client``): a database and a ``relation-<id>`` user with
  every right on it, on the machine's MariaDB, as mysql-k8s creates them;
- ``rabbitmq-k8s`` (``rabbitmq``): a RabbitMQ user and vhost with every permission;
- ``traefik-k8s`` (``ingress``): HAProxy from Debian, a frontend per ingress
  relation on the provider's own address, every unit of the application behind
  it, health-checked; TLS on the frontend when the bundle gives the provider a
  certificate;
- ``self-signed-certificates`` (``tls-certificates``, ``certificate_transfer``):
  a CA made for the sandbox, which signs each unit's own request and sends itself.

What each made is written down as it is made (``made.json`` in the sandbox's
state), so that ``down`` removes it even after a crash.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import io
import json
import pathlib
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ops import testing

from ..testing import RelationFixture
from ..testing.model import Link
from ..testing.relations import amqp_fixture, database_fixture, ingress_fixture
from .containers import Machine
from .network import BRIDGE, GATEWAY, MARIADB_SOCKET, frontend_address, host_command, ip

#: the account an operator's tool asks keystone for over identity-credentials
CREDENTIALS_USER = "sandbox-operator"

#: what each stand-in cannot do that the charm it stands in for does: said at ``up``
LIMITS = {
    "mysql-k8s": "MariaDB on this machine, one server: no MySQL group replication, no router, the read-only"
    " endpoint is the same server",
    "rabbitmq-k8s": "the machine's RabbitMQ, one node: no quorum queues across nodes",
    "traefik-k8s": "HAProxy, one frontend per relation on the provider's address at the port the unit serves"
    " (traefik routes by path on one port); TLS only where the provider has a certificate",
    "self-signed-certificates": "a CA kept in the sandbox's state: no renewal before expiry, no revocation",
}


# -- ingress: HAProxy in front of every unit ------------------------------------------

HAPROXY = "/usr/sbin/haproxy"
#: a server HAProxy sends requests to, as its stats say: found up, or (a lone unit) not checked
UP = ("UP", "no check")


@dataclasses.dataclass(frozen=True)
class Route:
    """One ingress relation: a frontend on its provider's address, every unit of ``app`` behind it."""

    app: str
    address: str
    port: int
    backend_port: int
    scheme: str
    provider: str


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

    def __init__(
        self,
        machine: Machine,
        state: pathlib.Path,
        logs: pathlib.Path,
        *,
        ca: CA | None = None,
        tls: Iterable[str] = (),
        verifying: Iterable[str] = (),
    ) -> None:
        """HAProxy for the providers; TLS where they have a certificate.

        ``tls``: the providers with a certificate (https frontends, from ``ca``);
        ``verifying``: those given the CA, which verify https units against it.
        """
        self.machine = machine
        self.state = state
        self.config = state / "haproxy.cfg"
        self.stats_socket = state / "haproxy.sock"
        self.log = logs / "haproxy.log"
        self.ca = ca
        self.tls = frozenset(tls)
        self.verifying = frozenset(verifying)
        #: provider application -> its address on the bridge
        self.addresses: dict[str, str] = {}
        #: frontend name (``<app>-<endpoint>``) -> its route
        self.routes: dict[str, Route] = {}
        self.process: subprocess.Popen[bytes] | None = None

    def address(self, provider: str) -> str:
        """The provider's address, added to the bridge the first time it is asked."""
        if provider not in self.addresses:
            address = frontend_address()
            ip("addr", "add", f"{address}/32", "dev", BRIDGE)
            self.addresses[provider] = address
        return self.addresses[provider]

    def route(self, app: str, endpoint: str, provider: str, port: int, scheme: str = "http") -> str:
        """Route ``provider``'s frontend for ``app``'s ``endpoint`` to its units on ``port``; the URL."""
        address = self.address(provider)
        name = f"{app}-{endpoint}"
        taken = [n for n, r in self.routes.items() if n != name and (r.address, r.port) == (address, port)]
        if taken:
            raise ValueError(f"{provider} already serves {taken[0]} on port {port}")
        route = Route(app, address, port, port, scheme, provider)
        if self.routes.get(name) != route:
            self.routes[name] = route
            self.restart()
        return f"{'https' if provider in self.tls else 'http'}://{address}:{port}"

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
            tls = ""
            if route.scheme == "https":
                verify = (
                    f"required ca-file {self.ca.cert_path}"
                    if self.ca and route.provider in self.verifying
                    else "none"
                )
                tls = f" ssl verify {verify}"
            bind = f"{route.address}:{route.port}"
            if route.provider in self.tls and self.ca is not None:
                pem = self.ca.server_pem(self.state / f"{route.provider}.pem", route.address)
                bind += f" ssl crt {pem}"
            lines += [
                f"frontend {name}",
                f"    bind {bind}",
                # what traefik tells the units: the client's scheme and address (the APIs' links)
                "    http-request set-header X-Forwarded-Proto https if { ssl_fc }",
                "    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }",
                "    option forwardfor",
                f"    default_backend {name}",
                f"backend {name}",
                "    balance roundrobin",
                # a unit is up when it answers HTTP without a server error: every API's root gives
                # its versions (200 or 300), the console proxy's a 404 (its client is a file below)
                "    option httpchk GET /",
                "    http-check expect rstatus ^[234]",
            ]
            units = self.machine.units(route.app)
            # a lone unit is never taken out: with no other to send to, a check that timed out on a
            # busy API would turn its slow answers into HAProxy's 503s (traefik checks nothing)
            lone = " no-check" if len(units) == 1 else ""
            for unit in units:
                server = unit.replace("/", "-")
                address = f"{self.machine.address(unit)}:{route.backend_port}"
                lines.append(f"    server {server} {address}{tls}{lone}")
        return "\n".join(lines) + "\n"

    def restart(self) -> None:
        """Render, check and (re)start HAProxy; return once every frontend accepts connections."""
        self.stop()
        self.config.write_text(self.render())
        checked = subprocess.run(
            # not -q: it would silence the errors too
            [HAPROXY, "-c", "-f", str(self.config)],
            capture_output=True,
            text=True,
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
        """Wait until HAProxy's health checks found every unit up (a lone one is not checked)."""
        deadline = time.monotonic() + timeout
        while True:
            down = {k: v["status"] for k, v in self.servers().items() if v["status"] not in UP}
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
                ip("addr", "del", f"{address}/32", "dev", BRIDGE)
        if pid is not None and pathlib.Path(f"/proc/{pid}").exists():
            raise AssertionError(f"left behind: haproxy {pid}")


# -- the CA ---------------------------------------------------------------------------------


class CA:
    """A certificate authority of the sandbox's own (self-signed-certificates' stand-in).

    Its key and certificate are made once, in the sandbox's state (key 0600);
    it signs each unit's own certificate request, as the charm does, and
    certificates for the ingress frontends it serves TLS on.
    """

    def __init__(self, state: pathlib.Path) -> None:
        from charmlibs.interfaces.tls_certificates import (
            Certificate,
            CertificateRequestAttributes,
            PrivateKey,
        )

        state.mkdir(parents=True, exist_ok=True)
        self.key_path, self.cert_path = state / "ca.key", state / "ca.pem"
        if self.key_path.exists() and self.cert_path.exists():
            self.key = PrivateKey.from_string(self.key_path.read_text())
            self.certificate = Certificate.from_string(self.cert_path.read_text())
        else:
            self.key = PrivateKey.generate()
            attributes = CertificateRequestAttributes(common_name="OpenStack sandbox CA")
            self.certificate = Certificate.generate_self_signed_ca(
                attributes, self.key, datetime.timedelta(days=365)
            )
            self.key_path.touch(mode=0o600)
            self.key_path.write_text(str(self.key))
            self.cert_path.write_text(str(self.certificate))
        self._issued: dict[str, str] = {}

    @property
    def pem(self) -> str:
        return str(self.certificate)

    def sign(self, csr_pem: str) -> str:
        """Sign a request (the same request keeps its certificate, as the charm keeps what it issued)."""
        from charmlibs.interfaces.tls_certificates import Certificate, CertificateSigningRequest

        if csr_pem not in self._issued:
            csr = CertificateSigningRequest.from_string(csr_pem)
            self._issued[csr_pem] = str(
                Certificate.generate(csr, self.certificate, self.key, datetime.timedelta(days=90))
            )
        return self._issued[csr_pem]

    def server_pem(self, path: pathlib.Path, address: str) -> pathlib.Path:
        """A key and certificate for ``address`` in one PEM file (HAProxy's ``crt``), made once."""
        from charmlibs.interfaces.tls_certificates import CertificateRequestAttributes, PrivateKey

        if not path.exists():
            key = PrivateKey.generate()
            csr = CertificateRequestAttributes(
                common_name=address, sans_ip=frozenset({address})
            ).generate_csr(key)
            path.touch(mode=0o600)
            path.write_text(f"{self.sign(str(csr).strip())}\n{key}\n{self.pem}\n")
        return path

    def answer(self, link: Link, unit_databags: Iterable[Mapping[str, str]]) -> RelationFixture | None:
        """The provider's side of ``tls-certificates``: every unit's requests signed."""
        issued = []
        for databag in unit_databags:
            try:
                requests = json.loads(databag.get("certificate_signing_requests") or "[]")
            except ValueError:
                continue
            for request in requests:
                csr = str(request.get("certificate_signing_request", "")).strip()
                if not csr:
                    continue
                certificate = self.sign(csr)
                issued.append(
                    {
                        "ca": self.pem,
                        "certificate_signing_request": csr,
                        "certificate": certificate,
                        "chain": [certificate, self.pem],
                    }
                )
        if not issued:
            return None
        return _fixture(link, {"certificates": json.dumps(issued)})

    def transfer(self, link: Link) -> RelationFixture:
        """The provider's side of ``certificate_transfer`` (v1): the CA."""
        return _fixture(link, {"certificates": json.dumps([self.pem]), "version": "1"})


def _fixture(link: Link, remote_app_data: Mapping[str, str]) -> RelationFixture:
    return RelationFixture(
        testing.Relation(
            link.ours.endpoint,
            id=link.id,
            interface=link.interface,
            remote_app_name=link.other.app,
            remote_app_data=dict(remote_app_data),
        )
    )


# -- answering the relations --------------------------------------------------------------


class Providers:
    """MariaDB, RabbitMQ, HAProxy and the CA answering our charms' requests for real.

    ``stand_ins`` maps each application of the bundle we do not write to its
    charm; a link to one is answered by what stands in for that charm.
    """

    def __init__(
        self,
        state: pathlib.Path,
        stand_ins: Mapping[str, str],
        ingress: Ingress | None = None,
        ca: CA | None = None,
    ) -> None:
        self.state = state
        self.stand_ins = dict(stand_ins)
        self.ingress = ingress
        self.ca = ca
        self.made_path = state / "made.json"
        self.made: dict[str, list[list[str]]] = {"databases": [], "rabbit_users": []}
        #: requests of a live interface, to be asked again when they change (the model sets it)
        self.requests: Any = None

    def _record(self, kind: str, entry: list[str]) -> None:
        # written before the thing is made: a crash between the two leaves a name that down drops harmlessly
        self.made[kind].append(entry)
        self.made_path.write_text(json.dumps(self.made))

    def __call__(
        self, link: Link, app_data: Mapping[str, str], unit_data: Mapping[str, str]
    ) -> RelationFixture | None:
        charm = self.stand_ins.get(link.other.app, "")
        if link.interface == "mysql_client":
            return self._database(link, app_data)
        if link.interface == "rabbitmq":
            return self._amqp(link, app_data)
        if link.interface == "keystone-credentials":
            # an operator's tool asking for an account, as the interface library writes it
            from charms.keystone_k8s.v0 import identity_credentials as idc

            request = idc.CredentialsRequest(username=CREDENTIALS_USER).to_databag()
            return _fixture(link, {k: v for k, v in request.items() if v is not None})
        if link.interface == "ingress" and self.ingress is not None:
            if "port" not in app_data:
                return None
            url = self.ingress.route(
                link.ours.app,
                link.ours.endpoint,
                link.other.app,
                int(json.loads(app_data["port"])),
                scheme=json.loads(app_data.get("scheme", '"http"')),
            )
            return ingress_fixture(link.ours.endpoint, url, app=link.ours.app, relation_id=link.id)
        if link.interface == "tls-certificates" and self.ca is not None and self.requests is not None:
            _, units = self.requests(link)
            return self.ca.answer(link, units.values())
        if link.interface == "certificate_transfer" and self.ca is not None:
            return self.ca.transfer(link)
        raise LookupError(
            f"no stand-in answers {link.interface} for {link.other.app} ({charm or 'unknown charm'})"
        )

    def _database(self, link: Link, request: Mapping[str, str]) -> RelationFixture | None:
        name = request.get("database")
        if not name:
            return None
        user, password = f"relation-{link.id}", secrets.token_urlsafe(24)
        self._record("databases", [name, user])
        # what mysql-k8s does for a new request: a database, and a user of its own with every right on it
        mariadb(
            f"DROP DATABASE IF EXISTS `{name}`; DROP USER IF EXISTS '{user}'@'%';"
            f"CREATE DATABASE `{name}`; CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';"
            f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'%';"
        )
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
        self._record("rabbit_users", [username, vhost])
        # what rabbitmq-k8s does: the vhost, the user, all permissions on the vhost
        for argv in (
            ("delete_user", username),
            ("add_vhost", vhost),
            ("add_user", username, password),
            ("set_permissions", "-p", vhost, username, ".*", ".*", ".*"),
        ):
            rabbitmqctl(*argv, check=argv[0] not in ("delete_user", "add_vhost"))
        return amqp_fixture(link.ours.endpoint, password=password, hostname=GATEWAY, relation_id=link.id)

    def cleanup(self) -> None:
        """Drop every database, database user, broker user and vhost made (also after a crash)."""
        remove(self.made_path)


def remove(made_path: pathlib.Path) -> None:
    """Drop what ``made.json`` lists, then the file itself."""
    if not made_path.exists():
        return
    made = json.loads(made_path.read_text())
    for name, user in made.get("databases", []):
        mariadb(f"DROP DATABASE IF EXISTS `{name}`; DROP USER IF EXISTS '{user}'@'%';")
    for user, vhost in made.get("rabbit_users", []):
        rabbitmqctl("delete_user", user, check=False)
        rabbitmqctl("delete_vhost", vhost, check=False)
    made_path.unlink()


def rabbitmqctl(*argv: str, check: bool = True) -> str:
    """Run rabbitmqctl in the machine's network namespace (where it reaches its node)."""
    done = subprocess.run(
        host_command("rabbitmqctl", "-q", *argv), capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {argv[0]}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def mariadb(sql: str) -> str:
    """Run SQL as MariaDB's root, on its socket: the same from the sandbox's network and the machine's."""
    done = subprocess.run(
        ["mariadb", f"--socket={MARIADB_SOCKET}", "-uroot", "-N", "-e", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mariadb: {done.stderr.strip()}")
    return done.stdout
