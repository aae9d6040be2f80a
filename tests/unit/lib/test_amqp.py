"""AMQPRequirer: the rabbitmq request we publish and the transport URL we build."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import pytest
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.plan import Workload
from openstack_charms.relations.amqp import AMQPContext, AMQPRequirer
from openstack_charms.relations.wiring import Wire
from openstack_charms.testing.relations import RABBITMQ_HOSTNAME, amqp_fixture
from ops import testing

META = {"name": "demo", "requires": {"amqp": {"interface": "rabbitmq", "limit": 1}}}


class DemoCharm(OpenStackCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "demo"

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        return []


class ExternalCharm(DemoCharm):
    """Asks the broker for its address outside the cluster."""

    own_wiring: ClassVar[dict[str, Wire]] = {
        "amqp": Wire(
            lambda charm, endpoint: AMQPRequirer(
                charm, endpoint, username="demo", vhost="openstack", external_connectivity=True
            ),
            (),
        )
    }


def ctx() -> testing.Context[DemoCharm]:
    return testing.Context(DemoCharm, meta=META)


def run(relation: testing.Relation, *, leader: bool = True) -> tuple[testing.State, AMQPContext | None]:
    context = ctx()
    with context(context.on.config_changed(), testing.State(leader=leader, relations={relation})) as manager:
        out = manager.run()
        return out, manager.charm.handlers["amqp"].context


def fixture_relation(**remote_app_data: str | None) -> testing.Relation:
    relation = amqp_fixture().relation
    assert isinstance(relation, testing.Relation)
    data = {k: v for k, v in {**relation.remote_app_data, **remote_app_data}.items() if v is not None}
    return dataclasses.replace(relation, remote_app_data=data)


def test_leader_requests_user_and_vhost_in_the_app_databag() -> None:
    relation = testing.Relation("amqp", remote_app_name="rabbitmq")
    out = ctx().run(ctx().on.relation_joined(relation), testing.State(leader=True, relations={relation}))
    assert out.get_relation(relation.id).local_app_data == {
        "username": "demo",
        "vhost": "openstack",
        "external_connectivity": "false",
    }
    assert out.unit_status == testing.WaitingStatus("waiting for amqp (password)")


def test_the_default_wiring_builds_the_handler_from_the_service_name() -> None:
    context = ctx()
    with context(context.on.config_changed(), testing.State(leader=True)) as manager:
        handler = manager.charm.handlers["amqp"]
        assert isinstance(handler, AMQPRequirer)
        assert (handler.username, handler.vhost, handler.external_connectivity) == (
            "demo",
            "openstack",
            False,
        )


def test_external_connectivity_is_requested_through_own_wiring() -> None:
    relation = testing.Relation("amqp", remote_app_name="rabbitmq")
    context = testing.Context(ExternalCharm, meta=META)
    out = context.run(context.on.relation_joined(relation), testing.State(leader=True, relations={relation}))
    assert out.get_relation(relation.id).local_app_data["external_connectivity"] == "true"


def test_non_leader_publishes_nothing_in_the_app_databag() -> None:
    relation = fixture_relation()
    out, context = run(relation, leader=False)
    assert out.get_relation(relation.id).local_app_data == {}
    assert context is not None


def test_ready_gives_the_oslo_transport_url() -> None:
    out, context = run(fixture_relation())
    assert out.unit_status == testing.ActiveStatus()
    assert context == AMQPContext(
        transport_url=f"rabbit://demo:rabbit-password@{RABBITMQ_HOSTNAME}:5672/openstack",
        hosts=(RABBITMQ_HOSTNAME,),
        port=5672,
        username="demo",
        password="rabbit-password",
        vhost="openstack",
    )


def test_without_hostname_every_broker_unit_is_in_the_url() -> None:
    relation = dataclasses.replace(
        fixture_relation(hostname=None),
        remote_units_data={0: {"ingress-address": "10.1.0.21"}, 1: {"ingress-address": "10.1.0.22"}},
    )
    _, context = run(relation)
    assert context is not None
    assert context.hosts == ("10.1.0.21", "10.1.0.22")
    assert context.transport_url == (
        "rabbit://demo:rabbit-password@10.1.0.21:5672,demo:rabbit-password@10.1.0.22:5672/openstack"
    )


def test_password_characters_are_encoded_for_the_url() -> None:
    _, context = run(fixture_relation(password="a@b/c:d$e"))
    assert context is not None
    assert context.password == "a@b/c:d$e"
    assert context.transport_url.startswith("rabbit://demo:a%40b%2Fc%3Ad%24e@")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"password": None}, "waiting for amqp (password)"),
        ({"password": ""}, "waiting for amqp (password)"),
    ],
)
def test_waiting_names_the_missing_field(data: dict[str, str | None], message: str) -> None:
    out, context = run(fixture_relation(**data))
    assert context is None
    assert out.unit_status == testing.WaitingStatus(message)


def test_no_hostname_and_no_unit_address_waits_for_hostname() -> None:
    relation = dataclasses.replace(
        fixture_relation(hostname=None), remote_units_data={0: {"ingress-address": ""}}
    )
    out, _ = run(relation)
    assert out.unit_status == testing.WaitingStatus("waiting for amqp (hostname)")


def test_missing_relation_blocks_naming_it() -> None:
    out = ctx().run(ctx().on.config_changed(), testing.State(leader=True))
    assert out.unit_status == testing.BlockedStatus("missing relation: amqp")


def test_same_event_twice_changes_nothing() -> None:
    state = testing.State(leader=True, relations={fixture_relation()})
    once = ctx().run(ctx().on.config_changed(), state)
    twice = ctx().run(ctx().on.config_changed(), once)
    assert [r.local_app_data for r in twice.relations] == [r.local_app_data for r in once.relations]
    assert twice.unit_status == testing.ActiveStatus()
