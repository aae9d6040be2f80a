"""Keystone's side of identity-service and identity-credentials (leader only).

Each request is answered once: its fingerprint (the request plus everything the
answer depends on) is kept in peer app data, so a repeated event, another unit
or a new leader does not call the API again. When keystone does not answer yet,
the charm waits and the next hook tries again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import string
from typing import TYPE_CHECKING

import keystone_api
import ops
from charms.keystone_k8s.v0 import identity_credentials as idc
from charms.keystone_k8s.v0 import identity_service as ids
from openstack_charms.status import Waiting

if TYPE_CHECKING:
    from charm import KeystoneCharm

logger = logging.getLogger(__name__)

ADMIN_DOMAIN = keystone_api.Resource("Default", "default")
ADMIN_PROJECT = "admin"
SERVICE_DOMAIN = "service_domain"
SERVICE_PROJECT = "services"
SERVICE_ROLE = "service"
_STALE = re.compile(r"^(identity-service|identity-credentials)-(\d+)$")


def random_text(length: int) -> str:
    """Return random letters and digits."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def connect(charm: KeystoneCharm) -> keystone_api.KeystoneAPI:
    """Return a client authenticated as the admin user; Waiting if keystone does not answer."""
    api = keystone_api.KeystoneAPI()
    try:
        api.authenticate(charm.keystone_config.admin_user, charm.admin_password, project=ADMIN_PROJECT)
    except keystone_api.UnavailableError:
        raise Waiting("keystone API not answering yet") from None
    return api


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _bind_host(charm: KeystoneCharm, relation: ops.Relation, default: str) -> str:
    try:
        binding = charm.model.get_binding(relation)
        address = binding.network.ingress_address if binding else None
    except ops.ModelError:
        address = None
    return str(address) if address else default


