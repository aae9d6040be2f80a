"""identity-credentials: keystone-k8s's provider against our requirer, data passed until both are ready.

Keystone runs for real in ops.testing with an in-memory keystone behind its API
client. Each round runs one side on the other side's latest output: the
requirer's application databag becomes keystone's remote data; keystone's
databag and the credentials secret it granted become the requirer's.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from openstack_charms import testing as octest
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.plan import Workload
from openstack_charms.relations.identity import IdentityCredentialsContext, IdentityCredentialsRequirer
from openstack_charms.relations.wiring import Wire
from openstack_charms.testing.relations import database_fixture
from ops import testing

KEYSTONE_SRC = octest.CHARMS / "keystone-k8s" / "src"
if str(KEYSTONE_SRC) not in sys.path:
    sys.path.insert(0, str(KEYSTONE_SRC))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "unit" / "keystone"))

import keystone_api  # noqa: E402
from fake_keystone import FakeKeystone  # noqa: E402

KEYSTONE_RELATION_ID = 301
REQUIRER_RELATION_ID = 402
KEYSTONE_URL = "http://keystone-k8s.openstack.svc:5000"
META = {
    "name": "exporter",
    "requires": {"identity-credentials": {"interface": "keystone-credentials", "limit": 1}},
}


class ExporterCharm(OpenStackCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    """The smallest consumer of identity-credentials: it asks for the account ``request``."""

    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "exporter"
    request: ClassVar[dict[str, str]] = {}
    seen: ClassVar[list[IdentityCredentialsContext | None]] = []
    own_wiring: ClassVar[dict[str, Wire]] = {
        "identity-credentials": Wire(
            lambda charm, endpoint: IdentityCredentialsRequirer(charm, endpoint, **ExporterCharm.request), ()
        )
    }

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        ExporterCharm.seen.append(ctx.credentials)
        return []


@pytest.fixture
def keystone(monkeypatch: pytest.MonkeyPatch) -> FakeKeystone:
    fake = FakeKeystone()
    monkeypatch.setattr(keystone_api, "KeystoneAPI", fake)
    ExporterCharm.seen = []
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


@dataclasses.dataclass
class Exchange:
    """Both sides of one identity-credentials relation, and the contexts that run them."""

    keystone_ctx: testing.Context[Any]
    keystone: testing.State
    requirer_ctx: testing.Context[Any]
    requirer: testing.State

    def round(self) -> bool:
        """Run keystone on the request, then the requirer on the answer; whether a databag changed."""
        req_rel = self.requirer.get_relation(REQUIRER_RELATION_ID)
        previous = next((r for r in self.keystone.relations if r.id == KEYSTONE_RELATION_ID), None)
        before = (
            dict(previous.local_app_data) if previous else {},
            dict(req_rel.local_app_data),
        )
        ks_rel = testing.Relation(
            "identity-credentials",
            interface="keystone-credentials",
            id=KEYSTONE_RELATION_ID,
            remote_app_name="exporter",
            remote_app_data=dict(req_rel.local_app_data),
            local_app_data=before[0],
        )
        self.keystone = dataclasses.replace(
            self.keystone,
            relations=[*(r for r in self.keystone.relations if r.id != KEYSTONE_RELATION_ID), ks_rel],
        )
        self.keystone = self.keystone_ctx.run(self.keystone_ctx.on.relation_changed(ks_rel), self.keystone)
        answer = dict(self.keystone.get_relation(KEYSTONE_RELATION_ID).local_app_data)
        new_rel = dataclasses.replace(req_rel, remote_app_data=answer)
        known = {s.id for s in self.requirer.secrets}
        granted = [s for s in granted_secrets(self.keystone, KEYSTONE_RELATION_ID) if s.id not in known]
        self.requirer = dataclasses.replace(
            self.requirer,
            relations=[*(r for r in self.requirer.relations if r.id != REQUIRER_RELATION_ID), new_rel],
            secrets=[*self.requirer.secrets, *granted],
        )
        self.requirer = self.requirer_ctx.run(self.requirer_ctx.on.relation_changed(new_rel), self.requirer)
        after = (answer, dict(self.requirer.get_relation(REQUIRER_RELATION_ID).local_app_data))
        return after != before


def start(root: pathlib.Path, **request: str) -> Exchange:
    """The requirer's leader joins the relation and publishes its request."""
    ExporterCharm.request = request
    requirer_ctx = testing.Context(ExporterCharm, meta=META)
    relation = testing.Relation(
        "identity-credentials",
        interface="keystone-credentials",
        id=REQUIRER_RELATION_ID,
        remote_app_name="keystone",
    )
    requirer = requirer_ctx.run(
        requirer_ctx.on.relation_joined(relation), testing.State(leader=True, relations=[relation])
    )
    return Exchange(octest.charm_context("keystone-k8s"), keystone_state(root), requirer_ctx, requirer)


