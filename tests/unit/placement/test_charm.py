"""placement-k8s: given a state, after an event, what an operator and nova see."""

from __future__ import annotations

import configparser
import dataclasses
import json
import pathlib
from typing import Any

import ops
import pytest
from openstack_charms.testing import (
    RelationFixture,
    assert_blocked_without_each_mandatory,
    assert_idempotent,
    assert_order_invariant,
    charm_context,
    container,
    mandatory_endpoints,
    pushed_files,
    state_with,
)
from openstack_charms.testing.identity import (
    KEYSTONE_INTERNAL_URL,
    KEYSTONE_PUBLIC_URL,
    identity_service_fixture,
)
from openstack_charms.testing.relations import (
    MYSQL_ENDPOINT,
    ca_fixture,
    certificates_fixture,
    database_fixture,
    ingress_fixture,
)
from ops import testing

CHARM = "placement-k8s"
CONF = "/etc/placement/placement.conf"
UWSGI = "/etc/placement/placement-api-uwsgi.ini"
DB_SYNC = ["placement-manage", "db", "sync"]
INTERNAL_URL = "http://10.20.0.5/openstack-placement"


@pytest.fixture
def ctx() -> testing.Context[Any]:
    return charm_context(CHARM)


def relations() -> list[RelationFixture]:
    return [
        database_fixture(database="placement"),
        identity_service_fixture(requirer_app="placement"),
        ingress_fixture("ingress-internal", INTERNAL_URL),
    ]


def base(
    root: pathlib.Path | None = None,
    *,
    leader: bool = True,
    peer_data: dict[str, str] | None = None,
    **kwargs: Any,
) -> testing.State:
    return testing.State(
        leader=leader,
        relations=[testing.PeerRelation("peers", local_app_data=peer_data or {})],
        containers=[container("placement", root, execs={testing.Exec(DB_SYNC)})],
        **kwargs,
    )


def complete(
    root: pathlib.Path | None = None, *, fixtures: list[RelationFixture] | None = None, **kwargs: Any
) -> testing.State:
    return state_with(relations() if fixtures is None else fixtures, base=base(root, **kwargs))


def remote_data(fixture: RelationFixture) -> dict[str, str]:
    assert isinstance(fixture.relation, testing.Relation)
    return dict(fixture.relation.remote_app_data)


def parse(text: str) -> configparser.ConfigParser:
    # [DEFAULT] is an ordinary section to oslo.config: keep its keys out of the others
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
    parser.read_string(text)
    return parser


def db_syncs(ctx: testing.Context[Any]) -> list[list[str]]:
    return [list(e.command) for e in ctx.exec_history.get("placement", []) if list(e.command) == DB_SYNC]


# -- active, and what it wrote -------------------------------------------------


def test_active_with_its_mandatory_relations(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    assert out.unit_status == testing.ActiveStatus()
    assert out.app_status == testing.ActiveStatus()


def test_placement_conf(ctx: testing.Context[Any]) -> None:
    fixtures = relations()
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=fixtures))
    conf = parse(pushed_files(out, ctx, "placement")[CONF])
    user = f"relation-{fixtures[0].relation.id}"
    expected = f"mysql+pymysql://{user}:db-password@{MYSQL_ENDPOINT}/placement"
    assert conf["placement_database"]["connection"] == expected
    assert not conf.has_section("database"), "placement reads [placement_database] only"
    assert conf["api"]["auth_strategy"] == "keystone"
    auth = conf["keystone_authtoken"]
    assert auth["auth_url"] == f"{KEYSTONE_INTERNAL_URL}/v3"
    assert auth["www_authenticate_uri"] == f"{KEYSTONE_PUBLIC_URL}/v3"
    assert auth["username"].startswith("svc_placement-")
    assert auth["password"] == "svc-password"
    assert auth["project_name"] == "services"
    assert auth["service_type"] == "placement"
    assert conf["DEFAULT"]["log_config_append"] == "/etc/placement/logging.conf"
    assert dict(conf["placement"]) == {
        "randomize_allocation_candidates": "false",
        "max_allocation_candidates": "-1",
        "allocation_candidates_generation_strategy": "depth-first",
        "allocation_conflict_retry_count": "10",
    }


def test_placement_options_follow_config(ctx: testing.Context[Any]) -> None:
    config = {
        "randomize-allocation-candidates": True,
        "max-allocation-candidates": 100000,
        "allocation-candidates-generation-strategy": "breadth-first",
        "allocation-conflict-retry-count": 20,
        "workers": 4,
        "debug": True,
    }
    out = ctx.run(ctx.on.config_changed(), complete(config=config))
    files = pushed_files(out, ctx, "placement")
    conf = parse(files[CONF])
    assert conf["placement"]["randomize_allocation_candidates"] == "true"
    assert conf["placement"]["max_allocation_candidates"] == "100000"
    assert conf["placement"]["allocation_candidates_generation_strategy"] == "breadth-first"
    assert conf["placement"]["allocation_conflict_retry_count"] == "20"
    assert conf["DEFAULT"]["debug"] == "true"
    assert parse(files[UWSGI])["uwsgi"]["processes"] == "4"


