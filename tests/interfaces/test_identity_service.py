"""identity-service: our keystone provider against our requirers, data passed until both are ready.

Each round runs one side on the other side's latest output: the requirer's
application databag becomes keystone's remote data, keystone's databag and the
credentials secret it granted become the requirer's.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from openstack_charms import testing as octest
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import APIConfig
from openstack_charms.context import ServiceContext, URLs
from openstack_charms.plan import Workload
from openstack_charms.relations.identity import IdentityServiceContext, IdentityServiceRequirer
from openstack_charms.testing.relations import database_fixture
from ops import testing

KEYSTONE_SRC = octest.CHARMS / "keystone-k8s" / "src"
if str(KEYSTONE_SRC) not in sys.path:
    sys.path.insert(0, str(KEYSTONE_SRC))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "unit" / "keystone"))

import keystone_api  # noqa: E402
from fake_keystone import FakeKeystone  # noqa: E402

if TYPE_CHECKING:
    from charms.keystone_k8s.v0.identity_service import ServiceEndpoint

KEYSTONE_RELATION_ID = 101
REQUIRER_RELATION_ID = 202


class DemoRequirer(OpenStackCharm[APIConfig, ServiceContext[APIConfig]]):
    """The smallest service charm: one identity-service requirer."""

    config_class = APIConfig
    context_class = ServiceContext
    service_name = "demo"
    api_port = 8000
    identity_extra_roles = ("member",)
    seen: ClassVar[list[IdentityServiceContext | None]] = []

    @property
    def urls(self) -> URLs:
        url = "http://demo.test.svc:8000"
        return URLs(public=url, internal=url, admin=url)

    def catalog(self) -> Sequence[ServiceEndpoint]:
        return [self.catalog_entry("demo", "Demo")]

    def workloads(self, ctx: ServiceContext[APIConfig]) -> Sequence[Workload]:
        assert isinstance(self.handlers["identity-service"], IdentityServiceRequirer)
        DemoRequirer.seen.append(ctx.identity)
        return []


DEMO_META = {"name": "demo", "requires": {"identity-service": {"interface": "keystone", "limit": 1}}}
DEMO_CONFIG = {"options": {"region": {"type": "string", "default": "RegionOne"}}}


@pytest.fixture
def keystone(monkeypatch: pytest.MonkeyPatch) -> FakeKeystone:
    fake = FakeKeystone()
    monkeypatch.setattr(keystone_api, "KeystoneAPI", fake)
    return fake


def keystone_state(root: pathlib.Path) -> testing.State:
    # fixed ids: one ops.testing hands out could be KEYSTONE_RELATION_ID, and each round
    # replaces the relation of that id
    return octest.state_with(
        [database_fixture(database="keystone", relation_id=KEYSTONE_RELATION_ID + 1)],
        base=testing.State(
            leader=True,
            model=testing.Model(name="openstack"),
            relations=[testing.PeerRelation("peers", id=KEYSTONE_RELATION_ID + 2)],
            containers=[octest.container("keystone", root, execs={testing.Exec(["keystone-manage"])})],
        ),
    )


def granted_secrets(provider: testing.State, relation_id: int) -> list[testing.Secret]:
    """The provider's secrets granted on this relation, as the requirer sees them."""
    return [
        testing.Secret(s.latest_content, id=s.id, owner=None)
        for s in provider.secrets
        if relation_id in s.remote_grants
    ]


def exchange(
    requirer_ctx: testing.Context[Any], requirer: testing.State, root: pathlib.Path, app: str
) -> tuple[testing.State, testing.State]:
    """Alternate keystone and the requirer until neither side's data changes."""
    keystone_ctx = octest.charm_context("keystone-k8s")
    provider = keystone_state(root)
    for _ in range(5):
        req_rel = requirer.get_relation(REQUIRER_RELATION_ID)
        ks_rel = testing.Relation(
            "identity-service",
            interface="keystone",
            id=KEYSTONE_RELATION_ID,
            remote_app_name=app,
            remote_app_data=dict(req_rel.local_app_data),
            local_app_data=dict(
                next((r.local_app_data for r in provider.relations if r.id == KEYSTONE_RELATION_ID), {})
            ),
        )
        provider = dataclasses.replace(
            provider, relations=[*(r for r in provider.relations if r.id != KEYSTONE_RELATION_ID), ks_rel]
        )
        provider = keystone_ctx.run(keystone_ctx.on.relation_changed(ks_rel), provider)
        answer = provider.get_relation(KEYSTONE_RELATION_ID).local_app_data
        new_rel = dataclasses.replace(req_rel, remote_app_data=dict(answer))
        known = {s.id for s in requirer.secrets}
        requirer = dataclasses.replace(
            requirer,
            relations=[*(r for r in requirer.relations if r.id != REQUIRER_RELATION_ID), new_rel],
            secrets=[
                *(s for s in requirer.secrets),
                *(s for s in granted_secrets(provider, KEYSTONE_RELATION_ID) if s.id not in known),
            ],
        )
        before = dict(req_rel.local_app_data)
        requirer = requirer_ctx.run(requirer_ctx.on.relation_changed(new_rel), requirer)
        if answer and dict(requirer.get_relation(REQUIRER_RELATION_ID).local_app_data) == before:
            break
    return provider, requirer


