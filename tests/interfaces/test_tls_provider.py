"""Our CertificatesRequirer against the real tls-certificates provider library.

A provider charm built on ``TLSCertificatesProvidesV4`` (the class
self-signed-certificates uses) signs every outstanding request with a test CA.
Each side runs in ops.testing on the other side's latest output (the unit's
request in its unit databag, the provider's answer in its application databag)
until our handler serves a certificate.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import stat
from collections.abc import Sequence
from typing import ClassVar

import ops
from charmlibs.interfaces.tls_certificates import (
    Certificate,
    PrivateKey,
    ProviderCertificate,
    TLSCertificatesProvidesV4,
)
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.k8s import K8sCharm
from openstack_charms.plan import Workload
from openstack_charms.relations.tls import CertificatesRequirer, TLSContext
from openstack_charms.testing import container, pushed_files
from openstack_charms.testing.relations import certificates_fixture, fixture_ca
from ops import testing

REQUIRER_META = {
    "name": "demo",
    "containers": {"demo": {}},
    "peers": {"peers": {"interface": "demo-peers"}},
    "requires": {"certificates": {"interface": "tls-certificates", "limit": 1, "optional": True}},
}
PROVIDER_META = {"name": "ca", "provides": {"certificates": {"interface": "tls-certificates"}}}
MODEL = testing.Model(name="openstack")
REQUIRER_RELATION_ID = 7
PROVIDER_RELATION_ID = 8


class DemoCharm(K8sCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    """A service charm whose only relation is its certificate."""

    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "demo"
    service_user = "demo"
    built_library: ClassVar[list[bool]] = []
    served: ClassVar[list[TLSContext | None]] = []

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        handler = self.handlers["certificates"]
        assert isinstance(handler, CertificatesRequirer)
        DemoCharm.built_library.append(handler.library is not None)
        DemoCharm.served.append(ctx.tls)
        return [Workload("demo", files=self.trust_files(ctx))]


class CAProviderCharm(ops.CharmBase):
    """Signs each outstanding request with the test CA, as self-signed-certificates does."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.tls = TLSCertificatesProvidesV4(self, "certificates")
        framework.observe(self.on["certificates"].relation_changed, self._issue)

    def _issue(self, _: ops.EventBase) -> None:
        ca_key, ca = fixture_ca()
        for request in self.tls.get_outstanding_certificate_requests():
            certificate = request.certificate_signing_request.sign(ca, ca_key, datetime.timedelta(days=90))
            self.tls.set_relation_certificate(
                ProviderCertificate(
                    relation_id=request.relation_id,
                    certificate=certificate,
                    certificate_signing_request=request.certificate_signing_request,
                    ca=ca,
                    chain=[certificate, ca],
                )
            )


def requirer_ctx() -> testing.Context[DemoCharm]:
    return testing.Context(DemoCharm, meta=REQUIRER_META)


def provider_answers(request: testing.Relation, previous: dict[str, str]) -> dict[str, str]:
    """Run the provider on the unit's request; return its application databag."""
    ctx = testing.Context(CAProviderCharm, meta=PROVIDER_META)
    relation = testing.Relation(
        "certificates",
        interface="tls-certificates",
        id=PROVIDER_RELATION_ID,
        remote_app_name="demo",
        remote_app_data=dict(request.local_app_data),
        remote_units_data={0: dict(request.local_unit_data)},
        local_app_data=previous,
    )
    out = ctx.run(
        ctx.on.relation_changed(relation, remote_unit=0), testing.State(leader=True, relations=[relation])
    )
    return dict(out.get_relation(PROVIDER_RELATION_ID).local_app_data)


