"""Our AMQPRequirer against a provider that speaks rabbitmq-k8s's ``rabbitmq`` interface.

No PyPI library exists for this interface, so the provider side is written
here, minimal, from rabbitmq-k8s's own charm library
(``lib/charms/rabbitmq_k8s/v0/rabbitmq.py``, class ``RabbitMQProvides``) and
its charm (``src/charm.py``, ``_ensure_relation_credentials`` / ``get_hostname``):

- it reads ``username`` and ``vhost`` from the requirer's application databag
  (and ``external_connectivity`` as JSON, default false), and ignores the
  relation until both are there;
- its leader then creates the user and vhost and writes ``password`` and
  ``hostname`` (``<app>-endpoints.<model>.svc.cluster.local``, or the
  load-balancer address when external connectivity was asked for) in its own
  application databag.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import ops
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.plan import Workload
from openstack_charms.relations.amqp import AMQPRequirer
from openstack_charms.relations.wiring import Wire
from openstack_charms.testing.relations import amqp_fixture
from ops import testing

REQUIRER_META = {"name": "glance", "requires": {"amqp": {"interface": "rabbitmq", "limit": 1}}}
PROVIDER_META = {"name": "rabbitmq", "provides": {"amqp": {"interface": "rabbitmq"}}}
MODEL = testing.Model(name="openstack")
LOAD_BALANCER = "10.30.0.5"


class RequirerCharm(OpenStackCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "glance"

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        return []


class ExternalRequirerCharm(RequirerCharm):
    """Asks for the broker's address outside the cluster."""

    own_wiring: ClassVar[dict[str, Wire]] = {
        "amqp": Wire(
            lambda charm, endpoint: AMQPRequirer(
                charm, endpoint, username="glance", vhost="openstack", external_connectivity=True
            ),
            (),
        )
    }


class RabbitMQProviderCharm(ops.CharmBase):
    """The provider behaviour of rabbitmq-k8s, reduced to what goes over the relation."""

    #: the broker's user table, kept across runs like rabbitmq's own
    users: dict[str, str] = {}

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.amqp_relation_changed, self._on_changed)

    def _on_changed(self, event: ops.RelationChangedEvent) -> None:
        assert event.app is not None
        request = event.relation.data[event.app]
        username, vhost = request.get("username"), request.get("vhost")
        if not (username and vhost) or not self.unit.is_leader():
            return
        external = json.loads(request.get("external_connectivity") or "false")
        data = event.relation.data[self.app]
        if not data.get("password"):
            password = self.users.setdefault(f"{vhost}/{username}", f"pw-for-{username}")
            data["password"] = password
        default = f"{self.app.name}-endpoints.{self.model.name}.svc.cluster.local"
        data["hostname"] = LOAD_BALANCER if external else default


def requirer_run(
    relation: testing.Relation, event: str, *, leader: bool = True, charm: type[RequirerCharm] = RequirerCharm
) -> tuple[testing.State, Any]:
    context = testing.Context(charm, meta=REQUIRER_META, app_name="glance")
    state = testing.State(leader=leader, relations={relation}, model=MODEL)
    with context(getattr(context.on, f"relation_{event}")(relation), state) as manager:
        out = manager.run()
        return out, manager.charm.handlers["amqp"].context


def provider_run(request: dict[str, str], relation_id: int) -> dict[str, str]:
    context = testing.Context(RabbitMQProviderCharm, meta=PROVIDER_META, app_name="rabbitmq")
    relation = testing.Relation(
        "amqp", id=relation_id, remote_app_name="glance", remote_app_data=request, remote_units_data={0: {}}
    )
    state = testing.State(leader=True, relations={relation}, model=MODEL)
    out = context.run(context.on.relation_changed(relation, remote_unit=0), state)
    return dict(out.get_relation(relation_id).local_app_data)


def test_round_trip_reaches_a_transport_url() -> None:
    relation = testing.Relation("amqp", remote_app_name="rabbitmq")
    joined, context = requirer_run(relation, "joined")
    assert context is None
    request = dict(joined.get_relation(relation.id).local_app_data)
    answer = provider_run(request, relation.id)
    answered = dataclasses.replace(relation, remote_app_data=answer)
    out, context = requirer_run(answered, "changed")
    assert out.unit_status == testing.ActiveStatus()
    host = "rabbitmq-endpoints.openstack.svc.cluster.local"
    assert context is not None
    assert context.transport_url == f"rabbit://glance:pw-for-glance@{host}:5672/openstack"
    assert context.hosts == (host,)


def test_provider_ignores_a_non_leader_requirer() -> None:
    relation = testing.Relation("amqp", remote_app_name="rabbitmq")
    joined, _ = requirer_run(relation, "joined", leader=False)
    request = dict(joined.get_relation(relation.id).local_app_data)
    assert request == {}
    assert "password" not in provider_run(request, relation.id)


def test_provider_gives_the_in_cluster_name_unless_external_connectivity_is_asked() -> None:
    relation = testing.Relation("amqp", remote_app_name="rabbitmq")
    joined, _ = requirer_run(relation, "joined")
    request = dict(joined.get_relation(relation.id).local_app_data)
    assert json.loads(request["external_connectivity"]) is False
    assert provider_run(request, relation.id)["hostname"] != LOAD_BALANCER
    joined, _ = requirer_run(relation, "joined", charm=ExternalRequirerCharm)
    external_request = dict(joined.get_relation(relation.id).local_app_data)
    assert json.loads(external_request["external_connectivity"]) is True
    external = provider_run(external_request, relation.id)
    assert external["hostname"] == LOAD_BALANCER


def test_our_fixture_has_the_shape_of_the_providers_answer() -> None:
    relation = testing.Relation("amqp", remote_app_name="rabbitmq")
    joined, _ = requirer_run(relation, "joined")
    answer = provider_run(dict(joined.get_relation(relation.id).local_app_data), relation.id)
    fixture = amqp_fixture().relation
    assert isinstance(fixture, testing.Relation)
    assert set(fixture.remote_app_data) == set(answer)