def test_config_file_is_not_world_readable(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    ctx.run(ctx.on.config_changed(), complete(tmp_path))
    mode = (tmp_path / "placement" / CONF.lstrip("/")).stat().st_mode & 0o777
    assert mode == 0o640


def test_uwsgi_serves_the_placement_module(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    uwsgi = parse(pushed_files(out, ctx, "placement")[UWSGI])["uwsgi"]
    assert uwsgi["module"] == "placement.wsgi.api:application"
    assert uwsgi["http-socket"] == "[::]:8778"
    assert uwsgi["processes"] == "2"


def test_pebble_layer(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    plan = out.get_container("placement").plan
    service = plan.services["placement-api"]
    assert service.command == f"uwsgi --ini {UWSGI}"
    assert service.user == "placement"
    assert service.group == "placement"
    assert service.startup == "enabled"
    check = plan.checks["placement-api-up"]
    assert check.http == {"url": "http://localhost:8778/"}
    assert service.on_check_failure == {"placement-api-up": "restart"}
    assert out.get_container("placement").service_statuses["placement-api"] == ops.pebble.ServiceStatus.ACTIVE


def test_catalog_request_uses_the_ingress_url(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(config={"region": "RegionTwo"}))
    data = out.get_relations("identity-service")[0].local_app_data
    assert data["region"] == "RegionTwo"
    (endpoint,) = json.loads(data["service-endpoints"])
    assert endpoint["service_name"] == "placement"
    assert endpoint["type"] == "placement"
    assert endpoint["description"] == "OpenStack Placement"
    assert endpoint["internal_url"] == INTERNAL_URL
    assert endpoint["public_url"] == INTERNAL_URL
    assert endpoint["admin_url"] == INTERNAL_URL


def test_public_ingress_becomes_the_public_url(ctx: testing.Context[Any]) -> None:
    public = ingress_fixture("ingress-public", "https://cloud.example.com/openstack-placement")
    out = ctx.run(ctx.on.config_changed(), state_with([*relations(), public], base=base()))
    (endpoint,) = json.loads(out.get_relations("identity-service")[0].local_app_data["service-endpoints"])
    assert endpoint["public_url"] == "https://cloud.example.com/openstack-placement"
    assert endpoint["internal_url"] == INTERNAL_URL


def test_tls_serves_https_and_trusts_the_received_ca(ctx: testing.Context[Any]) -> None:
    tls = [certificates_fixture(app="placement-k8s", model="openstack"), ca_fixture()]
    state = state_with([*relations(), *tls], base=base(model=testing.Model(name="openstack")))
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.ActiveStatus()
    files = pushed_files(out, ctx, "placement")
    uwsgi = parse(files[UWSGI])["uwsgi"]
    assert "http-socket" not in uwsgi
    assert uwsgi["https-socket"] == "[::]:8778,/etc/placement/tls/cert.pem,/etc/placement/tls/key.pem"
    assert files["/etc/placement/tls/cert.pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in files["/etc/placement/tls/key.pem"]
    assert parse(files[CONF])["keystone_authtoken"]["cafile"] == "/etc/placement/ca-bundle.pem"
    assert files["/etc/placement/ca-bundle.pem"].startswith("-----BEGIN CERTIFICATE-----")
    check = out.get_container("placement").plan.checks["placement-api-up"]
    # Pebble would verify https://localhost against the system CAs and fail: curl checks the certificate
    assert (
        check.http is None
        and check.exec is not None
        and check.exec["command"]
        == (
            "curl --fail --silent --show-error --output /dev/null --max-time 3"
            " --cacert /etc/placement/tls/ca.pem --resolve placement-k8s.openstack.svc:8778:127.0.0.1 https://placement-k8s.openstack.svc:8778/"
        )
    )


# -- db sync on the leader, once ---------------------------------------------


def test_db_sync_runs_once_on_the_leader(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    assert db_syncs(ctx) == [DB_SYNC]
    (sync,) = [e for e in ctx.exec_history["placement"] if list(e.command) == DB_SYNC]
    assert sync.user == "placement"
    ctx.run(ctx.on.update_status(), out)
    assert db_syncs(ctx) == [DB_SYNC], "a second event must not sync again"


def test_non_leader_waits_for_the_leaders_db_sync(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(leader=False))
    assert out.unit_status == testing.WaitingStatus("waiting for the leader to run placement-manage db")
    assert db_syncs(ctx) == []
    assert not out.get_container("placement").service_statuses


def test_non_leader_follows_once_the_leader_synced(ctx: testing.Context[Any]) -> None:
    fixtures = relations()
    leader = ctx.run(ctx.on.config_changed(), complete(fixtures=fixtures))
    peer_data = dict(leader.get_relations("peers")[0].local_app_data)
    follower = charm_context(CHARM)
    out = follower.run(
        follower.on.config_changed(), complete(fixtures=fixtures, leader=False, peer_data=peer_data)
    )
    assert out.unit_status == testing.ActiveStatus()
    assert db_syncs(follower) == []


def test_failed_db_sync_is_waiting_and_retried(ctx: testing.Context[Any]) -> None:
    failing = testing.Exec(DB_SYNC, return_code=1, stderr="OperationalError: (2003) cannot connect")
    state = complete()
    state = dataclasses.replace(state, containers=[container("placement", execs={failing})])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("placement-manage db failed (exit code 1); will retry")
    assert not out.get_container("placement").service_statuses


# -- what is missing ------------------------------------------------------------


def test_blocked_names_each_missing_mandatory_relation(ctx: testing.Context[Any]) -> None:
    assert mandatory_endpoints(CHARM) == ["database", "identity-service", "ingress-internal"]
    assert_blocked_without_each_mandatory(ctx, relations(), mandatory_endpoints(CHARM), base=base())


def test_blocked_names_all_missing_relations(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.install(), base())
    assert out.unit_status == testing.BlockedStatus(
        "missing relations: database, ingress-internal, identity-service"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"max-allocation-candidates": 0},
            "config option 'max-allocation-candidates' is 0, must be -1 (no limit) or at least 1",
        ),
        (
            {"allocation-candidates-generation-strategy": "random"},
            "config option 'allocation-candidates-generation-strategy' is 'random', "
            "must be one of depth-first, breadth-first",
        ),
        (
            {"allocation-conflict-retry-count": -1},
            "config option 'allocation-conflict-retry-count' is -1, must be between 0 and 100",
        ),
        ({"workers": 0}, "config option 'workers' is 0, must be between 1 and 64"),
        ({"region": " "}, "config option 'region' must not be empty"),
    ],
)
def test_invalid_config_is_blocked_naming_the_option(
    ctx: testing.Context[Any], config: dict[str, Any], message: str
) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(config=config))
    assert out.unit_status == testing.BlockedStatus(message)
    assert db_syncs(ctx) == []


def test_malformed_identity_data_is_waiting_not_a_crash(ctx: testing.Context[Any]) -> None:
    identity = identity_service_fixture(requirer_app="placement")
    broken = dataclasses.replace(
        identity.relation,
        remote_app_data={**remote_data(identity), "service-credentials": "not-a-secret-id"},
    )
    fixtures = [f for f in relations() if f.relation.endpoint != "identity-service"]
    out = ctx.run(ctx.on.config_changed(), state_with([*fixtures, RelationFixture(broken)], base=base()))
    assert isinstance(out.unit_status, ops.WaitingStatus)
    assert "identity-service" in out.unit_status.message


def test_malformed_database_data_is_waiting_not_a_crash(ctx: testing.Context[Any]) -> None:
    database = database_fixture(database="placement")
    broken = dataclasses.replace(
        database.relation,
        remote_app_data={**remote_data(database), "endpoints": "mysql-primary:not-a-port"},
    )
    fixtures = [f for f in relations() if f.relation.endpoint != "database"]
    out = ctx.run(
        ctx.on.config_changed(),
        state_with([*fixtures, RelationFixture(broken, database.secrets)], base=base()),
    )
    assert isinstance(out.unit_status, ops.WaitingStatus)
    assert "database" in out.unit_status.message


def test_container_not_up_yet_is_waiting(ctx: testing.Context[Any]) -> None:
    state = dataclasses.replace(complete(), containers=[container("placement", can_connect=False)])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for container placement (Pebble)")


# -- generic properties -----------------------------------------------------------


def test_the_same_event_twice_changes_nothing(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    once = assert_idempotent(ctx, complete(tmp_path), ctx.on.config_changed())
    assert once.unit_status == testing.ActiveStatus()


def test_relation_order_does_not_matter(ctx: testing.Context[Any]) -> None:
    out = assert_order_invariant(ctx, relations(), base=base())
    assert out.unit_status == testing.ActiveStatus()


# -- the placement relation (nova) ------------------------------------------------


def nova() -> testing.Relation:
    return testing.Relation("placement", interface="placement", remote_app_name="nova")


def test_placement_relation_says_ready_once_serving(ctx: testing.Context[Any]) -> None:
    state = complete()
    state = dataclasses.replace(state, relations=[*state.relations, nova()])
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.get_relations("placement")[0].local_app_data == {"ready": "true"}


def test_placement_relation_says_not_ready_without_a_database(ctx: testing.Context[Any]) -> None:
    fixtures = [f for f in relations() if f.relation.endpoint != "database"]
    with_nova = dataclasses.replace(base(), relations=[*base().relations, nova()])
    out = ctx.run(ctx.on.config_changed(), state_with(fixtures, base=with_nova))
    assert out.unit_status == testing.BlockedStatus("missing relation: database")
    assert out.get_relations("placement")[0].local_app_data == {"ready": "false"}


def test_only_the_leader_writes_the_placement_relation(ctx: testing.Context[Any]) -> None:
    fixtures = relations()
    leader = ctx.run(ctx.on.config_changed(), complete(fixtures=fixtures))
    peer_data = dict(leader.get_relations("peers")[0].local_app_data)
    state = complete(fixtures=fixtures, leader=False, peer_data=peer_data)
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(state, relations=[*state.relations, nova()]))
    assert out.unit_status == testing.ActiveStatus()
    assert out.get_relations("placement")[0].local_app_data == {}
