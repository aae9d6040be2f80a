"""IngressRequirer: traefik's v2 request format and the URL we read back."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pytest
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.plan import Workload
from openstack_charms.relations.ingress import IngressContext, IngressRequirer
from openstack_charms.testing.relations import ingress_fixture
from ops import testing

META = {
    "name": "demo",
    "requires": {
        "ingress-internal": {"interface": "ingress", "limit": 1, "optional": True},
        "ingress-public": {"interface": "ingress", "limit": 1, "optional": True},
    },
}
MODEL = testing.Model(name="openstack")


class DemoCharm(OpenStackCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "demo"
    api_port = 9292

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        return []


def ctx() -> testing.Context[DemoCharm]:
    return testing.Context(DemoCharm, meta=META, app_name="demo", unit_id=1)


def run(*relations: testing.Relation, leader: bool = True) -> tuple[testing.State, IngressContext | None]:
    context = ctx()
    state = testing.State(leader=leader, relations=set(relations), model=MODEL)
    with context(context.on.config_changed(), state) as manager:
        out = manager.run()
        return out, manager.charm.handlers["ingress-public"].context


def public(**remote_app_data: str) -> testing.Relation:
    relation = ingress_fixture("ingress-public", app="demo").relation
    assert isinstance(relation, testing.Relation)
    return dataclasses.replace(relation, remote_app_data=remote_app_data or relation.remote_app_data)


def test_every_declared_ingress_endpoint_gets_a_handler_on_the_api_port() -> None:
    context = ctx()
    with context(context.on.config_changed(), testing.State(model=MODEL)) as manager:
        handlers = manager.charm.handlers
        assert set(handlers) == {"ingress-internal", "ingress-public"}
        assert all(isinstance(h, IngressRequirer) and h.port == 9292 for h in handlers.values())


def test_leader_publishes_the_app_request_json_encoded() -> None:
    relation = testing.Relation("ingress-public", remote_app_name="traefik")
    out, _ = run(relation)
    assert out.get_relation(relation.id).local_app_data == {
        "model": '"openstack"',
        "name": '"demo"',
        "port": "9292",
        "strip-prefix": "true",
        "redirect-https": "false",
        "scheme": '"http"',
    }


def test_every_unit_publishes_its_stable_pod_dns_name() -> None:
    relation = testing.Relation("ingress-public", remote_app_name="traefik")
    out, _ = run(relation, leader=False)
    unit_data = out.get_relation(relation.id).local_unit_data
    assert json.loads(unit_data["host"]) == "demo-1.demo-endpoints.openstack.svc.cluster.local"
    assert "ip" not in unit_data
    assert out.get_relation(relation.id).local_app_data == {}


def test_ready_with_traefik_url() -> None:
    out, context = run(public())
    assert context == IngressContext(url="http://10.20.1.10/openstack-demo")
    assert out.unit_status == testing.ActiveStatus()


def test_each_endpoint_reads_its_own_url() -> None:
    internal = ingress_fixture("ingress-internal", "http://10.20.0.10/openstack-demo/").relation
    context = ctx()
    state = testing.State(leader=True, relations={internal, public()}, model=MODEL)
    with context(context.on.config_changed(), state) as manager:
        manager.run()
        assert manager.charm.handlers["ingress-internal"].context == IngressContext(
            url="http://10.20.0.10/openstack-demo"
        )
        assert manager.charm.handlers["ingress-public"].context == IngressContext(
            url="http://10.20.1.10/openstack-demo"
        )


def test_incomplete_ingress_does_not_hold_the_charm_back() -> None:
    relation = testing.Relation("ingress-public", remote_app_name="traefik")
    out, context = run(relation)
    assert context is None
    assert out.unit_status == testing.ActiveStatus()


@pytest.mark.parametrize(
    "ingress",
    ["not json", '"a string"', '{"no-url": 1}', '{"url": 5}', '{"url": "ftp://x/y"}', '{"url": "http://"}'],
)
def test_malformed_url_is_ignored_not_a_crash(ingress: str) -> None:
    out, context = run(public(ingress=ingress))
    assert context is None
    assert out.unit_status == testing.ActiveStatus()


def test_same_event_twice_changes_nothing() -> None:
    state = testing.State(leader=True, relations={public()}, model=MODEL)
    once = ctx().run(ctx().on.config_changed(), state)
    twice = ctx().run(ctx().on.config_changed(), once)
    assert [(r.local_app_data, r.local_unit_data) for r in twice.relations] == [
        (r.local_app_data, r.local_unit_data) for r in once.relations
    ]
