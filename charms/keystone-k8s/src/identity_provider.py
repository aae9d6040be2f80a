"""Keystone's side of identity-service and identity-credentials (leader only).

Each request is answered once. Peer app data keeps, per relation, a record of
the answer inputs and of the request it answered, so a repeated event, another
unit or a new leader does not call the API again; and a steady hook does not
even read the requests of relations already answered with the current inputs
(each read is a hook tool, per related application, per hook). A request is
read when its relation is new, when the answer inputs changed, on the
relation-changed of that relation (the only way a requirer's data changes),
and on leader-elected (the previous leader may have lost a relation-changed).
When keystone does not answer yet, the charm waits and the next hook tries again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, TypedDict

import keystone_api
import ops
from charms.keystone_k8s.v0 import identity_credentials as idc
from charms.keystone_k8s.v0 import identity_service as ids
from openstack_charms import generate
from openstack_charms.status import NotReady, Waiting

if TYPE_CHECKING:
    from charm import KeystoneCharm
    from openstack_charms.peers import Peers

logger = logging.getLogger(__name__)

ADMIN_DOMAIN = keystone_api.Resource("Default", "default")
ADMIN_PROJECT = "admin"
SERVICE_DOMAIN = "service_domain"
SERVICE_PROJECT = "services"
SERVICE_ROLE = "service"
ENDPOINTS = ("identity-service", "identity-credentials")
_STALE = re.compile(r"^(identity-service|identity-credentials)-(\d+)$")
#: a record's request part when there was nothing to answer (no, an unusable or a refused request)
_NOTHING = "-"


@dataclasses.dataclass(frozen=True)
class ProviderInputs:
    """What the provider needs of the charm, read once per hook.

    ``internal_url`` and ``public_url`` are keystone's base URLs (without
    ``/v3``); ``tls`` says whether keystone's own pod serves HTTPS on ``port``
    (the address the answer names as auth/service host). ``region``,
    ``admin_user`` and ``admin_role`` come from the config; ``admin_password``
    is called only when the API is used (it may create the secret).
    ``generation`` changes with every charm upgrade, so a new revision answers
    again. ``hook`` is the dispatched hook (``leader-elected``,
    ``identity-service-relation-broken``...) and ``hook_relation_id`` the
    relation it is about, if any.
    """

    model: ops.Model
    app: ops.Application
    peers: Peers
    internal_url: str
    public_url: str
    tls: bool
    port: int
    region: str
    admin_user: str
    admin_role: str
    admin_password: Callable[[], str]
    #: the CA of the certificate keystone's pod serves (with ``tls``)
    ca: str = ""
    generation: str = "0"
    hook: str = ""
    hook_relation_id: int | None = None

    def fingerprint(self) -> str:
        """What every answer depends on besides the request."""
        return _fingerprint(
            self.internal_url,
            self.public_url,
            "tls" if self.tls else "plain",
            str(self.port),
            self.region,
            self.admin_user,
            self.admin_role,
            self.generation,
        )


def provider_inputs(charm: KeystoneCharm) -> ProviderInputs:
    """Read what the provider needs from the charm and from the hook's environment."""
    assert charm.peers is not None
    config = charm.keystone_config
    # Juju names the hook's relation as "endpoint:id"; ops gives it only to the event handler
    hook_relation = os.environ.get("JUJU_RELATION_ID", "")
    relation_id = hook_relation.rpartition(":")[2]
    return ProviderInputs(
        model=charm.model,
        app=charm.app,
        peers=charm.peers,
        internal_url=charm.endpoints.internal,
        public_url=charm.endpoints.public,
        tls=charm.tls_enabled,
        ca=_served_ca(charm),
        port=charm.api_port,
        region=config.region,
        admin_user=config.admin_user,
        admin_role=config.admin_role,
        admin_password=lambda: charm.admin_password,
        generation=charm.peers.get("upgrade-generation") or "0",
        hook=charm.hook,
        hook_relation_id=int(relation_id) if relation_id.isdigit() else None,
    )


def _served_ca(charm: KeystoneCharm) -> str:
    if not charm.tls_enabled:
        return ""
    try:
        tls = charm.context.tls
    except NotReady:
        return ""
    return tls.ca if tls is not None else ""


def relation_ids(model: ops.Model, endpoint: str) -> list[int]:
    """The ids of the relations of ``endpoint``: one ``relation-ids``, whatever their number.

    ``model.relations[endpoint]`` is the public way, but it builds an
    ``ops.Relation`` per id, and each costs a ``relation-list`` (and a
    ``relation-list --app`` while no unit has joined): a process per related
    application on every hook, only to learn ids. ops 3.9 has no public call for
    the ids alone, so this is the one place that uses its model backend.
    """
    return list(model._backend.relation_ids(endpoint))


