#!/usr/bin/env python3
"""OVN central: the Northbound and Southbound databases as raft clusters over every unit, and ovn-northd.

Each database server is a container of its own and runs a script the charm
writes. The founder (the unit that led when the application was first
deployed) creates both clusters as its leader work, once; on any unit whose
volume holds no database the script joins the cluster through its peers'
names, then serves the database with the options of the Pebble layer. Raft addresses are the
pods' names under the application's headless service, which outlive a pod's
address. The leader removes from the clusters the units that left the peer
relation, and a unit being removed leaves them itself.

The databases listen with TLS once this unit has its certificate; the raft
protocol is fixed when the cluster is founded (TLS when ``certificates`` is
related by then).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import ops
from openstack_charms import (
    Blocked,
    Check,
    Command,
    Directory,
    K8sCharm,
    LeaderTask,
    ServiceConfig,
    ServiceContext,
    Waiting,
    Wire,
    Workload,
)
from openstack_charms.plan import Service
from openstack_charms.relations.ingress import unit_host

logger = logging.getLogger(__name__)

RUN = "/run/ovn"
NORTHD_CONTROL = f"{RUN}/ovn-northd.ctl"


@dataclasses.dataclass(frozen=True)
class Database:
    """One of OVN's two databases, as this charm serves it."""

    container: str
    schema: str
    #: the database's file stem, and the schema's in the image
    name: str
    schema_stem: str
    client_port: int
    raft_port: int

    @property
    def file(self) -> str:
        return f"/var/lib/ovn/{self.name}.db"

    @property
    def schema_file(self) -> str:
        return f"/usr/share/ovn/{self.schema_stem}.ovsschema"

    @property
    def socket(self) -> str:
        return f"{RUN}/{self.name}.sock"

    @property
    def control(self) -> str:
        return f"{RUN}/{self.name}.ctl"

    @property
    def script(self) -> str:
        return f"/etc/ovn/{self.container}.sh"


NB = Database("ovn-nb-db-server", "OVN_Northbound", "ovnnb_db", "ovn-nb", 6641, 6643)
SB = Database("ovn-sb-db-server", "OVN_Southbound", "ovnsb_db", "ovn-sb", 6642, 6644)
DATABASES = (NB, SB)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OVNContext(ServiceContext[ServiceConfig]):
    """What the plan needs beyond the shared parts: the cluster."""

    hostname: str
    """This unit's name under the headless service: its raft address's host."""
    members: tuple[str, ...]
    """Every unit's host name, this one's included, in unit order."""
    founder: str
    """The unit that created the clusters."""
    raft_protocol: str

    @property
    def protocol(self) -> str:
        """What the client listeners speak: TLS once this unit has its certificate."""
        return "ssl" if self.tls else "tcp"

    def raft_address(self, hostname: str, db: Database) -> str:
        return f"{self.raft_protocol}:{hostname}:{db.raft_port}"

    def clients(self, db: Database) -> str:
        """Every member's client listener of ``db``, for ovn-northd."""
        return ",".join(f"{self.protocol}:{member}:{db.client_port}" for member in self.members)


