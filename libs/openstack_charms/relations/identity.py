"""Requirer handlers of keystone's two interfaces: identity-service and identity-credentials.

Both publish a request from the leader (in the application databag) and become
ready once keystone has answered with its auth URLs and granted the secret that
holds the credentials, readable with a non-empty password.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from charms.keystone_k8s.v0 import identity_credentials as idc
from charms.keystone_k8s.v0 import identity_service as ids

from .base import RelationHandler

if TYPE_CHECKING:
    from ..charm import ReconcilingCharm


@dataclasses.dataclass(frozen=True)
class IdentityServiceContext:
    """What a service needs from keystone: auth URLs, its service user, project and domain."""

    internal_auth_url: str
    public_auth_url: str
    admin_auth_url: str
    region: str
    service_user_name: str
    service_password: str
    service_project_name: str
    service_project_id: str
    service_domain_name: str
    service_domain_id: str
    admin_role: str
    internal_host: str
    internal_port: int
    internal_protocol: str


@dataclasses.dataclass(frozen=True)
class IdentityCredentialsContext:
    """An account keystone created for this application, with where to authenticate."""

    username: str
    password: str
    internal_auth_url: str
    public_auth_url: str
    region: str
    project_name: str
    project_id: str
    user_domain_name: str
    user_domain_id: str
    project_domain_name: str
    project_domain_id: str
    admin_role: str
    api_version: str


def _port(value: str, protocol: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    return port if 0 < port < 65536 else (443 if protocol == "https" else 80)


class IdentityServiceRequirer(RelationHandler[IdentityServiceContext]):
    """Asks keystone to register the charm's endpoints and to create its service user.

    The request comes from ``charm.catalog_endpoints()`` and the ``region`` option
    (``charm.typed_config.region``); it is rewritten on every reconcile, which
    costs nothing when nothing changed.
    """

    def __init__(
        self, charm: ReconcilingCharm, endpoint: str = "identity-service", *, extra_roles: Sequence[str] = ()
    ) -> None:
        super().__init__(charm, endpoint)
        self.extra_roles = tuple(extra_roles)

    def request(self) -> ids.IdentityServiceRequest:
        """Build the request this charm publishes."""
        endpoints = self.charm.catalog_endpoints()  # type: ignore[attr-defined]
        region = getattr(self.charm.typed_config, "region", "RegionOne")
        return ids.IdentityServiceRequest(
            service_endpoints=tuple(ids.ServiceEndpoint(**e) for e in endpoints),
            region=region,
            extra_roles=tuple(sorted(set(self.extra_roles))),
        )

    def publish(self) -> None:
        """Leader: write the request on every relation of the endpoint."""
        if not self.charm.is_leader:
            return
        relations = self.relations
        if not relations:
            return
        request = self.request()
        for relation in relations:
            ids.write_request(relation, self.charm.app, request)

    def get_context(self) -> IdentityServiceContext | None:
        """Keystone's answer and the service user's credentials, or ``None`` naming what is missing."""
        relation = self.relation
        if relation is None:
            return None
        try:
            data = ids.read_provider_data(relation)
        except ids.DataError as e:
            self.waiting_for = f"{', '.join(e.keys) or 'valid data'} from keystone"
            return None
        if data is None:
            self.waiting_for = "service-credentials, internal-auth-url, public-auth-url"
            return None
        credentials = ids.read_credentials(self.charm.model, data.service_credentials)
        if credentials is None:
            self.waiting_for = "the service-credentials secret (not readable yet)"
            return None
        return IdentityServiceContext(
            internal_auth_url=data.internal_auth_url,
            public_auth_url=data.public_auth_url,
            admin_auth_url=data.admin_auth_url,
            region=data.region,
            service_user_name=credentials.username,
            service_password=credentials.password,
            service_project_name=data.service_project_name,
            service_project_id=data.service_project_id,
            service_domain_name=data.service_domain_name,
            service_domain_id=data.service_domain_id,
            admin_role=data.admin_role,
            internal_host=data.internal_host,
            internal_port=_port(data.internal_port, data.internal_protocol),
            internal_protocol=data.internal_protocol,
        )


class IdentityCredentialsRequirer(RelationHandler[IdentityCredentialsContext]):
    """Asks keystone for an account named ``username`` (default: the application's name)."""

    def __init__(
        self,
        charm: ReconcilingCharm,
        endpoint: str = "identity-credentials",
        *,
        username: str | None = None,
        project: str = "",
        domain: str = "",
    ) -> None:
        super().__init__(charm, endpoint)
        self.request = idc.CredentialsRequest(
            username=username or charm.app.name, project=project, domain=domain
        )

    def publish(self) -> None:
        """Leader: write the request on every relation of the endpoint."""
        if not self.charm.is_leader:
            return
        for relation in self.relations:
            idc.write_request(relation, self.charm.app, self.request)

    def get_context(self) -> IdentityCredentialsContext | None:
        """Keystone's answer and the account's credentials, or ``None`` naming what is missing."""
        relation = self.relation
        if relation is None:
            return None
        try:
            data = idc.read_provider_data(relation)
        except idc.DataError as e:
            self.waiting_for = f"{', '.join(e.keys) or 'valid data'} from keystone"
            return None
        if data is None:
            self.waiting_for = "credentials, internal-endpoint, public-endpoint"
            return None
        credentials = idc.read_credentials(self.charm.model, data.credentials)
        if credentials is None:
            self.waiting_for = "the credentials secret (not readable yet)"
            return None
        username, password = credentials
        return IdentityCredentialsContext(
            username=username,
            password=password,
            internal_auth_url=data.internal_endpoint,
            public_auth_url=data.public_endpoint,
            region=data.region,
            project_name=data.project_name,
            project_id=data.project_id,
            user_domain_name=data.user_domain_name,
            user_domain_id=data.user_domain_id,
            project_domain_name=data.project_domain_name,
            project_domain_id=data.project_domain_id,
            admin_role=data.admin_role,
            api_version=data.api_version,
        )
