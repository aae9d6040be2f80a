"""nova-service (interface ``nova``): nova's provider against the requirer the hypervisors use."""

from __future__ import annotations

import dataclasses
from typing import Any

import ops
import pytest
from openstack_charms.relations.nova_service import NovaServiceContext, NovaServiceRequirer
from openstack_charms.testing.relations import NOVA_METADATA_URL, NOVA_SPICE_PROXY_URL, nova_service_fixture
from ops import testing

META = {
    "name": "hypervisor",
    "requires": {"nova-service": {"interface": "nova"}},
}


class Hypervisor(ops.CharmBase):
    """The requirer alone, recording its context."""

    seen: NovaServiceContext | str | None = None

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.handler = NovaServiceRequirer(self, "nova-service")
        framework.observe(self.on["nova-service"].relation_changed, self._on_changed)

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def hook(self) -> str:
        return ""

    def _on_changed(self, _: ops.EventBase) -> None:
        Hypervisor.seen = self.handler.context if self.handler.ready else self.handler.waiting_for


def run(fixture: Any) -> NovaServiceContext | str | None:
    ctx = testing.Context(Hypervisor, meta=META)
    state = testing.State(relations=[fixture.relation], secrets=list(fixture.secrets))
    ctx.run(ctx.on.relation_changed(fixture.relation), state)
    return Hypervisor.seen


def test_the_requirer_reads_every_key_and_the_granted_secret() -> None:
    seen = run(nova_service_fixture(pci_aliases='[{"name": "gpu", "vendor_id": "10de"}]'))
    assert seen == NovaServiceContext(
        spice_proxy_url=NOVA_SPICE_PROXY_URL,
        metadata_url=NOVA_METADATA_URL,
        region="RegionOne",
        pci_aliases=({"name": "gpu", "vendor_id": "10de"},),
        metadata_proxy_shared_secret="metadata-shared-secret",
    )
    assert isinstance(seen, NovaServiceContext)
    assert seen.pci_aliases_json == '[{"name": "gpu", "vendor_id": "10de"}]'


def test_ready_only_with_a_console_url() -> None:
    fixture = nova_service_fixture()
    relation = fixture.relation
    assert isinstance(relation, testing.Relation)
    data = {k: v for k, v in relation.remote_app_data.items() if k != "spice-proxy-url"}
    assert run(
        dataclasses.replace(fixture, relation=dataclasses.replace(relation, remote_app_data=data))
    ) == ("spice-proxy-url")


def test_without_a_secret_id_the_secret_is_none() -> None:
    seen = run(nova_service_fixture(shared_secret=None, metadata_url=""))
    assert isinstance(seen, NovaServiceContext)
    assert seen.metadata_proxy_shared_secret is None and seen.metadata_url == ""


def test_a_secret_not_granted_yet_waits() -> None:
    fixture = nova_service_fixture()
    assert "not granted" in str(run(dataclasses.replace(fixture, secrets=())))


@pytest.mark.parametrize("aliases", ["{", '{"name": "x"}', "[1]"])
def test_bad_pci_aliases_are_unusable_data_not_a_crash(aliases: str) -> None:
    assert "usable data" in str(run(nova_service_fixture(pci_aliases=aliases)))


def test_nova_s_databag_is_what_the_requirer_reads() -> None:
    # the charm's own output (test_charm) fed to the requirer
    from openstack_charms.testing import charm_context, complete_state

    ctx = charm_context("nova-k8s")
    relation = testing.Relation("nova-service", interface="nova", remote_app_name="hypervisor", id=950_000)
    state = complete_state("nova-k8s", execs=[testing.Exec([], stdout="")])
    out = ctx.run(
        ctx.on.relation_changed(relation), dataclasses.replace(state, relations=[*state.relations, relation])
    )
    published = out.get_relation(950_000).local_app_data
    secret = next(s for s in out.secrets if s.label == "shared-metadata-secret")
    granted = testing.Secret(dict(secret.tracked_content), id=secret.id, owner=None)
    fixture = nova_service_fixture()
    mirrored = dataclasses.replace(fixture.relation, remote_app_data=dict(published))
    seen = run(dataclasses.replace(fixture, relation=mirrored, secrets=(granted,)))
    assert isinstance(seen, NovaServiceContext)
    assert seen.metadata_proxy_shared_secret == secret.tracked_content["metadata-proxy-shared-secret"]
    assert seen.spice_proxy_url.endswith("spice_auto.html?path=/openstack-nova")
