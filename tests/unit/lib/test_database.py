"""DatabaseRequirer: the mysql_client request we publish and the answer we read."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.plan import Workload
from openstack_charms.relations.database import DatabaseContext, DatabaseRequirer, parse_endpoint
from openstack_charms.relations.wiring import Wire
from openstack_charms.testing import state_with
from openstack_charms.testing.relations import MYSQL_ENDPOINT, database_fixture
from ops import testing

META = {
    "name": "demo",
    "requires": {
        "database": {"interface": "mysql_client", "limit": 1},
        "api-database": {"interface": "mysql_client", "limit": 1, "optional": True},
    },
}


class DemoCharm(OpenStackCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "demo"
    databases: ClassVar[dict[str, str]] = {"api-database": "demo_api"}
    seen: ClassVar[list[ServiceContext[ServiceConfig]]] = []

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        DemoCharm.seen.append(ctx)
        return []


def ctx() -> testing.Context[DemoCharm]:
    return testing.Context(DemoCharm, meta=META)


def contexts(state: testing.State) -> tuple[testing.State, DatabaseContext | None, DatabaseContext | None]:
    context = ctx()
    with context(context.on.config_changed(), state) as manager:
        out = manager.run()
        handlers = manager.charm.handlers
        return out, handlers["database"].context, handlers["api-database"].context


def remote(fixture_relation: testing.RelationBase, **changes: Any) -> testing.Relation:
    assert isinstance(fixture_relation, testing.Relation)
    data = {k: v for k, v in {**fixture_relation.remote_app_data, **changes}.items() if v is not None}
    return dataclasses.replace(fixture_relation, remote_app_data=data)


def test_leader_publishes_the_v0_request_in_the_app_databag() -> None:
    relation = testing.Relation("database", remote_app_name="mysql")
    out = ctx().run(ctx().on.relation_created(relation), testing.State(leader=True, relations={relation}))
    data = out.get_relation(relation.id).local_app_data
    assert data == {
        "database": "demo",
        "requested-secrets": json.dumps(["username", "password", "tls", "tls-ca", "uris", "read-only-uris"]),
    }
    assert out.get_relation(relation.id).local_unit_data == testing.Relation("x").local_unit_data


def test_extra_user_roles_are_requested_when_asked() -> None:
    class RolesCharm(DemoCharm):
        own_wiring: ClassVar[dict[str, Wire]] = {
            "database": Wire(
                lambda charm, endpoint: DatabaseRequirer(
                    charm, endpoint, database_name="demo", extra_user_roles=["admin"]
                ),
                (),
            )
        }

    relation = testing.Relation("database")
    context = testing.Context(RolesCharm, meta=META)
    out = context.run(context.on.relation_created(relation), testing.State(leader=True, relations={relation}))
    assert out.get_relation(relation.id).local_app_data["extra-user-roles"] == "admin"


def test_non_leader_publishes_nothing_in_the_app_databag() -> None:
    fixture = database_fixture(database="demo")
    out = ctx().run(ctx().on.config_changed(), state_with([fixture], base=testing.State(leader=False)))
    assert out.get_relation(fixture.relation.id).local_app_data == {}
    assert out.unit_status == testing.ActiveStatus()


def test_ready_with_mysql_k8s_answer_gives_the_sqlalchemy_url() -> None:
    fixture = database_fixture(database="demo")
    out, database, api_database = contexts(state_with([fixture], base=testing.State(leader=True)))
    assert out.unit_status == testing.ActiveStatus()
    assert database == DatabaseContext(
        connection=f"mysql+pymysql://relation-{fixture.relation.id}:db-password@{MYSQL_ENDPOINT}/demo",
        host=MYSQL_ENDPOINT.split(":")[0],
        port=3306,
        name="demo",
        username=f"relation-{fixture.relation.id}",
        password="db-password",
    )
    assert api_database is None


def test_two_databases_each_get_their_own_request_and_credentials() -> None:
    main = database_fixture("database", "demo", password="pw-main")
    api = database_fixture("api-database", "demo_api", password="pw-api")
    out, database, api_database = contexts(state_with([main, api], base=testing.State(leader=True)))
    assert out.get_relation(main.relation.id).local_app_data["database"] == "demo"
    assert out.get_relation(api.relation.id).local_app_data["database"] == "demo_api"
    assert database is not None and database.connection.endswith("/demo")
    assert database.password == "pw-main"
    assert api_database is not None and api_database.connection.endswith("/demo_api")
    assert api_database.password == "pw-api"
    # both reach the context by endpoint; ``database`` is the ``database`` endpoint's
    ctx_seen = DemoCharm.seen[-1]
    assert ctx_seen.databases == {"database": database, "api-database": api_database}
    assert ctx_seen.database == database


@pytest.mark.parametrize(
    ("changes", "drop_secret", "message"),
    [
        ({"endpoints": None}, False, "waiting for database (endpoints)"),
        ({"endpoints": ""}, False, "waiting for database (endpoints)"),
        ({"secret-user": None}, True, "waiting for database (secret-user)"),
        ({}, True, "waiting for database (access to the secret-user secret)"),
    ],
)
def test_waiting_names_the_missing_field(
    changes: dict[str, str | None], drop_secret: bool, message: str
) -> None:
    fixture = database_fixture(database="demo")
    secrets = [] if drop_secret else list(fixture.secrets)
    state = testing.State(leader=True, relations={remote(fixture.relation, **changes)}, secrets=secrets)
    out = ctx().run(ctx().on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus(message)


def test_secret_without_password_names_it() -> None:
    fixture = database_fixture(database="demo")
    secret = dataclasses.replace(
        fixture.secrets[0], tracked_content={"username": "u"}, latest_content={"username": "u"}
    )
    state = testing.State(leader=True, relations={fixture.relation}, secrets={secret})
    out = ctx().run(ctx().on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus(
        "waiting for database (password in the secret-user secret)"
    )


def test_plaintext_credentials_of_old_providers_are_accepted() -> None:
    fixture = database_fixture(database="demo")
    relation = remote(fixture.relation, **{"secret-user": None, "username": "old", "password": "p@ss/w$rd"})
    _, database, _ = contexts(testing.State(leader=True, relations={relation}))
    assert database is not None
    assert database.connection == f"mysql+pymysql://old:p%40ss%2Fw%24rd@{MYSQL_ENDPOINT}/demo"
    assert database.password == "p@ss/w$rd"


@pytest.mark.parametrize("endpoints", ["mysql:notaport", "mysql:0", "[::1", ":3306"])
def test_malformed_endpoints_are_waiting_not_a_crash(endpoints: str) -> None:
    fixture = database_fixture(database="demo")
    state = state_with(
        [], base=testing.State(leader=True, relations={remote(fixture.relation, endpoints=endpoints)})
    )
    state = dataclasses.replace(state, secrets=list(fixture.secrets))
    out = ctx().run(ctx().on.config_changed(), state)
    assert isinstance(out.unit_status, testing.WaitingStatus)
    assert out.unit_status.message.startswith("waiting for database (usable data (")


def test_first_endpoint_is_the_primary_and_ipv6_is_bracketed() -> None:
    fixture = database_fixture(database="demo")
    relation = remote(fixture.relation, endpoints="[fd00::5]:3307,10.0.0.9:3306")
    _, database, _ = contexts(testing.State(leader=True, relations={relation}, secrets=fixture.secrets))
    assert database is not None
    assert (database.host, database.port) == ("fd00::5", 3307)
    assert "@[fd00::5]:3307/demo" in database.connection


def test_missing_mandatory_database_blocks_naming_it() -> None:
    out = ctx().run(ctx().on.config_changed(), testing.State(leader=True))
    assert out.unit_status == testing.BlockedStatus("missing relation: database")


def test_same_event_twice_changes_nothing() -> None:
    state = state_with([database_fixture(database="demo")], base=testing.State(leader=True))
    once = ctx().run(ctx().on.config_changed(), state)
    twice = ctx().run(ctx().on.config_changed(), once)
    assert [r.local_app_data for r in twice.relations] == [r.local_app_data for r in once.relations]
    assert twice.unit_status == once.unit_status == testing.ActiveStatus()


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [("db:3306", ("db", 3306)), ("db", ("db", 3306)), ("[::1]:6446", ("::1", 6446)), ("::1", ("::1", 3306))],
)
def test_parse_endpoint(endpoint: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(endpoint) == expected


def test_rotated_password_is_picked_up_on_secret_changed() -> None:
    fixture = database_fixture(database="demo", password="old")
    rotated = dataclasses.replace(fixture.secrets[0], latest_content={"username": "u", "password": "new"})
    state = testing.State(leader=True, relations={fixture.relation}, secrets={rotated})
    context = ctx()
    with context(context.on.config_changed(), state) as manager:
        manager.run()
        database = manager.charm.handlers["database"].context
        assert database is not None
        assert database.password == "old"
    with context(context.on.secret_changed(rotated), state) as manager:
        manager.run()
        database = manager.charm.handlers["database"].context
        assert database is not None
        assert database.password == "new"
