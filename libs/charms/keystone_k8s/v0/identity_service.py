"""The identity-service relation (``keystone`` interface): one schema for both sides.

A service that has an API asks keystone to register it in the catalog and to
create a service user for it; keystone answers with its auth URLs, the service
project and domain, and a Juju secret holding the user's credentials.

Everything lives in the **application** databags (written by each side's leader)
and in one secret owned by the keystone application and granted to the requirer
application. The format is the one the existing charms of this interface speak.

Requirer (a service charm)::

    from charms.keystone_k8s.v0 import identity_service as ids

    # on the leader, whenever the endpoints may have changed
    request = ids.IdentityServiceRequest(
        service_endpoints=(
            ids.ServiceEndpoint(
                service_name="glance",
                type="image",
                description="OpenStack Image",
                admin_url="http://glance.openstack.svc:9292",
                internal_url="http://glance.openstack.svc:9292",
                public_url="https://glance.example.com",
            ),
        ),
        region="RegionOne",
    )
    ids.write_request(relation, self.app, request)

    # on every unit: the answer, then the credentials
    try:
        answer = ids.read_provider_data(relation)   # None until keystone answered
    except ids.DataError as e:
        ...                                         # e names the bad keys
    credentials = ids.read_credentials(self.model, answer.service_credentials)

Provider (keystone)::

    request = ids.read_request(relation)            # None until complete; DataError if malformed
    data = ids.build_provider_data(
        internal_url="http://keystone.openstack.svc:5000",
        public_url="https://keystone.example.com",
        region="RegionOne",
        bind_host="10.1.2.3",
        port=5000,
        admin_domain=ids.Resource("admin_domain", "..."),
        ...
        credentials_secret_id=secret.id,
    )
    ids.write_provider_data(relation, self.app, data)

The library never sets status and has no dependency besides ``ops``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ops

# The unique Charmhub library identifier, never change it
LIBID = "9acd1a58cf874b0bb359f7645f100097"

# Increment this major API version when introducing breaking changes
LIBAPI = 0

# Increment this PATCH version before using `charmcraft publish-lib` or reset
# to 0 if you are raising the major API version
LIBPATCH = 3

PYDEPS: list[str] = []

logger = logging.getLogger(__name__)

#: the catalog interfaces every requested service gets an endpoint for
INTERFACES = ("admin", "internal", "public")

#: what keystone sets in ``api-version``
API_VERSION = "v3"


class DataError(ValueError):
    """A databag is incomplete or malformed; ``keys`` names the offending keys."""

    def __init__(self, message: str, keys: Sequence[str]) -> None:
        super().__init__(message)
        self.keys = tuple(keys)


def _text(data: Mapping[str, str], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


# -- requirer -> provider ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServiceEndpoint:
    """One service to register in the catalog, with its URL per interface."""

    service_name: str
    type: str
    description: str
    admin_url: str
    internal_url: str
    public_url: str

    def url(self, interface: str) -> str:
        """Return the URL of ``interface`` (admin, internal or public)."""
        return getattr(self, f"{interface}_url")

    @classmethod
    def from_dict(cls, raw: object) -> ServiceEndpoint:
        """Parse one element of ``service-endpoints``; raises DataError if it is unusable."""
        if not isinstance(raw, Mapping):
            raise DataError("service-endpoints: an element is not an object", ["service-endpoints"])
        values: dict[str, str] = {}
        for field in dataclasses.fields(cls):
            value = raw.get(field.name, "" if field.name == "description" else None)
            if not isinstance(value, str) or (field.name != "description" and not value):
                raise DataError(
                    f"service-endpoints: field '{field.name}' missing or not a string", ["service-endpoints"]
                )
            values[field.name] = value
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class IdentityServiceRequest:
    """What the requirer's leader writes in its application databag."""

    service_endpoints: tuple[ServiceEndpoint, ...]
    region: str
    extra_roles: tuple[str, ...] = ()

    def to_databag(self) -> dict[str, str | None]:
        """Databag values; ``None`` means the key is removed."""
        endpoints = [dataclasses.asdict(e) for e in self.service_endpoints]
        return {
            "service-endpoints": json.dumps(endpoints, sort_keys=True),
            "region": self.region,
            "extra-roles": json.dumps(list(self.extra_roles)) if self.extra_roles else None,
        }

    @classmethod
    def from_databag(cls, data: Mapping[str, str]) -> IdentityServiceRequest | None:
        """Parse the request: ``None`` while ``service-endpoints`` or ``region`` is absent.

        Raises :class:`DataError` naming the key when a value is present but malformed.
        """
        raw_endpoints, region = _text(data, "service-endpoints"), _text(data, "region")
        if not raw_endpoints or not region:
            return None
        try:
            parsed = json.loads(raw_endpoints)
        except ValueError:
            raise DataError("service-endpoints is not JSON", ["service-endpoints"]) from None
        if not isinstance(parsed, list) or not parsed:
            raise DataError("service-endpoints is not a non-empty list", ["service-endpoints"])
        endpoints = tuple(ServiceEndpoint.from_dict(e) for e in parsed)
        roles: tuple[str, ...] = ()
        raw_roles = _text(data, "extra-roles")
        if raw_roles:
            try:
                parsed_roles = json.loads(raw_roles)
            except ValueError:
                raise DataError("extra-roles is not JSON", ["extra-roles"]) from None
            if not isinstance(parsed_roles, list) or not all(isinstance(r, str) and r for r in parsed_roles):
                raise DataError("extra-roles is not a list of role names", ["extra-roles"])
            roles = tuple(sorted(set(parsed_roles)))
        return cls(service_endpoints=endpoints, region=region, extra_roles=roles)

    def fingerprint(self) -> str:
        """Return a stable text identifying this request (changes when it must be processed again)."""
        return json.dumps({k: v for k, v in self.to_databag().items() if v is not None}, sort_keys=True)


