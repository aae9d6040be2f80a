"""The identity-credentials relation (``keystone-credentials`` interface): one schema for both sides.

A charm that needs an OpenStack account of its own (an exporter, a dashboard,
an operator tool) asks keystone for one by name; keystone creates the user and
answers with its auth URLs, project and domain, and a Juju secret holding the
user's credentials, owned by keystone and granted to the requirer application.

The keys are those existing charms of this interface exchange, in the
**application** databags.

Requirer::

    from charms.keystone_k8s.v0 import identity_credentials as idc

    # leader: ask for an account (project and domain are optional)
    idc.write_request(relation, self.app, idc.CredentialsRequest(username=self.app.name))

    # every unit: the answer and the credentials
    answer = idc.read_provider_data(relation)       # None until keystone answered
    if answer is not None:
        credentials = idc.read_credentials(self.model, answer.credentials)

Provider (keystone)::

    request = idc.read_request(relation)            # None until a username is there
    idc.write_provider_data(relation, self.app, idc.build_provider_data(...))

Malformed data never raises anything but :class:`DataError` (a ``ValueError``)
naming the keys. The library never sets status and has no dependency besides ``ops``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ops

# The unique Charmhub library identifier, never change it
LIBID = "aeaa78a989884b6497ffa1a71e7f0e92"

# Increment this major API version when introducing breaking changes
LIBAPI = 0

# Increment this PATCH version before using `charmcraft publish-lib` or reset
# to 0 if you are raising the major API version
LIBPATCH = 3

PYDEPS: list[str] = []

logger = logging.getLogger(__name__)

#: what keystone sets in ``api-version`` on this interface (a bare number, as clients expect)
API_VERSION = "3"

# keystone accepts user names up to 255 characters; keep them printable and without spaces
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class DataError(ValueError):
    """A databag is incomplete or malformed; ``keys`` names the offending keys."""

    def __init__(self, message: str, keys: Sequence[str]) -> None:
        super().__init__(message)
        self.keys = tuple(keys)


def _text(data: Mapping[str, str], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


@dataclasses.dataclass(frozen=True)
class CredentialsRequest:
    """What the requirer's leader writes: the account it wants."""

    username: str
    project: str = ""
    domain: str = ""

    def to_databag(self) -> dict[str, str | None]:
        """Databag values; ``None`` means the key is removed."""
        return {"username": self.username, "project": self.project or None, "domain": self.domain or None}

    @classmethod
    def from_databag(cls, data: Mapping[str, str]) -> CredentialsRequest | None:
        """Parse the request: ``None`` while there is no username; DataError for unusable names."""
        username = _text(data, "username")
        if not username:
            return None
        request = cls(username=username, project=_text(data, "project"), domain=_text(data, "domain"))
        bad = [
            k
            for k in ("username", "project", "domain")
            if getattr(request, k) and not _NAME.match(getattr(request, k))
        ]
        if bad:
            raise DataError(f"invalid {', '.join(bad)}", bad)
        return request


