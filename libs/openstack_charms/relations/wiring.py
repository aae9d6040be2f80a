"""Which handler serves which endpoint: one table for every kind of charm, and what each needs.

A charm gets a handler for every endpoint it declares in charmcraft.yaml whose
role and interface are in :data:`TABLE` (or that the charm names in its own
``wiring``); an endpoint of any name works, ``messaging`` as well as ``amqp``.
Each entry names the modules its handler imports, lazily, and the PyPI
requirements they need: the build writes each charm's ``requirements.txt``
from the endpoints it declares and imports every one of those modules in an
environment holding only those requirements.

Nothing here is imported by a handler's module, and the table itself imports
no handler: a hook imports only the handlers of the endpoints the charm has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..charm import OpenStackCharm
    from .base import RelationHandler

    Charm = OpenStackCharm[Any, Any]

HandlerFactory = Callable[["Charm", str], "RelationHandler[Any]"]

#: what every charm needs at run time, whatever it declares
RUNTIME = ("ops==3.9.0", "jinja2==3.1.6")
INGRESS_ENDPOINTS = ("ingress-internal", "ingress-public")


@dataclasses.dataclass(frozen=True)
class Wire:
    """How to build the handler of one kind of endpoint, and what it imports."""

    factory: HandlerFactory
    modules: tuple[str, ...]
    """Every module the handler can import (the build imports each)."""
    requirements: tuple[str, ...] = ()
    """PyPI requirements those modules need beyond :data:`RUNTIME`, pinned."""
    field: str = ""
    """The :class:`~openstack_charms.context.ServiceContext` field the handler's context fills
    (``databases``: by endpoint; ``ingress``: ``ingress_internal`` or ``ingress_public``, by endpoint)."""


def _database(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .database import DatabaseRequirer

    return DatabaseRequirer(charm, endpoint, database_name=charm.database_name(endpoint))


def _amqp(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .amqp import AMQPRequirer

    return AMQPRequirer(charm, endpoint, username=charm.service_name, vhost=charm.amqp_vhost)


def _ingress(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .ingress import IngressRequirer

    return IngressRequirer(charm, endpoint, port=charm.ingress_port(), tls=lambda: charm.tls_enabled)


def _identity_service(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .identity import IdentityServiceRequirer

    return IdentityServiceRequirer(charm, endpoint, request=charm.identity_request)


def _identity_credentials(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .identity import IdentityCredentialsRequirer

    return IdentityCredentialsRequirer(charm, endpoint)


def _certificates(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .tls import CertificatesRequirer

    return CertificatesRequirer(
        charm,
        endpoint,
        directory=f"/etc/{charm.service_name}/tls",
        names=charm.certificate_names,
        names_from=INGRESS_ENDPOINTS,
    )


def _ca(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .tls import CATransferRequirer

    return CATransferRequirer(charm, endpoint, path=f"/etc/{charm.service_name}/ca-bundle.pem")


def _readiness_provider(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .readiness import ReadinessProvider

    return ReadinessProvider(charm, endpoint)


def _readiness_requirer(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .readiness import ReadinessRequirer

    return ReadinessRequirer(charm, endpoint)


def _ovsdb_cms(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .ovsdb import OVSDBCMSRequirer

    # a machine charm is outside the Kubernetes cluster: it needs the load balancer's address
    return OVSDBCMSRequirer(charm, endpoint, external=charm.applier_wire is HOST_APPLIER)


def _nova_service_provider(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .nova_service import NovaServiceProvider

    offer = getattr(charm, "nova_service_offer", None)
    if offer is None:
        raise RuntimeError(f"{charm.app.name} provides {endpoint} but has no nova_service_offer()")
    return NovaServiceProvider(charm, endpoint, offer=offer)


def _nova_service_requirer(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    from .nova_service import NovaServiceRequirer

    return NovaServiceRequirer(charm, endpoint)


def _not_an_endpoint(charm: Charm, endpoint: str) -> RelationHandler[Any]:
    raise RuntimeError(f"{endpoint} is an applier, not an endpoint")


#: what each kind of charm's applier imports (the build installs and imports it like a handler's)
PEBBLE_APPLIER = Wire(_not_an_endpoint, ("openstack_charms.pebble",))
HOST_APPLIER = Wire(
    _not_an_endpoint,
    (
        "openstack_charms.host",
        "openstack_charms.units",
        "charmlibs.apt",
        "charmlibs.snap",
        "charmlibs.systemd",
    ),
    ("charmlibs-apt==1.0.0.post1", "charmlibs-snap==2.0.0", "charmlibs-systemd==1.0.0.post0"),
)

_HERE = "openstack_charms.relations"
_TLS_LIB = "charmlibs-interfaces-tls-certificates==1.12.0"
_CA_LIB = "charmlibs-interfaces-certificate-transfer==1.1.0"

#: (role, interface) -> how its handler is built
TABLE: Mapping[tuple[str, str], Wire] = {
    ("requires", "mysql_client"): Wire(_database, (f"{_HERE}.database",), field="databases"),
    ("requires", "rabbitmq"): Wire(_amqp, (f"{_HERE}.amqp",), field="amqp"),
    ("requires", "ingress"): Wire(_ingress, (f"{_HERE}.ingress",), field="ingress"),
    ("requires", "keystone"): Wire(
        _identity_service, (f"{_HERE}.identity", "charms.keystone_k8s.v0.identity_service"), field="identity"
    ),
    ("requires", "keystone-credentials"): Wire(
        _identity_credentials,
        (f"{_HERE}.identity", "charms.keystone_k8s.v0.identity_credentials"),
        field="credentials",
    ),
    ("requires", "tls-certificates"): Wire(
        _certificates, (f"{_HERE}.tls", "charmlibs.interfaces.tls_certificates"), (_TLS_LIB,), field="tls"
    ),
    ("requires", "certificate_transfer"): Wire(
        _ca, (f"{_HERE}.tls", "charmlibs.interfaces.certificate_transfer"), (_CA_LIB,), field="ca"
    ),
    ("requires", "ovsdb-cms"): Wire(_ovsdb_cms, (f"{_HERE}.ovsdb",), field="ovsdb"),
    ("provides", "placement"): Wire(_readiness_provider, (f"{_HERE}.readiness",)),
    ("requires", "placement"): Wire(_readiness_requirer, (f"{_HERE}.readiness",)),
    # nova-service: the hypervisor's context class declares ``nova_service`` (see nova_service.py)
    ("provides", "nova"): Wire(_nova_service_provider, (f"{_HERE}.nova_service",)),
    ("requires", "nova"): Wire(_nova_service_requirer, (f"{_HERE}.nova_service",), field="nova_service"),
}


def wires(declared: Iterable[tuple[str, str, str]], own: Mapping[str, Wire] | None = None) -> dict[str, Wire]:
    """Endpoint -> wire for a charm's declared ``(role, endpoint, interface)`` (its own entries win).

    In the table's order (databases first, certificates last), which is the
    order statuses name endpoints in, whatever the order of charmcraft.yaml.
    """
    order = {key: i for i, key in enumerate(TABLE)}
    known = sorted(
        (
            (order[(role, interface)], endpoint, TABLE[(role, interface)])
            for role, endpoint, interface in declared
            if (role, interface) in TABLE
        ),
        key=lambda item: item[0],
    )
    return {**{endpoint: wire for _, endpoint, wire in known}, **(own or {})}


def context_field(endpoint: str, wire: Wire, role: str, interface: str) -> str:
    """The context field the handler of ``endpoint`` fills ("" for none).

    A charm's own handler for a known interface fills that interface's field;
    the two ingress endpoints fill ``ingress_internal`` and ``ingress_public``.
    """
    library = TABLE.get((role, interface))
    field = wire.field or (library.field if library else "")
    if field != "ingress":
        return field
    return endpoint.replace("-", "_") if endpoint in INGRESS_ENDPOINTS else ""


def declared(meta: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(role, endpoint, interface)`` of every requires/provides endpoint of a charmcraft.yaml."""
    return [
        (role, endpoint, (spec or {}).get("interface", ""))
        for role in ("requires", "provides")
        for endpoint, spec in (meta.get(role) or {}).items()
    ]


def requirements(wired: Mapping[str, Wire]) -> list[str]:
    """The charm's requirements.txt lines: the runtime, then what its wired handlers need."""
    extra = sorted({r for w in wired.values() for r in w.requirements})
    return [*RUNTIME, *extra]