# -- provider -> requirer ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Resource:
    """A keystone object as the interface names it: name and id."""

    name: str
    id: str


@dataclasses.dataclass(frozen=True)
class IdentityServiceProviderData:
    """The 28 keys keystone writes in its application databag (all strings)."""

    api_version: str
    auth_host: str
    auth_port: str
    auth_protocol: str
    service_host: str
    service_port: str
    service_protocol: str
    internal_host: str
    internal_port: str
    internal_protocol: str
    internal_auth_url: str
    admin_auth_url: str
    public_auth_url: str
    region: str
    admin_domain_name: str
    admin_domain_id: str
    admin_project_name: str
    admin_project_id: str
    admin_user_name: str
    admin_user_id: str
    admin_role: str
    service_domain_name: str
    service_domain_id: str
    service_project_name: str
    service_project_id: str
    service_user_id: str
    service_credentials: str
    processed_extra_roles: str

    #: what a requirer cannot work without (the credentials and the auth URLs)
    REQUIRED = ("service-credentials", "internal-auth-url", "public-auth-url")

    def to_databag(self) -> dict[str, str]:
        """Databag values, every key set."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every key the provider writes."""
        return tuple(f.name.replace("_", "-") for f in dataclasses.fields(cls))

    @classmethod
    def from_databag(cls, data: Mapping[str, str]) -> IdentityServiceProviderData | None:
        """Parse the answer: ``None`` while the provider has written nothing.

        Keys beyond :attr:`REQUIRED` default to empty strings (``admin-auth-url``
        to the internal one, the internal host/port/protocol to the parts of the
        internal auth URL), so that answers of older providers still parse.
        Raises :class:`DataError` naming the required keys that are missing.
        """
        if not any(_text(data, k) for k in cls.REQUIRED):
            return None
        missing = [k for k in cls.REQUIRED if not _text(data, k)]
        if missing:
            raise DataError(f"missing {', '.join(missing)}", missing)
        values = {f.name: _text(data, f.name.replace("_", "-")) for f in dataclasses.fields(cls)}
        values["admin_auth_url"] = values["admin_auth_url"] or values["internal_auth_url"]
        host, port, protocol = split_url(values["internal_auth_url"])
        values["internal_host"] = values["internal_host"] or host
        values["internal_port"] = values["internal_port"] or str(port)
        values["internal_protocol"] = values["internal_protocol"] or protocol
        return cls(**values)


def split_url(url: str) -> tuple[str, int, str]:
    """Host, port (80/443 by scheme when absent) and scheme of a URL; DataError if it has no host."""
    try:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port
    except ValueError:
        raise DataError(f"not a URL: {url!r}", []) from None
    if not parsed.hostname or parsed.scheme not in ("http", "https"):
        raise DataError(f"not an http(s) URL: {url!r}", [])
    return parsed.hostname, port or (443 if parsed.scheme == "https" else 80), parsed.scheme


