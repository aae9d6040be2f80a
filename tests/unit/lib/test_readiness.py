"""ReadinessProvider and ReadinessRequirer: the ``ready`` flag of ``placement`` and interfaces like it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.plan import Workload
from openstack_charms.relations.readiness import ReadinessProvider, ReadinessRequirer
from openstack_charms.testing import state_with
from openstack_charms.testing.relations import database_fixture
from ops import testing

PROVIDER_META = {
    "name": "placement",
    "requires": {"database": {"interface": "mysql_client", "limit": 1}},
    # as placement-k8s declares it (a provides endpoint without it would count as mandatory)
    "provides": {"placement": {"interface": "placement", "optional": True}},
}
REQUIRER_META = {"name": "nova", "requires": {"placement": {"interface": "placement", "limit": 1}}}


class ProviderCharm(OpenStackCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "placement"

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        return []


class RequirerCharm(ProviderCharm):
    service_name = "nova"


def provider(state: testing.State) -> testing.State:
    context = testing.Context(ProviderCharm, meta=PROVIDER_META)
    with context(context.on.config_changed(), state) as manager:
        assert isinstance(manager.charm.handlers["placement"], ReadinessProvider)
        return manager.run()


def requirer(relation: testing.Relation) -> tuple[testing.State, bool | None]:
    context = testing.Context(RequirerCharm, meta=REQUIRER_META)
    with context(context.on.relation_changed(relation), testing.State(relations={relation})) as manager:
        out = manager.run()
        handler = manager.charm.handlers["placement"]
        assert isinstance(handler, ReadinessRequirer)
        return out, handler.context


def nova() -> testing.Relation:
    return testing.Relation("placement", interface="placement", remote_app_name="nova")


def ready_state(*relations: testing.Relation, leader: bool = True) -> testing.State:
    """The database answered (the provider's reconcile can succeed), with ``relations`` beside it."""
    base = testing.State(leader=leader, relations=relations)
    return state_with([database_fixture(database="placement")], base=base)


# -- the provider -------------------------------------------------------------------------


def test_leader_says_ready_once_the_reconcile_succeeded() -> None:
    relation = nova()
    out = provider(ready_state(relation))
    assert out.unit_status == testing.ActiveStatus()
    assert out.get_relation(relation.id).local_app_data == {"ready": "true"}


def test_leader_says_not_ready_while_the_reconcile_cannot_finish() -> None:
    relation = nova()
    out = provider(testing.State(leader=True, relations=[relation]))
    assert out.unit_status == testing.BlockedStatus("missing relation: database")
    assert out.get_relation(relation.id).local_app_data == {"ready": "false"}


def test_incomplete_database_is_not_ready_either() -> None:
    relation = nova()
    database = testing.Relation("database", interface="mysql_client", remote_app_name="mysql")
    out = provider(testing.State(leader=True, relations=[relation, database]))
    assert out.unit_status == testing.WaitingStatus("waiting for database (endpoints)")
    assert out.get_relation(relation.id).local_app_data == {"ready": "false"}


def test_ready_goes_back_to_false_when_the_service_stops_being_ready() -> None:
    relation = nova()
    ready = provider(ready_state(relation))
    assert ready.get_relation(relation.id).local_app_data == {"ready": "true"}
    peer = ready.get_relation(relation.id)
    lost = provider(testing.State(leader=True, relations=[peer]))
    assert lost.get_relation(relation.id).local_app_data == {"ready": "false"}


def test_every_related_application_is_told() -> None:
    first, second = nova(), testing.Relation("placement", interface="placement", remote_app_name="nova-cell2")
    out = provider(ready_state(first, second))
    assert [out.get_relation(r.id).local_app_data for r in (first, second)] == [{"ready": "true"}] * 2


def test_non_leader_writes_nothing() -> None:
    relation = nova()
    out = provider(ready_state(relation, leader=False))
    assert out.unit_status == testing.ActiveStatus()
    assert out.get_relation(relation.id).local_app_data == {}


def test_without_consumers_the_provider_is_not_mandatory() -> None:
    out = provider(ready_state())
    assert out.unit_status == testing.ActiveStatus()


# -- the requirer -------------------------------------------------------------------------


@pytest.mark.parametrize("data", [{}, {"ready": "false"}, {"ready": "not json"}, {"ready": '"true"'}])
def test_requirer_waits_naming_ready(data: dict[str, str]) -> None:
    relation = testing.Relation(
        "placement", interface="placement", remote_app_name="placement", remote_app_data=data
    )
    out, context = requirer(relation)
    assert context is None
    assert out.unit_status == testing.WaitingStatus("waiting for placement (ready)")


def test_requirer_is_ready_on_true() -> None:
    relation = testing.Relation(
        "placement", interface="placement", remote_app_name="placement", remote_app_data={"ready": "true"}
    )
    out, context = requirer(relation)
    assert context is True
    assert out.unit_status == testing.ActiveStatus()
    assert out.get_relation(relation.id).local_app_data == {}, "the requirer asks nothing"


def test_requirer_without_the_relation_is_blocked() -> None:
    context = testing.Context(RequirerCharm, meta=REQUIRER_META)
    out = context.run(context.on.config_changed(), testing.State())
    assert out.unit_status == testing.BlockedStatus("missing relation: placement")


def test_round_trip_provider_to_requirer() -> None:
    relation = nova()
    out = provider(ready_state(relation))
    answer = dict(out.get_relation(relation.id).local_app_data)
    seen = testing.Relation(
        "placement", interface="placement", remote_app_name="placement", remote_app_data=answer
    )
    status, context = requirer(seen)
    assert context is True and status.unit_status == testing.ActiveStatus()