def test_keystone_and_a_minimal_requirer(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    DemoRequirer.seen = []
    ctx = testing.Context(DemoRequirer, meta=DEMO_META, config=DEMO_CONFIG)
    relation = testing.Relation(
        "identity-service", interface="keystone", id=REQUIRER_RELATION_ID, remote_app_name="keystone"
    )
    requirer = ctx.run(ctx.on.relation_joined(relation), testing.State(leader=True, relations=[relation]))
    provider, requirer = exchange(ctx, requirer, tmp_path, "demo")
    assert provider.unit_status == testing.ActiveStatus("http://keystone-k8s.openstack.svc:5000/v3")
    assert requirer.unit_status == testing.ActiveStatus()
    context = DemoRequirer.seen[-1]
    assert context is not None
    user = keystone.user("svc_demo-")
    assert (context.service_user_name, context.service_password) == (user.name, user.password)
    assert context.internal_auth_url == "http://keystone-k8s.openstack.svc:5000/v3"
    assert context.service_project_name == "services" and context.service_domain_name == "service_domain"
    assert keystone.roles_of(user) == {"admin", "service", "member"}
    assert keystone.catalog("demo")["public"] == "http://demo.test.svc:8000"
    answer = provider.get_relation(KEYSTONE_RELATION_ID).local_app_data
    assert json.loads(answer["processed-extra-roles"]) == ["member"]
    assert len(answer) == 28


def with_storage_mounts(charm: str, state: testing.State, root: pathlib.Path) -> testing.State:
    """Give each container the storage charmcraft.yaml mounts into it, as Juju does.

    The containers keep their filesystem under ``root/<charm>/<container>``, so
    the volume is a directory there.
    """
    for name, spec in (octest.merged_charmcraft(charm).get("containers") or {}).items():
        for mount in (spec or {}).get("mounts") or []:
            (root / charm / name / mount["location"].lstrip("/")).mkdir(parents=True, exist_ok=True)
    return state


@pytest.mark.parametrize("charm", ["glance-k8s", "placement-k8s"])
def test_keystone_and_our_service_charms(tmp_path: pathlib.Path, keystone: FakeKeystone, charm: str) -> None:
    service = getattr(octest.load_charm_class(charm), "service_name", charm.removesuffix("-k8s"))
    # the service's manage command (its leader tasks) and the ownership fix of its volumes
    execs = [testing.Exec([f"{service}-manage"]), testing.Exec(["chown"])]
    complete = with_storage_mounts(
        charm, octest.complete_state(charm, tmp_path / charm, execs=execs), tmp_path
    )
    relation = testing.Relation(
        "identity-service", interface="keystone", id=REQUIRER_RELATION_ID, remote_app_name="keystone"
    )
    requirer = dataclasses.replace(
        complete,
        relations=[*(r for r in complete.relations if r.endpoint != "identity-service"), relation],
        secrets=[
            s
            for s in complete.secrets
            if not any(
                r.endpoint == "identity-service" and s.id in r.remote_app_data.values()
                for r in complete.relations
                if isinstance(r, testing.Relation)
            )
        ],
    )
    ctx = octest.charm_context(charm)
    requirer = ctx.run(ctx.on.relation_joined(relation), requirer)
    _, requirer = exchange(ctx, requirer, tmp_path / "keystone", charm)
    request = requirer.get_relation(REQUIRER_RELATION_ID).local_app_data
    assert json.loads(request["service-endpoints"])
    assert requirer.unit_status == testing.ActiveStatus(requirer.unit_status.message), requirer.unit_status
    user = keystone.user(f"svc_{charm.replace('-', '_')}-")
    assert keystone.roles_of(user) >= {"admin", "service"}
    endpoints = json.loads(request["service-endpoints"])
    assert keystone.catalog(endpoints[0]["service_name"])["internal"] == endpoints[0]["internal_url"]
    assert service in endpoints[0]["service_name"]
    conf = "\n".join(v for k, v in octest.pushed_files(requirer, ctx, service).items() if k.endswith(".conf"))
    assert f"password = {user.password}" in conf