@dataclasses.dataclass(frozen=True)
class CredentialsProviderData:
    """What keystone writes in its application databag (all strings)."""

    api_version: str
    auth_host: str
    auth_port: str
    auth_protocol: str
    internal_host: str
    internal_port: str
    internal_protocol: str
    credentials: str
    project_name: str
    project_id: str
    user_domain_name: str
    user_domain_id: str
    project_domain_name: str
    project_domain_id: str
    region: str
    internal_endpoint: str
    public_endpoint: str
    admin_role: str

    #: what a requirer cannot work without (the credentials and the auth URLs)
    REQUIRED = ("credentials", "internal-endpoint", "public-endpoint")

    def to_databag(self) -> dict[str, str]:
        """Databag values, every key set."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every key the provider writes."""
        return tuple(f.name.replace("_", "-") for f in dataclasses.fields(cls))

    @classmethod
    def from_databag(cls, data: Mapping[str, str]) -> CredentialsProviderData | None:
        """Parse the answer: ``None`` while the provider wrote nothing; DataError naming missing keys."""
        if not any(_text(data, k) for k in cls.REQUIRED):
            return None
        missing = [k for k in cls.REQUIRED if not _text(data, k)]
        if missing:
            raise DataError(f"missing {', '.join(missing)}", missing)
        return cls(**{f.name: _text(data, f.name.replace("_", "-")) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Resource:
    """A keystone object as the interface names it: name and id."""

    name: str
    id: str


def build_provider_data(
    *,
    internal_url: str,
    public_url: str,
    region: str,
    bind_host: str,
    port: int,
    project: Resource,
    domain: Resource,
    admin_role: str,
    credentials_secret_id: str,
    protocol: str = "http",
) -> CredentialsProviderData:
    """Build the provider's answer; ``internal_url``/``public_url`` are keystone's base URLs.

    ``bind_host``, ``port`` and ``protocol`` (the auth and internal triples) address
    keystone itself, not its URLs: ``protocol`` is the scheme keystone serves on that
    port (``https`` once it has a certificate), whatever the URLs' schemes.
    """
    return CredentialsProviderData(
        api_version=API_VERSION,
        auth_host=bind_host,
        auth_port=str(port),
        auth_protocol=protocol,
        internal_host=bind_host,
        internal_port=str(port),
        internal_protocol=protocol,
        credentials=credentials_secret_id,
        project_name=project.name,
        project_id=project.id,
        user_domain_name=domain.name,
        user_domain_id=domain.id,
        project_domain_name=domain.name,
        project_domain_id=domain.id,
        region=region,
        internal_endpoint=auth_url(internal_url),
        public_endpoint=auth_url(public_url),
        admin_role=admin_role,
    )


def auth_url(base_url: str) -> str:
    """Return the identity v3 URL under a base URL (idempotent)."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v3") else f"{base}/v3"


def credentials_label(username: str) -> str:
    """Return the provider's label for the credentials secret of account ``username``."""
    return f"credentials_{username}"


def read_credentials(model: ops.Model, secret_id: str) -> tuple[str, str] | None:
    """(username, password) from secret ``secret_id``; ``None`` unless readable with a password."""
    import ops

    if not secret_id:
        return None
    try:
        content = model.get_secret(id=secret_id).get_content(refresh=True)
    except (ops.SecretNotFoundError, ops.ModelError) as e:
        logger.debug("credentials secret not readable: %s", type(e).__name__)
        return None
    username, password = content.get("username", ""), content.get("password", "")
    return (username, password) if username and password else None


def _update(data: ops.RelationDataContent, values: Mapping[str, str | None]) -> None:
    # only differing keys are written, so an unchanged answer fires no relation-changed;
    # one update() is one relation-set (an empty value removes the key)
    changes = {
        key: "" if value is None else value
        for key, value in values.items()
        if (value is None and key in data) or (value is not None and data.get(key) != value)
    }
    if changes:
        data.update(changes)


def write_request(relation: ops.Relation, app: ops.Application, request: CredentialsRequest) -> None:
    """Write the request in this (requirer) application's databag; leader only."""
    _update(relation.data[app], request.to_databag())


def read_request(relation: ops.Relation) -> CredentialsRequest | None:
    """Read the requirer's request on ``relation`` (provider side); DataError if malformed."""
    if relation.app is None:
        return None
    return CredentialsRequest.from_databag(relation.data[relation.app])


def write_provider_data(relation: ops.Relation, app: ops.Application, data: CredentialsProviderData) -> None:
    """Write the answer in this (provider) application's databag, all keys at once; leader only."""
    _update(relation.data[app], dict(data.to_databag()))


def read_provider_data(relation: ops.Relation) -> CredentialsProviderData | None:
    """Read the provider's answer on ``relation`` (requirer side); DataError if incomplete."""
    if relation.app is None:
        return None
    return CredentialsProviderData.from_databag(relation.data[relation.app])
