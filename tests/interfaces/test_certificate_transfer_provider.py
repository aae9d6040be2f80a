"""Our CATransferRequirer against the real certificate_transfer provider library.

A provider charm built on ``CertificateTransferProvides`` sends CA
certificates; it writes the v1 format (application databag) when our side
announced version 1, and in addition the v0 format (the provider unit's
``ca``/``certificate``/``chain``) otherwise. Our handler reads the databags
itself (the library only runs in the endpoint's own hooks), so each test
checks that the bundle holds exactly the certificates the provider sent.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import pathlib
from collections.abc import Callable, Sequence
from typing import ClassVar

import ops
import pytest
from charmlibs.interfaces.certificate_transfer import CertificateTransferProvides
from charmlibs.interfaces.tls_certificates import Certificate, CertificateRequestAttributes, PrivateKey
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.k8s import K8sCharm
from openstack_charms.plan import Workload
from openstack_charms.relations.tls import CAContext, CATransferRequirer
from openstack_charms.testing import container, pushed_files
from openstack_charms.testing.relations import fixture_ca
from ops import testing

REQUIRER_META = {
    "name": "demo",
    "containers": {"demo": {}},
    "peers": {"peers": {"interface": "demo-peers"}},
    "requires": {"receive-ca-cert": {"interface": "certificate_transfer", "optional": True}},
}
PROVIDER_META = {"name": "ca", "provides": {"send-ca-cert": {"interface": "certificate_transfer"}}}
MODEL = testing.Model(name="openstack")


@functools.cache
def other_ca() -> str:
    """A second CA, as a provider trusting two roots would send."""
    key = PrivateKey.generate()
    return str(
        Certificate.generate_self_signed_ca(
            CertificateRequestAttributes(common_name="second test CA"), key, datetime.timedelta(days=30)
        )
    )


def root_ca() -> str:
    return str(fixture_ca()[1])


class DemoCharm(K8sCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    """A service charm whose only relation brings the CAs it trusts."""

    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "demo"
    service_user = "demo"
    seen: ClassVar[list[CAContext | None]] = []

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        assert isinstance(self.handlers["receive-ca-cert"], CATransferRequirer)
        DemoCharm.seen.append(ctx.ca)
        return [Workload("demo", files=self.trust_files(ctx))]


#: what the provider charm does in its relation-changed hook, through the library
Action = Callable[[CertificateTransferProvides, int], None]


class ProviderCharm(ops.CharmBase):
    """Sends CAs over certificate_transfer; ``action`` says what it does in this hook."""

    action: ClassVar[Action] = staticmethod(lambda lib, relation_id: None)

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.transfer = CertificateTransferProvides(self, "send-ca-cert")
        framework.observe(self.on["send-ca-cert"].relation_changed, self._on_changed)

    def _on_changed(self, event: ops.RelationChangedEvent) -> None:
        ProviderCharm.action(self.transfer, event.relation.id)


def send(certificates: set[str]) -> Action:
    return lambda lib, relation_id: lib.add_certificates(certificates, relation_id)


def provider_runs(
    action: Action, requirer_app_data: dict[str, str], previous: testing.Relation | None = None
) -> testing.Relation:
    """Run the provider's relation-changed on what the requirer wrote; return its relation."""
    ProviderCharm.action = staticmethod(action)
    ctx = testing.Context(ProviderCharm, meta=PROVIDER_META)
    relation = previous or testing.Relation(
        "send-ca-cert", interface="certificate_transfer", remote_app_name="demo"
    )
    relation = dataclasses.replace(relation, remote_app_data=requirer_app_data)
    out = ctx.run(
        ctx.on.relation_changed(relation, remote_unit=0), testing.State(leader=True, relations=[relation])
    )
    result = out.get_relation(relation.id)
    assert isinstance(result, testing.Relation)
    return result


def base(root: pathlib.Path, *relations: testing.Relation, leader: bool = True) -> testing.State:
    return testing.State(
        leader=leader,
        model=MODEL,
        containers={container("demo", root)},
        relations={testing.PeerRelation("peers"), *relations},
    )


def as_seen_by_requirer(
    requirer: testing.Relation, provider: testing.Relation, *, app: bool = True
) -> testing.Relation:
    """The requirer's relation with the provider's output (optionally without its app databag)."""
    return dataclasses.replace(
        requirer,
        remote_app_data=dict(provider.local_app_data) if app else {},
        remote_units_data={0: dict(provider.local_unit_data)},
    )


def requirer_runs(
    state: testing.State, relation: testing.Relation, event: str = "changed"
) -> tuple[testing.Context[DemoCharm], testing.State]:
    state = dataclasses.replace(
        state, relations={*(r for r in state.relations if r.id != relation.id), relation}
    )
    ctx = testing.Context(DemoCharm, meta=REQUIRER_META)
    ev = ctx.on.relation_changed(relation, remote_unit=0) if event == "changed" else ctx.on.config_changed()
    return ctx, ctx.run(ev, state)