class Provider:
    """Answers the requests of every identity-service and identity-credentials relation."""

    def __init__(self, charm: KeystoneCharm) -> None:
        self.charm = charm
        assert charm.peers is not None
        self.peers = charm.peers
        self._api: keystone_api.KeystoneAPI | None = None

    @property
    def api(self) -> keystone_api.KeystoneAPI:
        """The admin client, connected on first use."""
        if self._api is None:
            self._api = connect(self.charm)
        return self._api

    def _answer_inputs(self) -> str:
        config = self.charm.keystone_config
        return "\n".join(
            (
                self.charm.internal_url,
                self.charm.public_url,
                config.region,
                config.admin_user,
                config.admin_role,
            )
        )

    def serve(self) -> None:
        """Answer what is new; forget relations that are gone."""
        live: set[str] = set()
        try:
            for endpoint, answer in (
                ("identity-service", self._serve_service),
                ("identity-credentials", self._serve_credentials),
            ):
                for relation in self.charm.model.relations[endpoint]:
                    if relation.active and relation.app is not None:
                        live.add(f"{endpoint}-{relation.id}")
                        answer(relation)
        except keystone_api.UnavailableError:
            raise Waiting("keystone API not answering yet") from None
        except keystone_api.APIError as e:
            logger.error("keystone API error: %s", e)
            raise Waiting(f"keystone API error (HTTP {e.status}); will retry") from None
        data = self.peers.context
        for key in [k for k in (data or {}) if _STALE.match(k) and k not in live]:
            self.peers.set(key, None)

    def _done(self, key: str, fingerprint: str) -> bool:
        return self.peers.get(key) == fingerprint

    def _service_project(self) -> tuple[keystone_api.Resource, keystone_api.Resource]:
        domain = self.api.ensure_domain(SERVICE_DOMAIN, "Domain of the service users")
        return domain, self.api.ensure_project(SERVICE_PROJECT, domain.id, "Project of the service users")

    def _grant_secret(self, label: str, relation: ops.Relation) -> str:
        secret_id = self.peers.get(f"{label}-secret-id")
        assert secret_id is not None
        self.charm.model.get_secret(id=secret_id, label=label).grant(relation)
        return secret_id

    def _serve_service(self, relation: ops.Relation) -> None:
        assert relation.app is not None
        try:
            request = ids.read_request(relation)
        except ids.DataError as e:
            logger.warning("identity-service: ignoring the unusable request of %s: %s", relation.app.name, e)
            return
        if request is None:
            return
        key = f"identity-service-{relation.id}"
        fingerprint = _fingerprint(request.fingerprint(), self._answer_inputs())
        if self._done(key, fingerprint):
            return
        config, api, app = self.charm.keystone_config, self.api, relation.app.name
        label = ids.credentials_label(app)
        credentials = self.peers.secret(
            label,
            lambda: {
                "username": f"{ids.service_username_prefix(app)}-{random_text(6)}",
                "password": random_text(24),
            },
            rotate=ops.SecretRotate.MONTHLY,
        )
        domain, project = self._service_project()
        user = api.ensure_user(credentials["username"], credentials["password"], domain.id, project.id)
        for role in sorted({config.admin_role, SERVICE_ROLE, *request.extra_roles}):
            api.grant_role(api.ensure_role(role).id, user.id, project.id)
        for endpoint in request.service_endpoints:
            api.ensure_region(request.region)
            service_id = api.ensure_service(endpoint.service_name, endpoint.type, endpoint.description)
            for interface in ids.INTERFACES:
                api.ensure_endpoint(service_id, interface, endpoint.url(interface), request.region)
        admin_project = api.find_project(ADMIN_PROJECT, ADMIN_DOMAIN.id) or keystone_api.Resource("admin", "")
        admin_user = api.find_user(config.admin_user, ADMIN_DOMAIN.id) or keystone_api.Resource(
            config.admin_user, ""
        )
        internal_host = ids.split_url(self.charm.internal_url)[0]
        data = ids.build_provider_data(
            internal_url=self.charm.internal_url,
            public_url=self.charm.public_url,
            region=config.region,
            bind_host=_bind_host(self.charm, relation, internal_host),
            port=self.charm.api_port,
            admin_domain=ids.Resource(ADMIN_DOMAIN.name, ADMIN_DOMAIN.id),
            admin_project=ids.Resource(admin_project.name, admin_project.id),
            admin_user=ids.Resource(admin_user.name, admin_user.id),
            admin_role=config.admin_role,
            service_domain=ids.Resource(domain.name, domain.id),
            service_project=ids.Resource(project.name, project.id),
            service_user_id=user.id,
            credentials_secret_id=self._grant_secret(label, relation),
            extra_roles=request.extra_roles,
            protocol=ids.split_url(self.charm.internal_url)[2],
        )
        ids.write_provider_data(relation, self.charm.app, data)
        self.peers.set(key, fingerprint)

    def _serve_credentials(self, relation: ops.Relation) -> None:
        assert relation.app is not None
        try:
            request = idc.read_request(relation)
        except idc.DataError as e:
            logger.warning(
                "identity-credentials: ignoring the unusable request of %s: %s", relation.app.name, e
            )
            return
        if request is None:
            return
        config = self.charm.keystone_config
        if request.username == config.admin_user or request.username.startswith("svc_"):
            logger.warning(
                "identity-credentials: %s may not ask for user %s", relation.app.name, request.username
            )
            return
        key = f"identity-credentials-{relation.id}"
        fingerprint = _fingerprint(json.dumps(request.to_databag(), sort_keys=True), self._answer_inputs())
        if self._done(key, fingerprint):
            return
        api = self.api
        label = idc.credentials_label(request.username)
        credentials = self.peers.secret(
            label, lambda: {"username": request.username, "password": random_text(24)}
        )
        domain = api.ensure_domain(request.domain or SERVICE_DOMAIN)
        project = api.ensure_project(request.project or SERVICE_PROJECT, domain.id)
        user = api.ensure_user(request.username, credentials["password"], domain.id, project.id)
        api.grant_role(api.ensure_role(config.admin_role).id, user.id, project.id)
        host, _, protocol = ids.split_url(self.charm.internal_url)
        data = idc.build_provider_data(
            internal_url=self.charm.internal_url,
            public_url=self.charm.public_url,
            region=config.region,
            bind_host=_bind_host(self.charm, relation, host),
            port=self.charm.api_port,
            project=idc.Resource(project.name, project.id),
            domain=idc.Resource(domain.name, domain.id),
            admin_role=config.admin_role,
            credentials_secret_id=self._grant_secret(label, relation),
            protocol=protocol,
        )
        idc.write_provider_data(relation, self.charm.app, data)
        self.peers.set(key, fingerprint)

    def new_password(self, label: str) -> str:
        """Give the user of credentials secret ``label`` a new password, in keystone then in the secret."""
        content = self.charm.model.get_secret(
            id=self.peers.get(f"{label}-secret-id"), label=label
        ).get_content(refresh=True)
        username, password = content["username"], random_text(24)
        domain = self.api.find_domain(SERVICE_DOMAIN)
        user = self.api.find_user(username, domain.id) if domain else None
        if user is None:
            raise Waiting(f"user {username} not in keystone yet")
        self.api.ensure_user(username, password, domain.id if domain else "")
        self.peers.update_secret(label, {"username": username, "password": password})
        return password
