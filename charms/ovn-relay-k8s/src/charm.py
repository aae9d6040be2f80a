#!/usr/bin/env python3
"""OVN relay: ovsdb-server relaying ovn-central's Southbound database, behind a LoadBalancer service.

Each unit runs one ``ovsdb-server`` whose only database is a relay of
``OVN_Southbound`` (``relay:OVN_Southbound:<remotes>``, OVS 2.16 and later):
it follows every ovn-central unit it learns of over ``ovsdb-cms``, serves
reads and monitors from memory and forwards transactions. Chassis outside the
Kubernetes cluster reach the units through a LoadBalancer service the leader
applies (:mod:`openstack_charms.loadbalancer`); its address is kept in peer
app data, so that every unit publishes it on ``ovsdb-cms-relay`` and a steady
hook asks Kubernetes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import ops
from openstack_charms import (
    Blocked,
    Check,
    Directory,
    File,
    K8sCharm,
    ServiceConfig,
    ServiceContext,
    Waiting,
    Wire,
    Workload,
)
from openstack_charms.config import is_ip_address
from openstack_charms.plan import Service

if TYPE_CHECKING:
    from collections.abc import Callable

    from openstack_charms.loadbalancer import LoadBalancer
    from openstack_charms.relations.ovsdb import OVSDBCMSProvider

logger = logging.getLogger(__name__)

CONTAINER = "ovsdb-server"
SCHEMA = "OVN_Southbound"
SB_PORT = 6642
RUN = "/run/ovn"
SOCKET = f"{RUN}/ovnsb_db.sock"
CONTROL = f"{RUN}/ovnsb_db.ctl"
#: this unit's CA and the received ones, in one file: ovsdb-server takes a single --ca-cert
TRUSTED_CAS = "/etc/ovn/tls/trusted-cas.pem"
#: the leader's record of the LoadBalancer service, in peer app data
APPLIED, ADDRESS = "loadbalancer-applied", "loadbalancer-address"
WAITING_FOR_ADDRESS = "waiting for Kubernetes to assign the LoadBalancer service an address"

#: lightkube, for the LoadBalancer service: imported by the hooks that reach Kubernetes only
KUBERNETES_MODULES = ("openstack_charms.loadbalancer", "lightkube", "lightkube.resources.core_v1", "httpx2")
KUBERNETES_REQUIREMENTS = ("lightkube==1.0.1", "lightkube-models==1.37.0.8")

Context = ServiceContext[ServiceConfig]


class OVNRelayCharm(K8sCharm[ServiceConfig, Context]):
    """ovsdb-server relaying OVN's Southbound database to chassis outside the cluster."""

    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "ovn"
    service_user = "root"
    own_wiring: ClassVar = {
        # the provider's module, and what the leader's LoadBalancer service needs (the build installs it)
        "ovsdb-cms-relay": Wire(
            lambda charm, endpoint: _relay_provider(charm, endpoint),
            ("openstack_charms.relations.ovsdb", *KUBERNETES_MODULES),
            KUBERNETES_REQUIREMENTS,
        )
    }

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self._address = ""
        framework.observe(self.on.remove, self._on_remove)

    # -- the plan ---------------------------------------------------------------------

    def build_context(self) -> Context:
        ctx = super().build_context()
        # ovn-central over TLS accepts only clients with a certificate of its CA
        if ctx.ovsdb is not None and ctx.ovsdb.protocol == "ssl" and ctx.tls is None:
            if not self.handlers["certificates"].related:
                raise Blocked("ovn-central serves TLS: relate certificates")
            raise Waiting("waiting for this unit's certificate (certificates), to reach ovn-central over TLS")
        return ctx

    def workloads(self, ctx: Context) -> Sequence[Workload]:
        assert ctx.ovsdb is not None
        files = self.trust_files(ctx)
        tls: list[str] = []
        if ctx.tls is not None:
            ca = ctx.tls.ca_path
            if ctx.ca is not None:
                ca = TRUSTED_CAS
                files.append(File(TRUSTED_CAS, _join_pem(ctx.tls.ca, ctx.ca.bundle), permissions=0o644))
            tls = [
                f"--private-key={ctx.tls.private_key_path}",
                f"--certificate={ctx.tls.certificate_path}",
                f"--ca-cert={ca}",
            ]
        argv = [
            "ovsdb-server",
            f"--remote=punix:{SOCKET}",
            f"--remote=p{protocol(ctx)}:{SB_PORT}",
            f"--pidfile={RUN}/ovnsb_db.pid",
            f"--unixctl={CONTROL}",
            *tls,
            f"-vconsole:{'dbg' if ctx.config.debug else 'info'}",
            "-vsyslog:off",
            f"relay:{SCHEMA}:{ctx.ovsdb.sb_connection}",
        ]
        service = Service(CONTAINER, " ".join(argv), user="root", summary="OVN Southbound relay")
        # connected: the relay follows ovn-central and can forward transactions; a relay that
        # lost its source for longer than its own reconnection gets a fresh start
        check = Check.exec(
            "ovsdb-relay-connected",
            f"ovsdb-client --timeout=2 wait unix:{SOCKET} {SCHEMA} connected",
            restarts=(CONTAINER,),
        )
        return [
            Workload(
                CONTAINER,
                services=[service],
                checks=[check],
                files=files,
                directories=[Directory(RUN, permissions=0o755)],
            )
        ]

    def after_start(self, ctx: Context) -> None:
        self._address = self.expose()

    def active_message(self, ctx: Context) -> str:
        where = f"{protocol(ctx)}:{self._address}:{SB_PORT}"
        if ctx.tls is None:
            return f"{where}; plain TCP: relate certificates for TLS"
        return where

    # -- the LoadBalancer service ---------------------------------------------------------

    @property
    def loadbalancer(self) -> LoadBalancer:
        from openstack_charms.loadbalancer import LoadBalancer, Port

        return LoadBalancer(self.app.name, self.model.name, (Port("southbound", SB_PORT),))

    def expose(self) -> str:
        """The LoadBalancer service's address; the leader applies the service once per distinct manifest.

        The leader reads the address from Kubernetes only until it has one (or
        after applying); everyone else, and every later hook, reads it from
        peer app data.
        """
        assert self.peers is not None
        loadbalancer = self.loadbalancer
        # an upgrade applies the service again: a new charm may mean a new manifest, and the
        # address is read afresh
        applied = f"{self.peers.get('upgrade-generation') or '0'}:{loadbalancer.inputs}"
        address = self.peers.get(ADDRESS)
        if self.peers.get(APPLIED) != applied:
            if not self.is_leader:
                raise Waiting("waiting for the leader to create the LoadBalancer service")
            address = self.kubernetes(loadbalancer.apply)
            self.peers.set(APPLIED, applied)
            self.peers.set(ADDRESS, address)
        elif not address and self.is_leader:
            address = self.kubernetes(loadbalancer.address)
            if address:
                self.peers.set(ADDRESS, address)
        if not address:
            raise Waiting(WAITING_FOR_ADDRESS)
        if not is_ip_address(address):
            raise Blocked(f"the LoadBalancer service got host name {address}; chassis need an IP address")
        return address

    def kubernetes(self, call: Callable[[], str | None]) -> str | None:
        """``call()`` against the Kubernetes API, its refusal turned into a status."""
        from openstack_charms.loadbalancer import KubernetesError

        try:
            return call()
        except KubernetesError as e:
            logger.warning("Kubernetes: %s", e.message)
            if e.forbidden:
                raise Blocked(
                    f"Kubernetes refused the LoadBalancer service: juju trust {self.app.name} --scope=cluster"
                ) from None
            raise Waiting(f"retrying the LoadBalancer service: {e.message}") from None

    def _on_remove(self, _: ops.RemoveEvent) -> None:
        if not self.is_leader:
            return
        try:
            # a unit leaving an application that stays: the others still serve behind the service
            if self.app.planned_units() > 0:
                return
        except ops.ModelError as e:
            logger.warning("goal-state: %s; keeping the LoadBalancer service", e)
            return
        from openstack_charms.loadbalancer import KubernetesError

        try:
            self.loadbalancer.delete()
        except KubernetesError as e:
            logger.warning("could not delete the LoadBalancer service: %s", e.message)

    # -- what others see ---------------------------------------------------------------

    def relay_provider(self, endpoint: str) -> OVSDBCMSProvider:
        from openstack_charms.relations.ovsdb import Location, OVSDBCMSProvider

        def location() -> Location:
            return Location.of_pod(self, endpoint, "ssl" if self.tls_enabled else "tcp")

        def loadbalancer() -> str | None:
            assert self.peers is not None
            address = self.peers.get(ADDRESS)
            return address if is_ip_address(address) else None

        return OVSDBCMSProvider(self, endpoint, location=location, loadbalancer=loadbalancer)


def protocol(ctx: Context) -> str:
    """What the relay listens with: TLS once this unit has its certificate."""
    return "ssl" if ctx.tls else "tcp"


def _relay_provider(charm: object, endpoint: str) -> Any:
    assert isinstance(charm, OVNRelayCharm)
    return charm.relay_provider(endpoint)


def _join_pem(*bundles: str) -> str:
    return "\n".join(b.strip() for b in bundles if b.strip()) + "\n"


if __name__ == "__main__":  # pragma: nocover
    ops.main(OVNRelayCharm)