def connect(inputs: ProviderInputs) -> keystone_api.KeystoneAPI:
    """Return a client authenticated as the admin user; Waiting if keystone does not answer."""
    api = keystone_api.KeystoneAPI()
    if inputs.ca:
        api = keystone_api.KeystoneAPI(f"https://localhost:{inputs.port}/v3", ca=inputs.ca)
    try:
        api.authenticate(inputs.admin_user, inputs.admin_password(), project=ADMIN_PROJECT)
    except keystone_api.UnavailableError:
        raise Waiting("keystone API not answering yet") from None
    return api


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class _Location(TypedDict):
    """Where keystone is, as both interfaces' ``build_provider_data`` take it."""

    internal_url: str
    public_url: str
    region: str
    bind_host: str
    port: int
    protocol: str


class Provider:
    """Answers the requests of every identity-service and identity-credentials relation.

    Built from a :class:`ProviderInputs` (see :func:`provider_inputs`), so it
    holds no charm: what it reads is the inputs, the relations' data, the peer
    store (records and credential secret ids) and keystone's API.
    """

    def __init__(self, inputs: ProviderInputs) -> None:
        self.inputs = inputs
        self.peers = inputs.peers
        self._api: keystone_api.KeystoneAPI | None = None

    @classmethod
    def for_charm(cls, charm: KeystoneCharm) -> Provider:
        """The provider of this charm, for this hook."""
        return cls(provider_inputs(charm))

    @property
    def api(self) -> keystone_api.KeystoneAPI:
        """The admin client, connected on first use."""
        if self._api is None:
            self._api = connect(self.inputs)
        return self._api

    def serve(self) -> None:
        """Answer what is new or changed; forget relations that are gone."""
        inputs = self.inputs
        answered_with = inputs.fingerprint() + " "
        # in relation-broken the relation is still listed, but it is going
        broken = inputs.hook_relation_id if inputs.hook.endswith("-relation-broken") else None
        read_all = inputs.hook == "leader-elected"
        live: set[str] = set()
        try:
            for endpoint in ENDPOINTS:
                for relation_id in relation_ids(inputs.model, endpoint):
                    if relation_id == broken:
                        continue
                    key = f"{endpoint}-{relation_id}"
                    live.add(key)
                    record = self.peers.get(key)
                    if (
                        not read_all
                        and relation_id != inputs.hook_relation_id
                        and record is not None
                        and record.startswith(answered_with)
                    ):
                        continue
                    relation = inputs.model.get_relation(endpoint, relation_id)
                    if relation is not None and relation.active and relation.app is not None:
                        self._serve(relation, key, record, answered_with)
        except keystone_api.UnavailableError:
            raise Waiting("keystone API not answering yet") from None
        except keystone_api.APIError as e:
            logger.error("keystone API error: %s", e)
            raise Waiting(f"keystone API error (HTTP {e.status}); will retry") from None
        data = self.peers.context
        for key in [k for k in (data or {}) if _STALE.match(k) and k not in live]:
            self.peers.set(key, None)

    def _serve(self, relation: ops.Relation, key: str, record: str | None, answered_with: str) -> None:
        read = self._read(relation)
        if read is None:
            self.peers.set(key, answered_with + _NOTHING)
            return
        request, request_print = read
        done = answered_with + request_print
        if record == done:
            return
        # until answered: should the API fail, the next hook reads this request again
        self.peers.set(key, None)
        if isinstance(request, ids.IdentityServiceRequest):
            self._answer_service(relation, request)
        else:
            self._answer_credentials(relation, request)
        self.peers.set(key, done)

    def _read(
        self, relation: ops.Relation
    ) -> tuple[ids.IdentityServiceRequest | idc.CredentialsRequest, str] | None:
        """The request on ``relation`` and its fingerprint; ``None`` when there is none to answer."""
        assert relation.app is not None
        try:
            if relation.name == "identity-service":
                service = ids.read_request(relation)
                return (service, _fingerprint(service.fingerprint())) if service else None
            credentials = idc.read_request(relation)
        except (ids.DataError, idc.DataError) as e:
            logger.warning("%s: ignoring the unusable request of %s: %s", relation.name, relation.app.name, e)
            return None
        if credentials is None:
            return None
        if not self._may_have(credentials.username):
            logger.warning(
                "%s: %s may not ask for user %s", relation.name, relation.app.name, credentials.username
            )
            return None
        return credentials, _fingerprint(json.dumps(credentials.to_databag(), sort_keys=True))

    def _may_have(self, username: str) -> bool:
        # the admin and the service users belong to keystone, not to whoever asks
        return username != self.inputs.admin_user and not username.startswith("svc_")

    def _location(self, relation: ops.Relation) -> _Location:
        inputs = self.inputs
        # the bind host is the pod itself on port 5000: its scheme is the pod's, not the URLs'
        return _Location(
            internal_url=inputs.internal_url,
            public_url=inputs.public_url,
            region=inputs.region,
            bind_host=self._bind_host(relation),
            port=inputs.port,
            protocol="https" if inputs.tls else "http",
        )

    def _bind_host(self, relation: ops.Relation) -> str:
        try:
            binding = self.inputs.model.get_binding(relation)
            address = binding.network.ingress_address if binding else None
        except ops.ModelError:
            address = None
        if address:
            return str(address)
        # the Kubernetes service: the same pods, on the same port, with the same scheme
        return f"{self.inputs.app.name}.{self.inputs.model.name}.svc"

    def _service_project(self) -> tuple[keystone_api.Resource, keystone_api.Resource]:
        domain = self.api.ensure_domain(SERVICE_DOMAIN, "Domain of the service users")
        return domain, self.api.ensure_project(SERVICE_PROJECT, domain.id, "Project of the service users")

    def _grant_secret(self, label: str, relation: ops.Relation) -> str:
        secret_id = self.peers.get(f"{label}-secret-id")
        assert secret_id is not None
        self.inputs.model.get_secret(id=secret_id, label=label).grant(relation)
        return secret_id

    def _answer_service(self, relation: ops.Relation, request: ids.IdentityServiceRequest) -> None:
        assert relation.app is not None
        inputs, api, app = self.inputs, self.api, relation.app.name
        label = ids.credentials_label(app)
        credentials = self.peers.secret(
            label,
            lambda: {
                "username": f"{ids.service_username_prefix(app)}-{generate.password(6)}",
                "password": generate.password(24),
            },
            rotate=ops.SecretRotate.MONTHLY,
        )
        domain, project = self._service_project()
        user = api.ensure_user(credentials["username"], credentials["password"], domain.id, project.id)
        for role in sorted({inputs.admin_role, SERVICE_ROLE, *request.extra_roles}):
            api.grant_role(api.ensure_role(role).id, user.id, project.id)
        for endpoint in request.service_endpoints:
            api.ensure_region(request.region)
            service_id = api.ensure_service(endpoint.service_name, endpoint.type, endpoint.description)
            for interface in ids.INTERFACES:
                api.ensure_endpoint(service_id, interface, endpoint.url(interface), request.region)
        admin_project = api.find_project(ADMIN_PROJECT, ADMIN_DOMAIN.id) or keystone_api.Resource("admin", "")
        admin_user = api.find_user(inputs.admin_user, ADMIN_DOMAIN.id) or keystone_api.Resource(
            inputs.admin_user, ""
        )
        data = ids.build_provider_data(
            **self._location(relation),
            admin_domain=ids.Resource(ADMIN_DOMAIN.name, ADMIN_DOMAIN.id),
            admin_project=ids.Resource(admin_project.name, admin_project.id),
            admin_user=ids.Resource(admin_user.name, admin_user.id),
            admin_role=inputs.admin_role,
            service_domain=ids.Resource(domain.name, domain.id),
            service_project=ids.Resource(project.name, project.id),
            service_user_id=user.id,
            credentials_secret_id=self._grant_secret(label, relation),
            extra_roles=request.extra_roles,
        )
        ids.write_provider_data(relation, inputs.app, data)

    def _answer_credentials(self, relation: ops.Relation, request: idc.CredentialsRequest) -> None:
        api = self.api
        label = idc.credentials_label(request.username)
        credentials = self.peers.secret(
            label, lambda: {"username": request.username, "password": generate.password(24)}
        )
        domain = api.ensure_domain(request.domain or SERVICE_DOMAIN)
        project = api.ensure_project(request.project or SERVICE_PROJECT, domain.id)
        user = api.ensure_user(request.username, credentials["password"], domain.id, project.id)
        api.grant_role(api.ensure_role(self.inputs.admin_role).id, user.id, project.id)
        data = idc.build_provider_data(
            **self._location(relation),
            project=idc.Resource(project.name, project.id),
            domain=idc.Resource(domain.name, domain.id),
            admin_role=self.inputs.admin_role,
            credentials_secret_id=self._grant_secret(label, relation),
        )
        idc.write_provider_data(relation, self.inputs.app, data)

    def new_password(self, label: str) -> str:
        """Give the user of credentials secret ``label`` a new password, in keystone then in the secret."""
        content = self.inputs.model.get_secret(
            id=self.peers.get(f"{label}-secret-id"), label=label
        ).get_content(refresh=True)
        username, password = content["username"], generate.password(24)
        domain = self.api.find_domain(SERVICE_DOMAIN)
        user = self.api.find_user(username, domain.id) if domain else None
        if user is None:
            raise Waiting(f"user {username} not in keystone yet")
        self.api.ensure_user(username, password, domain.id if domain else "")
        self.peers.update_secret(label, {"username": username, "password": password})
        return password