def settle(exchange: Exchange, rounds: int = 4) -> Exchange:
    for _ in range(rounds):
        if not exchange.round():
            return exchange
    raise AssertionError(f"still changing after {rounds} rounds: {exchange.requirer.unit_status}")


def keystone_snapshot(fake: FakeKeystone) -> tuple[object, ...]:
    """Everything the in-memory keystone holds."""
    return (
        dict(fake.domains),
        dict(fake.projects),
        dict(fake.roles),
        {k: dataclasses.astuple(u) for k, u in fake.users.items()},
        set(fake.grants),
    )


@pytest.mark.parametrize(
    ("request_", "project", "domain"),
    [({}, "services", "service_domain"), ({"project": "monitoring", "domain": "ops"}, "monitoring", "ops")],
)
def test_keystone_creates_the_account_and_the_requirer_gets_it(
    tmp_path: pathlib.Path, keystone: FakeKeystone, request_: dict[str, str], project: str, domain: str
) -> None:
    exchange = settle(start(tmp_path, **request_))
    assert exchange.keystone.unit_status == testing.ActiveStatus(f"{KEYSTONE_URL}/v3")
    assert exchange.requirer.unit_status == testing.ActiveStatus()
    context = ExporterCharm.seen[-1]
    assert context is not None
    domain_id = keystone.domains[domain]
    user = keystone.users[("exporter", domain_id)]
    project_id = keystone.projects[(project, domain_id)]
    assert context == IdentityCredentialsContext(
        username="exporter",
        password=user.password,
        internal_auth_url=f"{KEYSTONE_URL}/v3",
        public_auth_url=f"{KEYSTONE_URL}/v3",
        region="RegionOne",
        project_name=project,
        project_id=project_id,
        user_domain_name=domain,
        user_domain_id=domain_id,
        project_domain_name=domain,
        project_domain_id=domain_id,
        admin_role="admin",
        api_version="3",
    )
    assert keystone.roles_of(user) == {"admin"}
    assert (keystone.roles["admin"], user.id, project_id) in keystone.grants
    # the password reached the requirer only through the secret, never the databag
    relation = exchange.requirer.get_relation(REQUIRER_RELATION_ID)
    assert isinstance(relation, testing.Relation)
    answer = relation.remote_app_data
    assert user.password not in answer.values()
    assert answer["credentials"].startswith("secret:")


def test_a_second_round_changes_nothing(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    exchange = settle(start(tmp_path))
    ready = ExporterCharm.seen[-1]
    assert ready is not None
    keystone_before, calls = keystone_snapshot(keystone), len(keystone.calls)
    states = (octest.observable(exchange.keystone), octest.observable(exchange.requirer))
    assert not exchange.round(), "a databag changed on the second round"
    assert keystone_snapshot(keystone) == keystone_before
    assert keystone.calls[calls:] == [], "keystone's API was called again for an answered request"
    assert (octest.observable(exchange.keystone), octest.observable(exchange.requirer)) == states
    assert ExporterCharm.seen[-1] == ready


@pytest.mark.parametrize("username", ["admin", "svc_glance", "svc_exporter-abc123"])
def test_a_reserved_user_name_is_refused_and_nothing_is_created(
    tmp_path: pathlib.Path, keystone: FakeKeystone, username: str
) -> None:
    exchange = start(tmp_path, username=username)
    assert exchange.requirer.get_relation(REQUIRER_RELATION_ID).local_app_data == {"username": username}
    settle(exchange)
    assert set(keystone.users) <= {("admin", "default")}, "no user but the bootstrap admin"
    assert not [c for c in keystone.calls if c.startswith("ensure_")]
    assert exchange.keystone.get_relation(KEYSTONE_RELATION_ID).local_app_data == {}
    assert not [s for s in exchange.keystone.secrets if s.label and s.label.startswith("credentials_")]
    assert exchange.keystone.unit_status == testing.ActiveStatus(f"{KEYSTONE_URL}/v3")
    assert [
        log.message
        for log in exchange.keystone_ctx.juju_log
        if f"may not ask for user {username}" in log.message
    ], "keystone says why it does not answer"
    assert exchange.requirer.unit_status == testing.WaitingStatus(
        "waiting for identity-credentials (credentials, internal-endpoint, public-endpoint)"
    )
    assert ExporterCharm.seen == [], "the requirer never configured its workload"
