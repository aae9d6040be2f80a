"""Our DatabaseRequirer against the real data-platform provider library (dpcharmlibs).

A provider charm built on ``dpcharmlibs.interfaces.ResourceProviderEventHandler``
answers the way mysql-k8s does: a user per relation, credentials in a Juju
secret granted to the relation, endpoints in the databag. Each side runs in
ops.testing and the other side's output databag (and secrets) is fed back in,
until our handler is ready.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import ops
import pytest
from dpcharmlibs.interfaces import (
    RequirerCommonModel,
    ResourceProviderEventHandler,
    ResourceProviderModel,
    ResourceRequestedEvent,
)
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.plan import Workload
from openstack_charms.testing.relations import database_fixture
from ops import testing

PRIMARY = "mysql-k8s-primary.openstack.svc.cluster.local:3306"
REPLICAS = "mysql-k8s-replicas.openstack.svc.cluster.local:3306"

REQUIRER_META = {
    "name": "glance",
    "requires": {
        "database": {"interface": "mysql_client", "limit": 1},
        "api-database": {"interface": "mysql_client", "limit": 1},
    },
}
PROVIDER_META = {"name": "mysql", "provides": {"database": {"interface": "mysql_client"}}}


class RequirerCharm(OpenStackCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "glance"
    databases: ClassVar[dict[str, str]] = {"database": "glance", "api-database": "glance_api"}

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        return []


class MySQLProviderCharm(ops.CharmBase):
    """What mysql-k8s does on a database request, through the real provider library."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.provider = ResourceProviderEventHandler(self, "database", RequirerCommonModel)
        framework.observe(self.provider.on.resource_requested, self._on_resource_requested)

    def _on_resource_requested(self, event: ResourceRequestedEvent[Any]) -> None:
        request = event.request
        response = ResourceProviderModel(
            salt=request.salt,
            request_id=request.request_id,
            resource=request.resource,
            username=f"relation-{event.relation.id}",
            password=f"generated-password-{event.relation.id}",
            endpoints=PRIMARY,
            read_only_endpoints=REPLICAS,
            version="8.0.41-0ubuntu0.22.04.1",
        )
        self.provider.set_response(event.relation.id, response)


def requirer_publishes(relation: testing.Relation, *, leader: bool = True) -> testing.State:
    context = testing.Context(RequirerCharm, meta=REQUIRER_META, app_name="glance")
    other = testing.Relation("api-database" if relation.endpoint == "database" else "database")
    state = testing.State(leader=leader, relations={relation, other})
    return context.run(context.on.relation_created(relation), state)


def provider_answers(
    request: dict[str, str], relation_id: int
) -> tuple[dict[str, str], list[testing.Secret]]:
    """Run the provider on the requirer's app databag; return its app databag and secrets."""
    context = testing.Context(MySQLProviderCharm, meta=PROVIDER_META, app_name="mysql")
    relation = testing.Relation("database", id=relation_id, remote_app_name="glance", remote_app_data=request)
    out = context.run(context.on.relation_changed(relation), testing.State(leader=True, relations={relation}))
    return dict(out.get_relation(relation_id).local_app_data), list(out.secrets)


def as_granted(secrets: list[testing.Secret]) -> list[testing.Secret]:
    """The provider's secrets as the requirer sees them: owned by another app, granted."""
    return [testing.Secret(s.latest_content, id=s.id, owner=None) for s in secrets]


def exchange(endpoint: str, database: str) -> tuple[testing.State, Any, dict[str, str], dict[str, str]]:
    relation = testing.Relation(endpoint, remote_app_name="mysql")
    published = requirer_publishes(relation)
    request = dict(published.get_relation(relation.id).local_app_data)
    answer, secrets = provider_answers(request, relation.id)
    answered = dataclasses.replace(published.get_relation(relation.id), remote_app_data=answer)  # type: ignore[arg-type]
    state = dataclasses.replace(
        published,
        relations={*(r for r in published.relations if r.id != relation.id), answered},
        secrets=as_granted(secrets),
    )
    context = testing.Context(RequirerCharm, meta=REQUIRER_META, app_name="glance")
    with context(context.on.relation_changed(answered), state) as manager:
        out = manager.run()
        handler = manager.charm.handlers[endpoint]
        return out, handler.context, request, answer


def test_provider_library_reads_our_request_as_a_v0_database_request() -> None:
    _, _, request, answer = exchange("database", "glance")
    assert request["database"] == "glance"
    # the provider answered with the credentials in a secret, not in the databag
    assert answer["secret-user"].startswith("secret:")
    assert "password" not in answer and "username" not in answer
    assert answer["endpoints"] == PRIMARY
    assert "request-id" not in answer and "requests" not in answer, "a v0 answer, not a v1 one"


def test_our_handler_is_ready_with_the_providers_answer() -> None:
    out, context, _, _ = exchange("database", "glance")
    assert context is not None
    relation_id = next(r.id for r in out.relations if r.endpoint == "database")
    user, password = f"relation-{relation_id}", f"generated-password-{relation_id}"
    assert context.connection == f"mysql+pymysql://{user}:{password}@{PRIMARY}/glance"
    assert (context.host, context.port, context.name) == (PRIMARY.split(":")[0], 3306, "glance")
    assert (context.username, context.password) == (user, password)


@pytest.mark.parametrize(("endpoint", "database"), [("database", "glance"), ("api-database", "glance_api")])
def test_each_endpoint_gets_its_own_database(endpoint: str, database: str) -> None:
    _, context, request, _ = exchange(endpoint, database)
    assert request["database"] == database
    assert context is not None and context.connection.endswith(f"/{database}")


def test_non_leader_request_is_empty_and_the_provider_does_nothing() -> None:
    relation = testing.Relation("database", remote_app_name="mysql")
    published = requirer_publishes(relation, leader=False)
    request = dict(published.get_relation(relation.id).local_app_data)
    assert request == {}
    answer, secrets = provider_answers(request, relation.id)
    assert "secret-user" not in answer and secrets == []


def test_our_fixture_has_the_shape_of_the_providers_answer() -> None:
    _, _, _, answer = exchange("database", "glance")
    fixture = database_fixture(database="glance").relation
    assert isinstance(fixture, testing.Relation)
    assert set(fixture.remote_app_data) == set(answer)
    [secret] = database_fixture(database="glance").secrets
    assert set(secret.tracked_content) == {"username", "password"}