def auth_url(base_url: str) -> str:
    """Return the identity v3 URL under a base URL (idempotent)."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v3") else f"{base}/v3"


def build_provider_data(
    *,
    internal_url: str,
    public_url: str,
    region: str,
    bind_host: str,
    port: int,
    admin_domain: Resource,
    admin_project: Resource,
    admin_user: Resource,
    admin_role: str,
    service_domain: Resource,
    service_project: Resource,
    service_user_id: str,
    credentials_secret_id: str,
    extra_roles: Sequence[str] = (),
    protocol: str = "http",
) -> IdentityServiceProviderData:
    """Build the provider's answer, computed the way every keystone of this interface does.

    ``internal_url`` / ``public_url`` are keystone's base URLs (``/v3`` is appended);
    ``bind_host`` and ``port`` are keystone's address on the relation's binding and
    ``protocol`` the scheme keystone serves there (``https`` once it has a certificate,
    whatever the URLs' schemes): the auth and service triples.
    """
    internal_host, internal_port, internal_protocol = split_url(internal_url)
    internal_auth = auth_url(internal_url)
    return IdentityServiceProviderData(
        api_version=API_VERSION,
        auth_host=bind_host,
        auth_port=str(port),
        auth_protocol=protocol,
        service_host=bind_host,
        service_port=str(port),
        service_protocol=protocol,
        internal_host=internal_host,
        internal_port=str(internal_port),
        internal_protocol=internal_protocol,
        internal_auth_url=internal_auth,
        admin_auth_url=internal_auth,
        public_auth_url=auth_url(public_url),
        region=region,
        admin_domain_name=admin_domain.name,
        admin_domain_id=admin_domain.id,
        admin_project_name=admin_project.name,
        admin_project_id=admin_project.id,
        admin_user_name=admin_user.name,
        admin_user_id=admin_user.id,
        admin_role=admin_role,
        service_domain_name=service_domain.name,
        service_domain_id=service_domain.id,
        service_project_name=service_project.name,
        service_project_id=service_project.id,
        service_user_id=service_user_id,
        service_credentials=credentials_secret_id,
        processed_extra_roles=json.dumps(sorted(set(extra_roles))),
    )


# -- the credentials secret ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServiceCredentials:
    """Content of the credentials secret."""

    username: str
    password: str

    def to_content(self) -> dict[str, str]:
        """Secret content."""
        return {"username": self.username, "password": self.password}

    @classmethod
    def from_content(cls, content: Mapping[str, str]) -> ServiceCredentials | None:
        """Parse the content: ``None`` unless both username and a non-empty password are there."""
        username, password = content.get("username"), content.get("password")
        if not isinstance(username, str) or not username or not isinstance(password, str) or not password:
            return None
        return cls(username=username, password=password)


def credentials_label(app_name: str) -> str:
    """Return the provider's label for the credentials secret of requirer application ``app_name``."""
    return f"credentials_{service_username_prefix(app_name)}"


def service_username_prefix(app_name: str) -> str:
    """Start of the service user's name for requirer application ``app_name``."""
    return "svc_" + app_name.replace("-", "_")


def read_credentials(model: ops.Model, secret_id: str) -> ServiceCredentials | None:
    """Read the credentials in ``secret_id`` (latest revision); ``None`` if not readable yet."""
    import ops

    if not secret_id:
        return None
    try:
        content = model.get_secret(id=secret_id).get_content(refresh=True)
    except (ops.SecretNotFoundError, ops.ModelError) as e:
        # not granted yet, or removed: the provider has not finished
        logger.debug("credentials secret not readable: %s", type(e).__name__)
        return None
    return ServiceCredentials.from_content(content)


# -- databag access ------------------------------------------------------------


def _update(data: ops.RelationDataContent, values: Mapping[str, str | None]) -> None:
    # only differing keys are written, so an unchanged request fires no relation-changed;
    # one update() is one relation-set (an empty value removes the key)
    changes = {
        key: "" if value is None else value
        for key, value in values.items()
        if (value is None and key in data) or (value is not None and data.get(key) != value)
    }
    if changes:
        data.update(changes)


def write_request(relation: ops.Relation, app: ops.Application, request: IdentityServiceRequest) -> None:
    """Write the request in this (requirer) application's databag; leader only."""
    _update(relation.data[app], request.to_databag())


def read_request(relation: ops.Relation) -> IdentityServiceRequest | None:
    """Read the requirer's request on ``relation`` (provider side); DataError if malformed."""
    if relation.app is None:
        return None
    return IdentityServiceRequest.from_databag(relation.data[relation.app])


def write_provider_data(
    relation: ops.Relation, app: ops.Application, data: IdentityServiceProviderData
) -> None:
    """Write the answer in this (provider) application's databag, all keys at once; leader only."""
    _update(relation.data[app], dict(data.to_databag()))


def read_provider_data(relation: ops.Relation) -> IdentityServiceProviderData | None:
    """Read the provider's answer on ``relation`` (requirer side); DataError if incomplete."""
    if relation.app is None:
        return None
    return IdentityServiceProviderData.from_databag(relation.data[relation.app])
