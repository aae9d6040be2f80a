"""Requirer handlers of keystone's two interfaces: identity-service and identity-credentials.

Both publish a request from the leader (in the application databag) and become
ready once keystone has answered with its auth URLs and granted the secret that
holds the credentials, readable with a non-empty password.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

import ops
from charms.keystone_k8s.v0 import identity_credentials as idc
from charms.keystone_k8s.v0 import identity_service as ids

from .base import Incomplete, RelationDataError, RelationHandler

if TYPE_CHECKING:
    from .base import HandlerHost

ContextT = TypeVar("ContextT")


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


class _KeystoneRequirer(RelationHandler[ContextT]):
    """What both requirers share: the leader publishes a request, keystone answers with a secret."""

    #: how statuses name the secret keystone grants
    secret_key: str = ""

    def _secret(self, secret_id: str) -> tuple[str, str]:
        """Username and password from keystone's secret, or Incomplete naming exactly what is missing."""
        try:
            content: Mapping[str, str] = self.host.model.get_secret(id=secret_id).get_content(refresh=True)
        except (ops.SecretNotFoundError, ops.ModelError):
            raise Incomplete(f"access to the {self.secret_key} secret (not granted yet)") from None
        missing = [k for k in ("username", "password") if not content.get(k)]
        if missing:
            raise Incomplete(f"{' and '.join(missing)} in the {self.secret_key} secret")
        return content["username"], content["password"]


class IdentityServiceRequirer(_KeystoneRequirer[IdentityServiceContext]):
    """Asks keystone to register the charm's catalog entries and to create its service user.

    ``request`` builds what is asked (the catalog entries and the region); it is
    rewritten on every reconcile, which costs nothing when nothing changed.
    """

    secret_key = "service-credentials"

    def __init__(
        self, host: HandlerHost, endpoint: str, *, request: Callable[[], ids.IdentityServiceRequest]
    ) -> None:
        super().__init__(host, endpoint)
        self.request = request

    def publish(self) -> None:
        """Leader: write the request on every relation of the endpoint."""
        if not self.host.is_leader:
            return
        relations = self.relations
        if not relations:
            return
        request = self.request()
        for relation in relations:
            ids.write_request(relation, self.host.app, request)

    def get_context(self) -> IdentityServiceContext:
        """Keystone's answer and the service user's credentials, or raise naming what is missing."""
        relation = self.relation
        if relation is None:
            raise Incomplete("the keystone application")
        try:
            data = ids.read_provider_data(relation)
        except ids.DataError as e:
            if e.keys:
                raise Incomplete(f"{', '.join(e.keys)} from keystone") from None
            raise RelationDataError(str(e)) from None
        if data is None:
            raise Incomplete("service-credentials, internal-auth-url, public-auth-url")
        username, password = self._secret(data.service_credentials)
        return IdentityServiceContext(
            internal_auth_url=data.internal_auth_url,
            public_auth_url=data.public_auth_url,
            admin_auth_url=data.admin_auth_url,
            region=data.region,
            service_user_name=username,
            service_password=password,
            service_project_name=data.service_project_name,
            service_project_id=data.service_project_id,
            service_domain_name=data.service_domain_name,
            service_domain_id=data.service_domain_id,
            admin_role=data.admin_role,
            internal_host=data.internal_host,
            internal_port=_port(data.internal_port, data.internal_protocol),
            internal_protocol=data.internal_protocol,
        )


class IdentityCredentialsRequirer(_KeystoneRequirer[IdentityCredentialsContext]):
    """Asks keystone for an account named ``username`` (default: the application's name)."""

    secret_key = "credentials"

    def __init__(
        self,
        host: HandlerHost,
        endpoint: str = "identity-credentials",
        *,
        username: str | None = None,
        project: str = "",
        domain: str = "",
    ) -> None:
        super().__init__(host, endpoint)
        self.request = idc.CredentialsRequest(
            username=username or host.app.name, project=project, domain=domain
        )

    def publish(self) -> None:
        """Leader: write the request on every relation of the endpoint."""
        if not self.host.is_leader:
            return
        for relation in self.relations:
            idc.write_request(relation, self.host.app, self.request)

    def get_context(self) -> IdentityCredentialsContext:
        """Keystone's answer and the account's credentials, or raise naming what is missing."""
        relation = self.relation
        if relation is None:
            raise Incomplete("the keystone application")
        try:
            data = idc.read_provider_data(relation)
        except idc.DataError as e:
            if e.keys:
                raise Incomplete(f"{', '.join(e.keys)} from keystone") from None
            raise RelationDataError(str(e)) from None
        if data is None:
            raise Incomplete("credentials, internal-endpoint, public-endpoint")
        username, password = self._secret(data.credentials)
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
