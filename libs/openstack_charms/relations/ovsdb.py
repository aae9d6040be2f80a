"""OVN's databases over ``ovsdb-cms``: where the provider units are, and the requirer's connection strings.

The format is sunbeam's (see the interface notes of the
project). On ``ovsdb-cms`` a provider unit (ovn-central, ovn-relay) publishes
where it is in its unit databag (``bound-hostname``, ``bound-address``,
``ingress-bound-address``); ovn-relay's leader adds ``loadbalancer-address``
in its app databag; sunbeam's ovn-proxy sends whole connection strings with
``proxy-relation`` = ``true``. Requirers build their connection strings
themselves: ``ssl:<address>:6641`` (NB) and ``:6642`` (SB) for every unit.

One key is ours: a provider unit that serves plain TCP (no certificates
related) says ``protocol`` = ``tcp``. Sunbeam's providers never send it and
always serve TLS, so its absence means ``ssl``.

The requirer's leader says whether it needs an address reachable from
outside the Kubernetes cluster (``external-connectivity``, JSON): machine
charms do, and then wait for ``loadbalancer-address``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..config import is_ip_address
from .base import Incomplete, RelationDataError, RelationHandler, update_databag

if TYPE_CHECKING:
    import ops

    from .base import HandlerHost

NB_PORT = 6641
SB_PORT = 6642
PROTOCOLS = ("ssl", "tcp")


@dataclasses.dataclass(frozen=True)
class Location:
    """Where one provider unit is: what it publishes on ``ovsdb-cms``."""

    hostname: str
    address: str
    ingress_address: str
    protocol: str = "ssl"

    def databag(self) -> dict[str, str | None]:
        """The unit databag, ``protocol`` only when it is not the default."""
        return {
            "bound-hostname": self.hostname,
            "bound-address": self.address,
            "ingress-bound-address": self.ingress_address,
            "protocol": None if self.protocol == "ssl" else self.protocol,
        }

    @classmethod
    def of_pod(cls, charm: ops.CharmBase, endpoint: str, protocol: str) -> Location:
        """A k8s unit's: its pod's stable DNS name, and the endpoint's bind and ingress addresses."""
        from .ingress import unit_host

        binding = charm.model.get_binding(endpoint)
        if binding is None:
            raise RuntimeError(f"no binding for {endpoint}")
        network = binding.network
        return cls(
            unit_host(charm.unit.name, charm.app.name, charm.model.name),
            str(network.bind_address),
            str(network.ingress_address),
            protocol,
        )


def remote(protocol: str, address: str, port: int) -> str:
    """One OVSDB remote: ``ssl:10.0.0.1:6641``, IPv6 bracketed."""
    try:
        if ipaddress.ip_address(address).version == 6:
            address = f"[{address}]"
    except ValueError:
        pass
    return f"{protocol}:{address}:{port}"


def remotes(protocol: str, addresses: Sequence[str], port: int) -> str:
    """Comma-joined remotes, in the order given."""
    return ",".join(remote(protocol, a, port) for a in addresses)


@dataclasses.dataclass(frozen=True)
class OVSDBContext:
    """The OVN databases as a requirer reaches them."""

    nb_connection: str
    """NB remotes for a client inside the cluster (neutron, ovn-relay)."""
    sb_connection: str
    """SB remotes for a client inside the cluster."""
    external_sb_connection: str
    """SB remotes for a client outside it (a chassis): the load balancer's, else the units' ingress."""
    external_nb_connection: str
    protocol: str
    """``ssl`` or ``tcp``: whether the client needs a certificate."""


class OVSDBCMSProvider(RelationHandler[None]):
    """Every unit says where it is once its databases serve; ovn-relay's leader adds its load balancer."""

    reads_remote = False

    def __init__(
        self,
        host: HandlerHost,
        endpoint: str,
        *,
        location: Callable[[], Location],
        loadbalancer: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__(host, endpoint)
        self._location = location
        self._loadbalancer = loadbalancer

    def provide(self, ready: bool) -> None:
        """Publish this unit's location while it serves (a unit that stops serving keeps its last word)."""
        relations = self.relations
        if not relations or not ready:
            return
        data = self._location().databag()
        lb = self._loadbalancer() if self._loadbalancer and self.host.is_leader else None
        for relation in relations:
            update_databag(relation.data[self.host.unit], data)
            if lb:
                update_databag(relation.data[self.host.app], {"loadbalancer-address": lb})


class OVSDBCMSRequirer(RelationHandler[OVSDBContext]):
    """Connection strings to the OVN databases from every provider unit (or a proxy's strings)."""

    def __init__(self, host: HandlerHost, endpoint: str, *, external: bool) -> None:
        super().__init__(host, endpoint)
        self.external = external

    def app_request(self) -> dict[str, str | None]:
        return {"external-connectivity": json.dumps(self.external)}

    def get_context(self) -> OVSDBContext:
        relation = self.relation
        if relation is None or relation.app is None:
            raise Incomplete("the provider application")
        app_data = relation.data[relation.app]
        if app_data.get("proxy-relation") == "true":
            nb, sb = app_data.get("db_nb_connection_strs"), app_data.get("db_sb_connection_strs")
            if not nb or not sb:
                raise Incomplete("db_nb_connection_strs and db_sb_connection_strs")
            protocol = "tcp" if nb.startswith("tcp:") else "ssl"
            return OVSDBContext(nb, sb, sb, nb, protocol)
        units = sorted(relation.units, key=lambda u: int(u.name.split("/")[1]))
        located = [relation.data[u] for u in units]
        served = [d for d in located if is_ip_address(d.get("bound-address"))]
        if not served:
            raise Incomplete(f"bound-address from a unit of {relation.app.name}")
        protocols = {d.get("protocol") or "ssl" for d in served}
        if not protocols <= set(PROTOCOLS):
            raise RelationDataError(f"protocol is {sorted(protocols)}, must be one of {', '.join(PROTOCOLS)}")
        if len(protocols) > 1:
            raise Incomplete(f"every unit of {relation.app.name} on one protocol (some tcp, some ssl)")
        protocol = protocols.pop()
        addresses = [d["bound-address"] for d in served]
        nb, sb = remotes(protocol, addresses, NB_PORT), remotes(protocol, addresses, SB_PORT)
        lb = app_data.get("loadbalancer-address")
        if lb and not is_ip_address(lb):
            raise RelationDataError(f"loadbalancer-address {lb!r} is not an IP address")
        if lb:
            external_nb, external_sb = remote(protocol, lb, NB_PORT), remote(protocol, lb, SB_PORT)
        elif self.external:
            raise Incomplete(f"loadbalancer-address from {relation.app.name}")
        else:
            ingress = [d.get("ingress-bound-address") or d["bound-address"] for d in served]
            external_nb = remotes(protocol, ingress, NB_PORT)
            external_sb = remotes(protocol, ingress, SB_PORT)
        return OVSDBContext(nb, sb, external_sb, external_nb, protocol)