def blocks(bundle: str) -> set[str]:
    end = "-----END CERTIFICATE-----"
    return {part.strip() + "\n" + end for part in bundle.split(end) if part.strip()}


def pems(certificates: set[str]) -> set[str]:
    return {c.strip() for c in certificates}


@pytest.fixture(autouse=True)
def _reset() -> None:
    DemoCharm.seen = []


def created(root: pathlib.Path) -> tuple[testing.State, testing.Relation]:
    """Our leader joins: the library announces version 1 in our application databag."""
    relation = testing.Relation("receive-ca-cert", interface="certificate_transfer", remote_app_name="ca")
    ctx = testing.Context(DemoCharm, meta=REQUIRER_META)
    state = ctx.run(ctx.on.relation_created(relation), base(root, relation))
    out = state.get_relation(relation.id)
    assert isinstance(out, testing.Relation)
    return state, out


# -- v1: the provider's application databag ----------------------------------------------


def test_v1_bundle_holds_exactly_what_the_provider_sent(tmp_path: pathlib.Path) -> None:
    state, relation = created(tmp_path)
    assert relation.local_app_data == {"version": "1"}
    assert state.unit_status == testing.WaitingStatus("waiting for receive-ca-cert (certificates)")
    sent = {root_ca(), other_ca()}
    provider = provider_runs(send(sent), dict(relation.local_app_data))
    assert "chain" not in provider.local_unit_data, "v1: nothing in the unit databag"
    ctx, out = requirer_runs(state, as_seen_by_requirer(relation, provider))
    context = DemoCharm.seen[-1]
    assert context is not None
    assert blocks(context.bundle) == pems(sent)
    assert context.path == "/etc/demo/ca-bundle.pem"
    assert out.unit_status == testing.ActiveStatus()
    assert pushed_files(out, ctx, "demo")["/etc/demo/ca-bundle.pem"] == context.bundle
    # a hook that is not the endpoint's reads the same bundle without the library
    ctx2, steady = requirer_runs(out, out.get_relation(relation.id), event="config")  # type: ignore[arg-type]
    assert DemoCharm.seen[-1] == context
    assert pushed_files(steady, ctx2, "demo")["/etc/demo/ca-bundle.pem"] == context.bundle


def test_v1_removed_certificates_leave_the_bundle(tmp_path: pathlib.Path) -> None:
    state, relation = created(tmp_path)
    provider = provider_runs(send({root_ca(), other_ca()}), dict(relation.local_app_data))
    provider = provider_runs(
        lambda lib, rid: lib.remove_certificate(other_ca(), rid), dict(relation.local_app_data), provider
    )
    _, out = requirer_runs(state, as_seen_by_requirer(relation, provider))
    context = DemoCharm.seen[-1]
    assert context is not None and blocks(context.bundle) == pems({root_ca()})
    provider = provider_runs(
        lambda lib, rid: lib.remove_all_certificates(rid), dict(relation.local_app_data), provider
    )
    _, out = requirer_runs(out, as_seen_by_requirer(relation, provider))
    assert out.unit_status == testing.WaitingStatus("waiting for receive-ca-cert (certificates)")


def test_two_providers_give_one_bundle(tmp_path: pathlib.Path) -> None:
    state, first = created(tmp_path)
    second = testing.Relation("receive-ca-cert", interface="certificate_transfer", remote_app_name="vault")
    state = dataclasses.replace(state, relations={*state.relations, second})
    version = {"version": "1"}
    _, state = requirer_runs(state, as_seen_by_requirer(first, provider_runs(send({root_ca()}), version)))
    _, out = requirer_runs(state, as_seen_by_requirer(second, provider_runs(send({other_ca()}), version)))
    context = DemoCharm.seen[-1]
    assert context is not None and blocks(context.bundle) == pems({root_ca(), other_ca()})
    assert out.unit_status == testing.ActiveStatus()


# -- v0: the provider unit's databag -----------------------------------------------------


def test_v0_requirer_gets_the_unit_format_and_we_read_it(tmp_path: pathlib.Path) -> None:
    sent = {root_ca(), other_ca()}
    # a requirer that did not announce version 1 (an older library, or before our leader ran)
    provider = provider_runs(send(sent), {})
    unit = provider.local_unit_data
    assert set(unit) >= {"ca", "certificate", "chain"}, "the library still writes the v0 unit format"
    _, relation = created(tmp_path)
    state = base(tmp_path, relation)
    for with_app_data in (True, False):
        # without the app databag: a provider on the v0 library, which writes only its unit's
        _, out = requirer_runs(state, as_seen_by_requirer(relation, provider, app=with_app_data))
        context = DemoCharm.seen[-1]
        assert context is not None, f"app data: {with_app_data}"
        assert blocks(context.bundle) == pems(sent)
        assert out.unit_status == testing.ActiveStatus()
