"""identity-service and identity-credentials: the interface libraries and our requirer handlers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from charms.keystone_k8s.v0 import identity_credentials as idc
from charms.keystone_k8s.v0 import identity_service as ids
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import APIConfig
from openstack_charms.context import ServiceContext, URLs
from openstack_charms.plan import Workload
from openstack_charms.relations.identity import (
    IdentityCredentialsContext,
    IdentityCredentialsRequirer,
    IdentityServiceContext,
    IdentityServiceRequirer,
)
from openstack_charms.testing.identity import identity_credentials_fixture, identity_service_fixture
from ops import testing

META = {
    "name": "demo",
    "requires": {
        "identity-service": {"interface": "keystone", "limit": 1},
        "identity-credentials": {"interface": "keystone-credentials", "optional": True},
    },
}
CONFIG = {
    "options": {
        "debug": {"type": "boolean", "default": False},
        "log-level": {"type": "string", "default": "INFO"},
        "region": {"type": "string", "default": "RegionOne"},
        "workers": {"type": "int", "default": 2},
    }
}


class DemoCharm(OpenStackCharm[APIConfig, ServiceContext[APIConfig]]):
    config_class = APIConfig
    context_class = ServiceContext
    service_name = "demo"
    api_port = 1234
    seen: ClassVar[dict[str, Any]] = {}

    @property
    def urls(self) -> URLs:
        return URLs(
            public="https://demo.example.com", internal="http://demo.svc:1234", admin="http://demo.svc:1234"
        )

    def catalog(self) -> Sequence[ids.ServiceEndpoint]:
        return [self.catalog_entry("demo-type", "Demo service")]

    def workloads(self, ctx: ServiceContext[APIConfig]) -> Sequence[Workload]:
        DemoCharm.seen["identity"] = ctx.identity
        DemoCharm.seen["credentials"] = ctx.credentials
        return []


@pytest.fixture(autouse=True)
def _reset() -> None:
    DemoCharm.seen = {}
    DemoCharm.identity_extra_roles = ()


def ctx() -> testing.Context[DemoCharm]:
    return testing.Context(DemoCharm, meta=META, config=CONFIG)


def state(
    *relations: testing.RelationBase, secrets: tuple[testing.Secret, ...] = (), **kw: Any
) -> testing.State:
    kw.setdefault("leader", True)
    return testing.State(relations=list(relations), secrets=list(secrets), **kw)


# -- the request -------------------------------------------------------------------------


def test_both_endpoints_get_their_handler_from_the_wiring_table() -> None:
    context = ctx()
    with context(context.on.config_changed(), state()) as manager:
        handlers = manager.charm.handlers
        assert isinstance(handlers["identity-service"], IdentityServiceRequirer)
        credentials = handlers["identity-credentials"]
        assert isinstance(credentials, IdentityCredentialsRequirer)
        assert credentials.request == idc.CredentialsRequest(username="demo", project="", domain="")


def test_leader_publishes_the_request_in_the_app_databag() -> None:
    relation = testing.Relation("identity-service", interface="keystone", remote_app_name="keystone")
    out = ctx().run(ctx().on.relation_joined(relation), state(relation))
    data = out.get_relation(relation.id).local_app_data
    assert json.loads(data["service-endpoints"]) == [
        {
            "admin_url": "http://demo.svc:1234",
            "description": "Demo service",
            "internal_url": "http://demo.svc:1234",
            "public_url": "https://demo.example.com",
            "service_name": "demo",
            "type": "demo-type",
        }
    ]
    # sorted keys, as the existing requirers write it
    assert data["service-endpoints"] == json.dumps(json.loads(data["service-endpoints"]), sort_keys=True)
    assert data["region"] == "RegionOne"
    assert "extra-roles" not in data
    # nothing interface-specific in the unit databag
    assert set(out.get_relation(relation.id).local_unit_data) <= {
        "egress-subnets",
        "ingress-address",
        "private-address",
    }
    assert out.unit_status == testing.WaitingStatus(
        "waiting for identity-service (service-credentials, internal-auth-url, public-auth-url)"
    )


def test_region_option_goes_into_the_request_and_extra_roles_when_declared() -> None:
    DemoCharm.identity_extra_roles = ("member", "load-balancer_admin", "member")
    relation = testing.Relation("identity-service", remote_app_name="keystone")
    out = ctx().run(ctx().on.config_changed(), state(relation, config={"region": "RegionTwo"}))
    data = out.get_relation(relation.id).local_app_data
    assert data["region"] == "RegionTwo"
    assert json.loads(data["extra-roles"]) == ["load-balancer_admin", "member"]


def test_non_leader_publishes_nothing() -> None:
    relation = testing.Relation("identity-service", remote_app_name="keystone")
    out = ctx().run(ctx().on.relation_joined(relation), state(relation, leader=False))
    assert out.get_relation(relation.id).local_app_data == {}


def test_missing_relation_is_blocked() -> None:
    out = ctx().run(ctx().on.config_changed(), state())
    assert out.unit_status == testing.BlockedStatus("missing relation: identity-service")


# -- readiness ---------------------------------------------------------------------------


def test_ready_with_what_keystone_publishes() -> None:
    fixture = identity_service_fixture(requirer_app="demo")
    out = ctx().run(
        ctx().on.relation_changed(fixture.relation), state(fixture.relation, secrets=fixture.secrets)
    )
    assert out.unit_status == testing.ActiveStatus()
    context = DemoCharm.seen["identity"]
    assert context == IdentityServiceContext(
        internal_auth_url="http://keystone.openstack.svc:5000/v3",
        public_auth_url="https://keystone.example.com/v3",
        admin_auth_url="http://keystone.openstack.svc:5000/v3",
        region="RegionOne",
        service_user_name="svc_demo-abc123",
        service_password="svc-password",
        service_project_name="services",
        service_project_id="sproject-id",
        service_domain_name="service_domain",
        service_domain_id="sdomain-id",
        admin_role="admin",
        internal_host="keystone.openstack.svc",
        internal_port=5000,
        internal_protocol="http",
    )


def test_not_ready_until_the_secret_is_granted() -> None:
    fixture = identity_service_fixture()
    out = ctx().run(ctx().on.relation_changed(fixture.relation), state(fixture.relation))
    assert out.unit_status == testing.WaitingStatus(
        "waiting for identity-service (access to the service-credentials secret (not granted yet))"
    )


def test_not_ready_with_an_empty_password() -> None:
    fixture = identity_service_fixture()
    empty = {"username": "svc", "password": ""}
    secret = dataclasses.replace(fixture.secrets[0], tracked_content=empty, latest_content=empty)
    out = ctx().run(ctx().on.relation_changed(fixture.relation), state(fixture.relation, secrets=(secret,)))
    assert out.unit_status.name == "waiting"
    assert "service-credentials secret" in out.unit_status.message


def test_a_readable_secret_without_a_field_names_the_field() -> None:
    fixture = identity_service_fixture()
    for content, missing in (({"username": "svc"}, "password"), ({"password": "x"}, "username")):
        secret = dataclasses.replace(fixture.secrets[0], tracked_content=content, latest_content=content)
        out = ctx().run(
            ctx().on.relation_changed(fixture.relation), state(fixture.relation, secrets=(secret,))
        )
        assert out.unit_status == testing.WaitingStatus(
            f"waiting for identity-service ({missing} in the service-credentials secret)"
        ), "a secret that is readable is not 'not readable yet'"


@pytest.mark.parametrize("key", ["internal-auth-url", "public-auth-url", "service-credentials"])
def test_not_ready_without_an_auth_url_or_credentials_naming_it(key: str) -> None:
    fixture = identity_service_fixture()
    assert isinstance(fixture.relation, testing.Relation)
    data = {k: v for k, v in fixture.relation.remote_app_data.items() if k != key}
    relation = dataclasses.replace(fixture.relation, remote_app_data=data)
    out = ctx().run(ctx().on.relation_changed(relation), state(relation, secrets=fixture.secrets))
    assert out.unit_status == testing.WaitingStatus(f"waiting for identity-service ({key} from keystone)")


@pytest.mark.parametrize(
    "garbage",
    [
        {"service-credentials": "not-a-secret-id", "internal-auth-url": "x", "public-auth-url": "y"},
        {"service-credentials": "secret:nope", "internal-auth-url": "http://[bad", "public-auth-url": "y"},
        {"internal-port": "eighty", "api-version": "{"},
    ],
)
def test_malformed_data_never_raises(garbage: dict[str, str]) -> None:
    relation = testing.Relation("identity-service", remote_app_data=garbage)
    out = ctx().run(ctx().on.relation_changed(relation), state(relation))
    assert out.unit_status.name == "waiting"
    assert out.unit_status.message.startswith("waiting for identity-service (")


def test_unusable_internal_port_defaults_by_scheme() -> None:
    fixture = identity_service_fixture()
    assert isinstance(fixture.relation, testing.Relation)
    data = {**fixture.relation.remote_app_data, "internal-port": "not-a-port", "internal-protocol": "https"}
    relation = dataclasses.replace(fixture.relation, remote_app_data=data)
    ctx().run(ctx().on.relation_changed(relation), state(relation, secrets=fixture.secrets))
    assert DemoCharm.seen["identity"].internal_port == 443


def test_answer_of_a_provider_without_the_optional_keys() -> None:
    """Only the credentials and auth URLs: the rest falls back to what the URL tells."""
    secret = testing.Secret({"username": "svc_demo", "password": "pw"}, owner=None)
    relation = testing.Relation(
        "identity-service",
        remote_app_data={
            "service-credentials": secret.id,
            "internal-auth-url": "http://internal-url/v3",
            "public-auth-url": "http://public-url/v3",
        },
    )
    ctx().run(ctx().on.relation_changed(relation), state(relation, secrets=(secret,)))
    context = DemoCharm.seen["identity"]
    assert (context.internal_host, context.internal_port, context.internal_protocol) == (
        "internal-url",
        80,
        "http",
    )
    assert context.admin_auth_url == "http://internal-url/v3"


def test_same_event_twice_changes_nothing() -> None:
    fixture = identity_service_fixture()
    first = ctx().run(
        ctx().on.relation_changed(fixture.relation), state(fixture.relation, secrets=fixture.secrets)
    )
    relation = first.get_relation(fixture.relation.id)
    second = ctx().run(ctx().on.relation_changed(relation), first)
    assert second.get_relation(relation.id).local_app_data == relation.local_app_data
    assert second.unit_status == first.unit_status == testing.ActiveStatus()


# -- identity-credentials ----------------------------------------------------------------


def test_credentials_request_and_answer() -> None:
    identity = identity_service_fixture()
    fixture = identity_credentials_fixture(username="demo")
    out = ctx().run(
        ctx().on.relation_changed(fixture.relation),
        state(identity.relation, fixture.relation, secrets=(*identity.secrets, *fixture.secrets)),
    )
    assert out.get_relation(fixture.relation.id).local_app_data == {"username": "demo"}
    assert out.unit_status == testing.ActiveStatus()
    assert DemoCharm.seen["credentials"] == IdentityCredentialsContext(
        username="demo",
        password="account-password",
        internal_auth_url="http://keystone.openstack.svc:5000/v3",
        public_auth_url="https://keystone.example.com/v3",
        region="RegionOne",
        project_name="services",
        project_id="sproject-id",
        user_domain_name="service_domain",
        user_domain_id="sdomain-id",
        project_domain_name="service_domain",
        project_domain_id="sdomain-id",
        admin_role="admin",
        api_version="3",
    )


def test_credentials_waiting_names_what_is_missing() -> None:
    identity = identity_service_fixture()
    relation = testing.Relation("identity-credentials", remote_app_data={"credentials": "secret:x"})
    out = ctx().run(
        ctx().on.relation_changed(relation), state(identity.relation, relation, secrets=identity.secrets)
    )
    assert out.unit_status == testing.WaitingStatus(
        "waiting for identity-credentials (internal-endpoint, public-endpoint from keystone)"
    )


# -- the libraries on their own ----------------------------------------------------------


def test_provider_data_is_28_string_keys() -> None:
    fixture = identity_service_fixture()
    assert isinstance(fixture.relation, testing.Relation)
    data = fixture.relation.remote_app_data
    assert len(data) == 28 and set(data) == set(ids.IdentityServiceProviderData.keys())
    assert all(isinstance(v, str) for v in data.values())
    assert data["api-version"] == "v3"
    assert data["processed-extra-roles"] == "[]"
    assert (data["internal-host"], data["internal-port"], data["internal-protocol"]) == (
        "keystone.openstack.svc",
        "5000",
        "http",
    )


def test_internal_port_defaults_by_scheme_when_the_url_has_none() -> None:
    assert ids.split_url("https://keystone.example.com") == ("keystone.example.com", 443, "https")
    assert ids.split_url("http://internal-url") == ("internal-url", 80, "http")
    with pytest.raises(ids.DataError):
        ids.split_url("keystone:5000")


def test_request_round_trip_and_incomplete_requests() -> None:
    request = ids.IdentityServiceRequest(
        service_endpoints=(ids.ServiceEndpoint("glance", "image", "OpenStack Image", "a", "i", "p"),),
        region="RegionOne",
        extra_roles=("member",),
    )
    databag = {k: v for k, v in request.to_databag().items() if v is not None}
    assert ids.IdentityServiceRequest.from_databag(databag) == request
    assert (
        ids.IdentityServiceRequest.from_databag({"service-endpoints": databag["service-endpoints"]}) is None
    )
    assert ids.IdentityServiceRequest.from_databag({"region": "RegionOne"}) is None


@pytest.mark.parametrize(
    ("databag", "key"),
    [
        ({"service-endpoints": "{", "region": "R"}, "service-endpoints"),
        ({"service-endpoints": "[]", "region": "R"}, "service-endpoints"),
        ({"service-endpoints": '[{"service_name": "x"}]', "region": "R"}, "service-endpoints"),
        ({"service-endpoints": '["x"]', "region": "R"}, "service-endpoints"),
        (
            {
                "service-endpoints": '[{"service_name":"g","type":"image","admin_url":"a",'
                '"internal_url":"i","public_url":"p"}]',
                "region": "R",
                "extra-roles": '[""]',
            },
            "extra-roles",
        ),
    ],
)
def test_malformed_request_raises_a_data_error_naming_the_key(databag: dict[str, str], key: str) -> None:
    with pytest.raises(ids.DataError) as e:
        ids.IdentityServiceRequest.from_databag(databag)
    assert e.value.keys == (key,)


def test_credentials_request_validation() -> None:
    assert idc.CredentialsRequest.from_databag({}) is None
    assert idc.CredentialsRequest.from_databag({"username": "x", "project": "p"}) == idc.CredentialsRequest(
        "x", "p"
    )
    with pytest.raises(idc.DataError) as e:
        idc.CredentialsRequest.from_databag({"username": "bad name"})
    assert e.value.keys == ("username",)
    assert idc.CredentialsRequest("x").to_databag() == {"username": "x", "project": None, "domain": None}