def round_trip(root: pathlib.Path) -> tuple[testing.Context[DemoCharm], testing.State, dict[str, str]]:
    """Alternate the requirer and the provider until neither databag changes."""
    DemoCharm.built_library, DemoCharm.served = [], []
    relation = testing.Relation(
        "certificates", interface="tls-certificates", id=REQUIRER_RELATION_ID, remote_app_name="ca"
    )
    state = testing.State(
        leader=True,
        model=MODEL,
        containers={container("demo", root)},
        relations={testing.PeerRelation("peers"), relation},
    )
    ctx = requirer_ctx()
    state = ctx.run(ctx.on.relation_created(relation), state)
    answer: dict[str, str] = {}
    for _ in range(4):
        request = state.get_relation(REQUIRER_RELATION_ID)
        assert isinstance(request, testing.Relation)
        new_answer = provider_answers(request, answer)
        answered = dataclasses.replace(request, remote_app_data=new_answer, remote_units_data={0: {}})
        before = dict(request.local_unit_data)
        state = dataclasses.replace(
            state, relations={*(r for r in state.relations if r.id != REQUIRER_RELATION_ID), answered}
        )
        state = ctx.run(ctx.on.relation_changed(answered, remote_unit=0), state)
        if new_answer == answer and dict(state.get_relation(REQUIRER_RELATION_ID).local_unit_data) == before:
            return ctx, state, answer
        answer = new_answer
    raise AssertionError(f"still changing after 4 rounds: {state.unit_status}")


def unit_private_key(state: testing.State) -> str:
    [secret] = [s for s in state.secrets if s.label and s.label.endswith("-private-key-0-certificates")]
    return secret.tracked_content["private-key"]


def test_the_provider_signs_our_request_and_we_serve_it(tmp_path: pathlib.Path) -> None:
    _, state, answer = round_trip(tmp_path)
    assert state.unit_status == testing.ActiveStatus()
    served = DemoCharm.served[-1]
    assert served is not None
    certificate = Certificate.from_string(served.certificate)
    assert certificate.sans_dns is not None
    assert {"demo.openstack.svc", "demo.openstack.svc.cluster.local"} <= certificate.sans_dns
    assert "demo-0.demo-endpoints.openstack.svc.cluster.local" in certificate.sans_dns
    assert certificate.common_name == "demo.openstack.svc"
    key = unit_private_key(state)
    assert certificate.matches_private_key(PrivateKey.from_string(key))
    _, ca = fixture_ca()
    assert served.ca.strip() == str(ca).strip()
    [issued] = json.loads(answer["certificates"])
    assert Certificate.from_string(issued["certificate"]) == certificate
    assert issued["chain"] == [issued["certificate"], str(ca)]


def test_the_files_the_base_pushes(tmp_path: pathlib.Path) -> None:
    ctx, state, _ = round_trip(tmp_path)
    files = pushed_files(state, ctx, "demo")
    served = DemoCharm.served[-1]
    assert served is not None
    _, ca = fixture_ca()
    assert files["/etc/demo/tls/cert.pem"] == served.certificate, "the leaf alone: the chain ends at the root"
    assert files["/etc/demo/tls/key.pem"].strip() == unit_private_key(state).strip()
    assert files["/etc/demo/tls/ca.pem"] == str(ca).strip() + "\n"
    root = state.get_container("demo").get_filesystem(ctx)
    modes = {
        name: stat.S_IMODE((root / "etc/demo/tls" / name).stat().st_mode)
        for name in ("cert.pem", "key.pem", "ca.pem")
    }
    assert modes == {"cert.pem": 0o644, "key.pem": 0o600, "ca.pem": 0o644}


def test_steady_config_changed_serves_the_certificate_without_the_library(tmp_path: pathlib.Path) -> None:
    ctx, state, _ = round_trip(tmp_path)
    assert DemoCharm.built_library[-1], "the relation hooks ran the library"
    served = DemoCharm.served[-1]
    files = pushed_files(state, ctx, "demo")
    out = ctx.run(ctx.on.config_changed(), state)
    assert DemoCharm.built_library[-1] is False, "config-changed built the TLS library"
    assert DemoCharm.served[-1] == served
    assert out.unit_status == testing.ActiveStatus()
    assert pushed_files(out, ctx, "demo") == files
    assert (
        out.get_relation(REQUIRER_RELATION_ID).local_unit_data
        == state.get_relation(REQUIRER_RELATION_ID).local_unit_data
    )
    assert {s.id: s.tracked_content for s in out.secrets} == {s.id: s.tracked_content for s in state.secrets}


def test_our_fixture_has_the_shape_of_the_providers_answer(tmp_path: pathlib.Path) -> None:
    _, _, answer = round_trip(tmp_path)
    fixture = certificates_fixture(app="demo").relation
    assert isinstance(fixture, testing.Relation)
    assert set(fixture.remote_app_data) == set(answer)
    [ours] = json.loads(fixture.remote_app_data["certificates"])
    [theirs] = json.loads(answer["certificates"])
    assert set(ours) == set(theirs)