class OVNCentralCharm(K8sCharm[ServiceConfig, OVNContext]):
    """OVN's Northbound and Southbound databases (raft) and ovn-northd."""

    config_class = ServiceConfig
    context_class = OVNContext
    service_name = "ovn"
    service_user = "root"
    own_wiring: ClassVar = {"ovsdb-cms": Wire(lambda charm, endpoint: _ovsdb_cms(charm, endpoint), ())}

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on["peers"].relation_departed, self._on_peer_departed)
        framework.observe(self.on.cluster_status_action, self._on_cluster_status)

    # -- who is who ------------------------------------------------------------------

    def hostname(self, unit: str) -> str:
        """A unit's pod name under the application's headless service (stable across pod restarts)."""
        return unit_host(unit, self.app.name, self.model.name)

    def peer_units(self) -> list[str]:
        """Every unit of the application this unit knows of, itself included, in unit order."""
        relation = self.model.get_relation("peers")
        units = {self.unit.name, *(u.name for u in relation.units)} if relation else {self.unit.name}
        return sorted(units, key=lambda u: int(u.split("/")[1]))

    def build_context(self) -> OVNContext:
        assert self.peers is not None
        founder = self.peers.get("founder")
        raft_protocol = self.peers.get("raft-protocol")
        if founder is None or raft_protocol is None:
            if not self.is_leader:
                raise Waiting("waiting for the leader to found the OVN clusters")
            # the clusters' transport is chosen once: raft cannot change it without rebuilding them
            founder, raft_protocol = self.unit.name, "ssl" if self.tls_enabled else "tcp"
            self.peers.set("founder", founder)
            self.peers.set("raft-protocol", raft_protocol)
        units = self.peer_units()
        # the founder is awaited until it created the clusters (its leader work's markers); missing
        # after that, it was removed, and the clusters live on without it
        founded = all(self.peers.get(f"create-{db.name}-done") for db in DATABASES)
        if founder not in units and not founded:
            raise Waiting(f"waiting for {founder}, which founded the OVN clusters, to join the peer relation")
        fields = self.context_fields()
        if raft_protocol == "ssl" and fields.get("tls") is None:
            if not self.handlers["certificates"].related:
                raise Blocked("the OVN clusters run over TLS: relate certificates")
            raise Waiting("waiting for this unit's certificate (certificates)")
        return OVNContext(
            **fields,
            hostname=self.hostname(self.unit.name),
            members=tuple(self.hostname(u) for u in units),
            founder=founder,
            raft_protocol=raft_protocol,
        )

    # -- the plan ---------------------------------------------------------------------

    def workloads(self, ctx: OVNContext) -> Sequence[Workload]:
        return [*(self.database_server(ctx, db) for db in DATABASES), self.northd(ctx)]

    def tls_options(self, ctx: OVNContext, key: str, certificate: str, ca: str) -> list[str]:
        if ctx.tls is None:
            return []
        return [
            f"{key}={ctx.tls.private_key_path}",
            f"{certificate}={ctx.tls.certificate_path}",
            f"{ca}={ctx.tls.ca_path}",
        ]

    def log_options(self, ctx: OVNContext) -> list[str]:
        return [f"-vconsole:{'dbg' if ctx.config.debug else 'info'}", "-vsyslog:off"]

    def database_server(self, ctx: OVNContext, db: Database) -> Workload:
        script = self.render(
            "ovsdb-server.sh.j2",
            db.script,
            ctx,
            values={
                "db": db,
                # the founder first: it is a member before any other unit
                "members": [
                    ctx.raft_address(m, db) for m in dict.fromkeys((self.hostname(ctx.founder), *ctx.members))
                ],
            },
            permissions=0o755,
            # the script only matters before the database exists; the server's options are the layer's
            restarts=(),
        )
        argv = [
            db.script,
            "run",
            ctx.raft_address(ctx.hostname, db),
            f"--remote=punix:{db.socket}",
            f"--remote=p{ctx.protocol}:{db.client_port}",
            f"--pidfile={RUN}/{db.name}.pid",
            f"--unixctl={db.control}",
            *self.tls_options(ctx, "--private-key", "--certificate", "--ca-cert"),
            *self.log_options(ctx),
        ]
        service = Service(db.container, " ".join(argv), user="root", summary=f"{db.schema} ovsdb-server")
        # a server cut off from the cluster's majority is not helped by a restart: reported only
        check = Check.exec(f"{db.container}-connected", f"{db.script} check")
        return Workload(
            db.container,
            services=[service],
            checks=[check],
            files=[script, *self.trust_files(ctx)],
            directories=[Directory(RUN, permissions=0o755), Directory("/etc/ovn", permissions=0o755)],
        )

    def northd(self, ctx: OVNContext) -> Workload:
        argv = [
            "ovn-northd",
            f"--ovnnb-db={ctx.clients(NB)}",
            f"--ovnsb-db={ctx.clients(SB)}",
            f"--pidfile={RUN}/ovn-northd.pid",
            f"--unixctl={NORTHD_CONTROL}",
            *self.tls_options(ctx, "--private-key", "--certificate", "--ca-cert"),
            *self.log_options(ctx),
        ]
        service = Service("ovn-northd", " ".join(argv), user="root", summary="ovn-northd")
        # every unit's northd runs; one holds the lock and works, the others answer "standby"
        check = Check.exec(
            "ovn-northd-up", f"ovn-appctl -t {NORTHD_CONTROL} status", restarts=("ovn-northd",)
        )
        return Workload(
            "ovn-northd",
            services=[service],
            checks=[check],
            files=self.trust_files(ctx),
            directories=[Directory(RUN, permissions=0o755)],
        )

    def leader_work(self, ctx: OVNContext) -> Sequence[LeaderTask]:
        """The founder creates both clusters, once; every other unit (and the founder, later) joins."""
        if ctx.founder != self.unit.name:
            return ()
        return [
            LeaderTask(
                f"create-{db.name}",
                db.container,
                Command((db.script, "create", ctx.raft_address(ctx.hostname, db))),
            )
            for db in DATABASES
        ]

    # -- membership --------------------------------------------------------------------

    def after_start(self, ctx: OVNContext) -> None:
        if not self.is_leader:
            return
        assert self.peers is not None
        units = self.peer_units()
        recorded = json.loads(self.peers.get("members") or "[]")
        gone = [u for u in recorded if u not in units]
        for db in DATABASES:
            # only a member still listed: kicking one that already left made this server leave itself
            listed = (self.appctl(db, "cluster/status", db.schema) or "") if gone else ""
            for unit in gone:
                address = ctx.raft_address(self.hostname(unit), db)
                if f" at {address})" in listed:
                    self.appctl(db, "cluster/kick", db.schema, address)
        if recorded != units:
            self.peers.set("members", json.dumps(units))

    def appctl(self, db: Database, *argv: str) -> str | None:
        """``ovs-appctl`` against this unit's server of ``db``; ``None`` (logged) when it fails."""
        container = self.unit.get_container(db.container)
        try:
            out, _ = container.exec(["ovs-appctl", "-t", db.control, *argv], timeout=30).wait_output()
        except (ops.pebble.Error, ops.pebble.ExecError) as e:
            logger.warning("ovs-appctl %s on %s: %s", " ".join(argv[:2]), db.container, e)
            return None
        return out

    def _on_peer_departed(self, event: ops.RelationDepartedEvent) -> None:
        if event.departing_unit != self.unit:
            return
        # this unit is being removed: leaving keeps the clusters' majorities counted right
        for db in DATABASES:
            self.appctl(db, "cluster/leave", db.schema)
        # the leave is asynchronous: done before the pod goes, and before the leader kicks this
        # server (a kick racing the leave made the leader leave its cluster itself)
        for db in DATABASES:
            status = f"ovs-appctl -t {db.control} cluster/status {db.schema}"
            wait = f"while {status} | grep -q '^Status: leaving cluster'; do sleep 0.2; done"
            try:
                self.unit.get_container(db.container).exec(["sh", "-c", wait], timeout=60).wait_output()
            except (ops.pebble.Error, ops.pebble.ExecError) as e:
                logger.warning("%s still leaving its cluster: %s", db.container, e)

    def _on_cluster_status(self, event: ops.ActionEvent) -> None:
        results: dict[str, Any] = {}
        for db in DATABASES:
            out = self.appctl(db, "cluster/status", db.schema)
            if out is None:
                event.fail(f"{db.container} does not answer")
                return
            results[db.container] = cluster_status(out)
        event.set_results(results)

    # -- what others see ---------------------------------------------------------------

    def ovsdb_provider(self, endpoint: str) -> Any:
        from openstack_charms.relations.ovsdb import Location, OVSDBCMSProvider

        def location() -> Location:
            return Location.of_pod(self, endpoint, "ssl" if self.tls_enabled else "tcp")

        return OVSDBCMSProvider(self, endpoint, location=location)

    def active_message(self, ctx: OVNContext) -> str:
        if ctx.tls is None:
            return "plain TCP: relate certificates for TLS"
        if ctx.raft_protocol == "tcp":
            return "raft between units is plain TCP (clusters founded before certificates)"
        return ""


def _ovsdb_cms(charm: object, endpoint: str) -> Any:
    assert isinstance(charm, OVNCentralCharm)
    return charm.ovsdb_provider(endpoint)


def cluster_status(text: str) -> dict[str, str]:
    """The fields of ``cluster/status`` an operator looks at, by their names in its output."""
    wanted = {"Status": "status", "Role": "role", "Leader": "leader", "Address": "address", "Term": "term"}
    fields = {}
    servers = []
    in_servers = False
    for line in text.splitlines():
        if line.startswith("Servers:"):
            in_servers = True
            continue
        if in_servers and line.startswith(" "):
            servers.append(" ".join(line.split()))
            continue
        in_servers = False
        key, _, value = line.partition(":")
        if key in wanted:
            fields[wanted[key]] = value.strip()
    fields["servers"] = "\n".join(servers)
    return fields


if __name__ == "__main__":  # pragma: nocover
    ops.main(OVNCentralCharm)
