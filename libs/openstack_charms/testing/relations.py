"""Complete relations with the charms we do not write, as their providers leave them.

Each function returns a :class:`~openstack_charms.testing.RelationFixture`: the
relation with the provider's side filled in, and the Juju secrets it refers to.
The formats are the ones the interface tests check against the real provider
libraries (tests/interfaces/).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ops import testing

from . import RelationFixture

if TYPE_CHECKING:
    from charmlibs.interfaces.tls_certificates import Certificate, PrivateKey

MODEL = "openstack"
MYSQL_ENDPOINT = "mysql-primary.openstack.svc.cluster.local:3306"
MYSQL_READ_ONLY_ENDPOINT = "mysql-replicas.openstack.svc.cluster.local:3306"
RABBITMQ_HOSTNAME = "rabbitmq-endpoints.openstack.svc.cluster.local"
INGRESS_ADDRESSES = {"ingress-internal": "10.20.0.10", "ingress-public": "10.20.1.10"}


def _with_id(relation: testing.Relation, relation_id: int | None) -> testing.Relation:
    return relation if relation_id is None else dataclasses.replace(relation, id=relation_id)


def database_fixture(
    endpoint: str = "database",
    database: str = "glance",
    *,
    remote_app: str = "mysql",
    password: str = "db-password",
    username: str | None = None,
    endpoints: str = MYSQL_ENDPOINT,
    relation_id: int | None = None,
) -> RelationFixture:
    """Return a ``mysql_client`` relation after mysql-k8s created the database and its user.

    The provider names the user after the relation and hands the credentials
    over in a secret granted to the relation (``secret-user``); ``data`` is the
    copy of the request it keeps to tell what changed. The keys are those the
    data-platform provider library writes (tests/interfaces checks them).
    """
    relation = testing.Relation(endpoint, interface="mysql_client", remote_app_name=remote_app)
    relation = _with_id(relation, relation_id)
    secret = testing.Secret(
        {"username": username or f"relation-{relation.id}", "password": password},
        owner=None,
    )
    salt = "fixturesalt12345"
    request = {
        "resource": database,
        "salt": salt,
        "requested-secrets": ["username", "password", "tls", "tls-ca", "uris", "read-only-uris"],
    }
    remote = {
        "data": json.dumps(request),
        "database": database,
        "resource": database,
        "salt": salt,
        "endpoints": endpoints,
        "read-only-endpoints": MYSQL_READ_ONLY_ENDPOINT,
        "secret-user": secret.id,
        "version": "8.0.41-0ubuntu0.22.04.1",
    }
    relation = dataclasses.replace(relation, remote_app_data=remote)
    return RelationFixture(relation, (secret,))


def amqp_fixture(
    endpoint: str = "amqp",
    *,
    remote_app: str = "rabbitmq",
    password: str = "rabbit-password",
    hostname: str = RABBITMQ_HOSTNAME,
    relation_id: int | None = None,
) -> RelationFixture:
    """Return a ``rabbitmq`` relation after rabbitmq-k8s created the user and vhost asked for."""
    relation = testing.Relation(
        endpoint,
        interface="rabbitmq",
        remote_app_name=remote_app,
        remote_app_data={"password": password, "hostname": hostname},
        remote_units_data={0: {"ingress-address": "10.1.0.20"}},
    )
    return RelationFixture(_with_id(relation, relation_id))


def ingress_fixture(
    endpoint: str = "ingress-public",
    url: str | None = None,
    *,
    app: str = "glance",
    remote_app: str | None = None,
    relation_id: int | None = None,
) -> RelationFixture:
    """Return an ``ingress`` relation after traefik-k8s published the URL it routes (``url``)."""
    address = INGRESS_ADDRESSES.get(endpoint, "10.20.2.10")
    url = url or f"http://{address}/{MODEL}-{app}"
    relation = testing.Relation(
        endpoint,
        interface="ingress",
        remote_app_name=remote_app or f"traefik-{endpoint.removeprefix('ingress-')}",
        remote_app_data={"ingress": json.dumps({"url": url})},
    )
    return RelationFixture(_with_id(relation, relation_id))


@functools.cache
def fixture_ca() -> tuple[PrivateKey, Certificate]:
    """Return a CA key and certificate, made once per test session (key generation is slow)."""
    from charmlibs.interfaces.tls_certificates import Certificate, CertificateRequestAttributes, PrivateKey

    key = PrivateKey.generate()
    ca = Certificate.generate_self_signed_ca(
        CertificateRequestAttributes(common_name="openstack test CA"), key, datetime.timedelta(days=365)
    )
    return key, ca


@functools.cache
def _unit_key(endpoint: str, unit: int) -> PrivateKey:
    from charmlibs.interfaces.tls_certificates import PrivateKey

    return PrivateKey.generate()


def sign(csr_pem: str, *, days: int = 90) -> str:
    """Sign a certificate signing request with the test CA, as a provider would."""
    from charmlibs.interfaces.tls_certificates import Certificate, CertificateSigningRequest

    ca_key, ca = fixture_ca()
    csr = CertificateSigningRequest.from_string(csr_pem)
    return str(Certificate.generate(csr, ca, ca_key, datetime.timedelta(days=days)))


def certificates_fixture(
    endpoint: str = "certificates",
    *,
    app: str = "glance",
    model: str = MODEL,
    unit: int = 0,
    remote_app: str = "self-signed-certificates",
    relation_id: int | None = None,
) -> RelationFixture:
    """Return a ``tls-certificates`` relation where the provider has signed this unit's request.

    It holds what the unit kept from earlier hooks (its private key, in the
    unit-owned secret the library labels, and its request in the unit databag)
    and the provider's answer (certificate, CA, chain) in the provider's
    application databag. The request is for ``app`` in ``model``; a charm under
    another name re-requests, and keeps serving this certificate meanwhile.
    """
    from charmlibs.interfaces.tls_certificates import CertificateRequestAttributes, _tls_certificates

    key = _unit_key(endpoint, unit)
    _, ca = fixture_ca()
    common_name = f"{app}.{model}.svc"
    pod = f"{app}-{unit}.{app}-endpoints.{model}.svc.cluster.local"
    names = [common_name, f"{common_name}.cluster.local", pod]
    csr = CertificateRequestAttributes(common_name=common_name, sans_dns=names).generate_csr(key)
    csr_pem = str(csr).strip()
    certificate = sign(csr_pem)
    request = {"certificate_signing_request": csr_pem, "ca": False}
    relation = testing.Relation(
        endpoint,
        interface="tls-certificates",
        remote_app_name=remote_app,
        local_unit_data={"certificate_signing_requests": json.dumps([request])},
        remote_app_data={
            "certificates": json.dumps(
                [
                    {
                        "ca": str(ca),
                        "certificate_signing_request": csr_pem,
                        "certificate": certificate,
                        "chain": [certificate, str(ca)],
                    }
                ]
            )
        },
    )
    key_secret = testing.Secret(
        {"private-key": str(key)},
        owner="unit",
        label=f"{_tls_certificates.LIBID}-private-key-{unit}-{endpoint}",
    )
    return RelationFixture(_with_id(relation, relation_id), (key_secret,))


def ca_fixture(
    endpoint: str = "receive-ca-cert",
    *,
    remote_app: str = "self-signed-certificates",
    relation_id: int | None = None,
) -> RelationFixture:
    """Return a ``certificate_transfer`` relation (interface v1) carrying the test CA."""
    _, ca = fixture_ca()
    relation = testing.Relation(
        endpoint,
        interface="certificate_transfer",
        remote_app_name=remote_app,
        remote_app_data={"certificates": json.dumps([str(ca)]), "version": "1"},
    )
    return RelationFixture(_with_id(relation, relation_id))


def readiness_fixture(
    endpoint: str = "placement", *, remote_app: str = "placement", ready: bool = True
) -> RelationFixture:
    """Return a service-readiness relation (``placement`` and alike) once the provider said it is ready."""
    relation = testing.Relation(
        endpoint, interface=endpoint, remote_app_name=remote_app, remote_app_data={"ready": json.dumps(ready)}
    )
    return RelationFixture(relation)


def signing_fixture(
    endpoint: str,
    unit_databags: Iterable[Mapping[str, str]],
    *,
    remote_app: str = "certificates",
    relation_id: int | None = None,
) -> RelationFixture | None:
    """Return a ``tls-certificates`` relation where the provider signed every request the units made.

    ``unit_databags`` are the requirer units' databags, where each unit keeps
    its requests (``certificate_signing_requests``); ``None`` while none has
    asked. Unlike :func:`certificates_fixture`, which stands for a unit that
    already has its key and certificate, this answers what the charm itself
    generated, as self-signed-certificates does.
    """
    _, ca = fixture_ca()
    issued = []
    for databag in unit_databags:
        requests = json.loads(databag.get("certificate_signing_requests") or "[]")
        for request in requests:
            csr = str(request["certificate_signing_request"]).strip()
            certificate = _signed(csr)
            issued.append(
                {
                    "ca": str(ca),
                    "certificate_signing_request": csr,
                    "certificate": certificate,
                    "chain": [certificate, str(ca)],
                }
            )
    if not issued:
        return None
    relation = testing.Relation(
        endpoint,
        interface="tls-certificates",
        remote_app_name=remote_app,
        remote_app_data={"certificates": json.dumps(issued)},
    )
    return RelationFixture(_with_id(relation, relation_id))


@functools.cache
def _signed(csr_pem: str) -> str:
    # a provider keeps what it issued: the same request keeps its certificate
    return sign(csr_pem)


OVN_CENTRAL_ADDRESSES = ("10.1.0.31", "10.1.0.32", "10.1.0.33")


def ovsdb_cms_fixture(
    endpoint: str = "ovsdb-cms",
    *,
    remote_app: str = "ovn-central",
    addresses: Iterable[str] = OVN_CENTRAL_ADDRESSES,
    loadbalancer: str | None = None,
    protocol: str | None = None,
    relation_id: int | None = None,
) -> RelationFixture:
    """Return an ``ovsdb-cms`` relation where every provider unit said where it serves.

    With ``loadbalancer``, the provider is ovn-relay with its LoadBalancer
    address (what machine charms wait for); ``protocol="tcp"`` is a unit
    serving without certificates (our providers' one addition to the format).
    """
    units = {}
    for n, address in enumerate(addresses):
        data = {
            "bound-hostname": f"{remote_app}-{n}.{remote_app}-endpoints.{MODEL}.svc.cluster.local",
            "bound-address": address,
            "ingress-bound-address": address,
        }
        if protocol:
            data["protocol"] = protocol
        units[n] = data
    relation = testing.Relation(
        endpoint,
        interface="ovsdb-cms",
        remote_app_name=remote_app,
        remote_app_data={"loadbalancer-address": loadbalancer} if loadbalancer else {},
        remote_units_data=units,
    )
    return RelationFixture(_with_id(relation, relation_id))


NOVA_SPICE_PROXY_URL = (
    f"http://10.20.1.10/{MODEL}-nova-spiceproxy/spice_auto.html?path=/{MODEL}-nova-spiceproxy"
)
NOVA_METADATA_URL = f"http://10.20.0.10/{MODEL}-nova-metadata"


def nova_service_fixture(
    endpoint: str = "nova-service",
    *,
    remote_app: str = "nova",
    spice_proxy_url: str = NOVA_SPICE_PROXY_URL,
    metadata_url: str = NOVA_METADATA_URL,
    region: str = "RegionOne",
    pci_aliases: str = "[]",
    shared_secret: str | None = "metadata-shared-secret",
    relation_id: int | None = None,
) -> RelationFixture:
    """Return a ``nova-service`` relation (interface ``nova``) once nova's leader published its offer.

    The metadata proxy shared secret is nova's application secret, granted to
    the requirer (``shared_secret=None``: nova sent no secret id).
    """
    from ..relations.nova_service import SECRET_KEY, NovaServiceData

    secrets = (
        (testing.Secret({SECRET_KEY: shared_secret}, owner=None, label="shared-metadata-secret"),)
        if shared_secret is not None
        else ()
    )
    data = NovaServiceData(
        spice_proxy_url=spice_proxy_url,
        pci_aliases=pci_aliases,
        region=region,
        metadata_url=metadata_url,
        metadata_secret_id=secrets[0].id if secrets else "",
    )
    values = {k: v or "" for k, v in data.databag().items()}
    relation = testing.Relation(
        endpoint, interface="nova", remote_app_name=remote_app, remote_app_data=values
    )
    return RelationFixture(_with_id(relation, relation_id), secrets)
