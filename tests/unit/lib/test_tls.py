"""CertificatesRequirer and CATransferRequirer, and the files the k8s base pushes from them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import pytest
from charmlibs.interfaces.tls_certificates import CertificateSigningRequest
from openstack_charms.config import ServiceConfig
from openstack_charms.context import ServiceContext
from openstack_charms.k8s import K8sCharm
from openstack_charms.plan import Workload
from openstack_charms.relations.tls import CAContext, CATransferRequirer, CertificatesRequirer
from openstack_charms.testing import container, pushed_files, state_with
from openstack_charms.testing.relations import ca_fixture, certificates_fixture, fixture_ca, sign
from ops import testing

META = {
    "name": "demo",
    "containers": {"demo": {}},
    "peers": {"peers": {"interface": "demo-peers"}},
    "requires": {
        "certificates": {"interface": "tls-certificates", "limit": 1, "optional": True},
        "receive-ca-cert": {"interface": "certificate_transfer", "optional": True},
        "ingress-public": {"interface": "ingress", "limit": 1, "optional": True},
    },
}
MODEL = testing.Model(name="openstack")


class DemoCharm(K8sCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "demo"
    service_user = "demo"
    api_port = 8080

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        return [Workload("demo", files=self.trust_files(ctx))]

    @property
    def certificates(self) -> CertificatesRequirer:
        handler = self.handlers["certificates"]
        assert isinstance(handler, CertificatesRequirer)
        return handler

    @property
    def ca(self) -> CATransferRequirer:
        handler = self.handlers["receive-ca-cert"]
        assert isinstance(handler, CATransferRequirer)
        return handler


def ctx() -> testing.Context[DemoCharm]:
    return testing.Context(DemoCharm, meta=META)


def base(leader: bool = True) -> testing.State:
    return testing.State(
        leader=leader, model=MODEL, containers={container("demo")}, relations={testing.PeerRelation("peers")}
    )


def with_relations(*relations: testing.Relation, secrets: Any = (), leader: bool = True) -> testing.State:
    state = base(leader)
    return dataclasses.replace(
        state, relations={*state.relations, *relations}, secrets={*state.secrets, *secrets}
    )


def csrs(state: testing.State, relation_id: int) -> list[str]:
    data = state.get_relation(relation_id).local_unit_data
    return [
        r["certificate_signing_request"] for r in json.loads(data.get("certificate_signing_requests", "[]"))
    ]


def private_key(state: testing.State) -> str:
    [secret] = [s for s in state.secrets if s.label and "-private-key-0-certificates" in s.label]
    return secret.tracked_content["private-key"]


def issue(state: testing.State, relation: testing.Relation, *, revoked: bool = False) -> testing.Relation:
    """The provider's answer to the unit's request, as self-signed-certificates gives it."""
    [csr] = csrs(state, relation.id)
    certificate = sign(csr)
    ca = str(fixture_ca()[1])
    entry: dict[str, Any] = {
        "ca": ca,
        "certificate_signing_request": csr,
        "certificate": certificate,
        "chain": [certificate, ca],
    }
    if revoked:
        entry["revoked"] = True
    return dataclasses.replace(
        state.get_relation(relation.id),  # type: ignore[arg-type]
        remote_app_data={"certificates": json.dumps([entry])},
    )


# -- certificates -------------------------------------------------------------


def test_without_the_relation_the_library_is_not_built() -> None:
    context = ctx()
    with context(context.on.config_changed(), base()) as manager:
        out = manager.run()
        assert manager.charm.certificates.library is None
        assert manager.charm.ca.library is None
    assert out.unit_status == testing.ActiveStatus()
    assert "/etc/demo/tls/cert.pem" not in pushed_files(out, context, "demo")


def test_each_unit_requests_a_certificate_for_the_service_and_pod_names() -> None:
    relation = testing.Relation("certificates", remote_app_name="self-signed-certificates")
    out = ctx().run(ctx().on.relation_created(relation), with_relations(relation, leader=False))
    [csr_pem] = csrs(out, relation.id)
    csr = CertificateSigningRequest.from_string(csr_pem)
    assert csr.common_name == "demo.openstack.svc"
    assert csr.sans_dns == {
        "demo.openstack.svc",
        "demo.openstack.svc.cluster.local",
        "demo-0.demo-endpoints.openstack.svc.cluster.local",
    }
    assert out.get_relation(relation.id).local_app_data == {}
    assert out.unit_status == testing.WaitingStatus("waiting for certificates (a certificate for demo/0)")


def test_issued_certificate_is_served_with_its_key_and_ca() -> None:
    relation = testing.Relation("certificates", remote_app_name="self-signed-certificates")
    ingress = testing.Relation("ingress-public", remote_app_name="traefik")
    first = ctx().run(ctx().on.relation_created(relation), with_relations(relation, ingress))
    answered = dataclasses.replace(
        first, relations={*(r for r in first.relations if r.id != relation.id), issue(first, relation)}
    )
    context = ctx()
    out = context.run(context.on.relation_changed(answered.get_relation(relation.id)), answered)
    assert out.unit_status == testing.ActiveStatus()
    files = pushed_files(out, context, "demo")
    ca = str(fixture_ca()[1]).strip() + "\n"
    assert files["/etc/demo/tls/key.pem"] == private_key(out).strip() + "\n"
    assert files["/etc/demo/tls/ca.pem"] == ca
    assert files["/etc/demo/tls/cert.pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert ca.strip() not in files["/etc/demo/tls/cert.pem"], "the root CA is not part of the served chain"
    # traefik is told to reach the backends over https now
    assert out.get_relation(ingress.id).local_app_data["scheme"] == '"https"'
    assert csrs(out, relation.id) == csrs(first, relation.id), "no new request once issued"


def test_fixture_for_this_app_is_ready_and_changes_nothing() -> None:
    fixture = certificates_fixture(app="demo")
    state = state_with([fixture], base=base())
    context = ctx()
    out = context.run(context.on.config_changed(), state)
    assert out.unit_status == testing.ActiveStatus()
    assert csrs(out, fixture.relation.id) == csrs(state, fixture.relation.id)
    assert "/etc/demo/tls/cert.pem" in pushed_files(out, context, "demo")


def test_certificate_for_other_names_stays_in_service_while_re_requested() -> None:
    fixture = certificates_fixture(app="glance")
    state = state_with([fixture], base=base())
    out = ctx().run(ctx().on.relation_changed(fixture.relation), state)
    assert out.unit_status == testing.ActiveStatus()
    [csr_pem] = csrs(out, fixture.relation.id)
    assert CertificateSigningRequest.from_string(csr_pem).common_name == "demo.openstack.svc"


def test_hooks_that_cannot_change_the_request_do_not_resend_it() -> None:
    fixture = certificates_fixture(app="glance")
    state = state_with([fixture], base=base())
    out = ctx().run(ctx().on.config_changed(), state)
    assert out.unit_status == testing.ActiveStatus()
    assert csrs(out, fixture.relation.id) == csrs(state, fixture.relation.id)


def test_revoked_certificate_is_not_served() -> None:
    relation = testing.Relation("certificates", remote_app_name="self-signed-certificates")
    first = ctx().run(ctx().on.relation_created(relation), with_relations(relation))
    revoked = issue(first, relation, revoked=True)
    state = dataclasses.replace(
        first, relations={*(r for r in first.relations if r.id != relation.id), revoked}
    )
    out = ctx().run(ctx().on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for certificates (a certificate for demo/0)")


def test_denied_request_names_the_provider_reason() -> None:
    relation = testing.Relation("certificates", remote_app_name="vault")
    first = ctx().run(ctx().on.relation_created(relation), with_relations(relation))
    [csr] = csrs(first, relation.id)
    error = {"code": 102, "name": "DOMAIN_NOT_ALLOWED", "message": "domain not allowed"}
    denied = dataclasses.replace(
        first.get_relation(relation.id),  # type: ignore[arg-type]
        remote_app_data={"request_errors": json.dumps([{"csr": csr, "error": error}])},
    )
    state = dataclasses.replace(
        first, relations={*(r for r in first.relations if r.id != relation.id), denied}
    )
    out = ctx().run(ctx().on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus(
        "waiting for certificates (a certificate (request denied: domain not allowed))"
    )


@pytest.mark.parametrize("certificates", ["not json", '[{"certificate": "x"}]', '"text"'])
def test_malformed_provider_data_is_waiting_not_a_crash(certificates: str) -> None:
    fixture = certificates_fixture(app="demo")
    assert isinstance(fixture.relation, testing.Relation)
    relation = dataclasses.replace(fixture.relation, remote_app_data={"certificates": certificates})
    out = ctx().run(ctx().on.config_changed(), with_relations(relation, secrets=fixture.secrets))
    assert out.unit_status == testing.WaitingStatus("waiting for certificates (a certificate for demo/0)")


def test_relation_broken_drops_tls_and_the_private_key() -> None:
    fixture = certificates_fixture(app="demo")
    state = state_with([fixture], base=base())
    context = ctx()
    with context(context.on.relation_broken(fixture.relation), state) as manager:
        out = manager.run()
        assert manager.charm.certificates.library is not None, "built to clean up on relation-broken"
    assert out.unit_status == testing.ActiveStatus()
    assert not [s for s in out.secrets if s.label and "private-key" in s.label]


# -- CA transfer --------------------------------------------------------------


def test_leader_tells_the_provider_it_speaks_v1() -> None:
    relation = testing.Relation("receive-ca-cert", remote_app_name="self-signed-certificates")
    out = ctx().run(ctx().on.relation_created(relation), with_relations(relation))
    assert out.get_relation(relation.id).local_app_data == {"version": "1"}
    assert out.unit_status == testing.WaitingStatus("waiting for receive-ca-cert (certificates)")


def test_received_cas_are_pushed_as_one_bundle() -> None:
    fixture = ca_fixture()
    context = ctx()
    state = state_with([fixture], base=base(leader=False))
    with context(context.on.config_changed(), state) as manager:
        out = manager.run()
        ca = str(fixture_ca()[1]).strip() + "\n"
        assert manager.charm.ca.context == CAContext(bundle=ca, path="/etc/demo/ca-bundle.pem")
    assert out.unit_status == testing.ActiveStatus()
    assert pushed_files(out, context, "demo")["/etc/demo/ca-bundle.pem"] == ca


@pytest.mark.parametrize("encode", [lambda pem: pem, json.dumps], ids=["plain", "json"])
def test_v0_provider_with_only_a_ca_is_trusted(encode: Any) -> None:
    # old providers wrote the CA as plain PEM, the current library as a JSON string
    ca = str(fixture_ca()[1]).strip() + "\n"
    relation = testing.Relation("receive-ca-cert", remote_units_data={0: {"ca": encode(ca)}})
    context = ctx()
    out = context.run(context.on.config_changed(), with_relations(relation, leader=False))
    assert pushed_files(out, context, "demo")["/etc/demo/ca-bundle.pem"] == ca


@pytest.mark.parametrize("certificates", ["not json", '{"a": 1}', "[]"])
def test_malformed_or_empty_ca_data_is_waiting_not_a_crash(certificates: str) -> None:
    relation = testing.Relation(
        "receive-ca-cert", remote_app_data={"certificates": certificates, "version": "1"}
    )
    out = ctx().run(ctx().on.config_changed(), with_relations(relation))
    assert out.unit_status == testing.WaitingStatus("waiting for receive-ca-cert (certificates)")


# -- the files the k8s base pushes ---------------------------------------------


def test_the_context_holds_tls_and_ca_under_their_shared_names() -> None:
    state = state_with([certificates_fixture(app="demo"), ca_fixture()], base=base())
    context = ctx()
    with context(context.on.config_changed(), state) as manager:
        manager.run()
        charm_ctx = manager.charm.context
        assert charm_ctx.tls is not None and charm_ctx.tls.certificate_path == "/etc/demo/tls/cert.pem"
        assert charm_ctx.ca is not None and charm_ctx.ca.path == "/etc/demo/ca-bundle.pem"
        assert charm_ctx.scheme == "https"


def test_extra_files_hold_certificate_key_and_cas_with_safe_modes() -> None:
    state = state_with([certificates_fixture(app="demo"), ca_fixture()], base=base())
    context = ctx()
    with context(context.on.config_changed(), state) as manager:
        manager.run()
        charm = manager.charm
        files = {f.path: f for f in charm.trust_files(charm.context)}
    assert {p: (f.permissions, f.user, f.group) for p, f in files.items()} == {
        "/etc/demo/tls/cert.pem": (0o644, "demo", "demo"),
        "/etc/demo/tls/key.pem": (0o600, "demo", "demo"),
        "/etc/demo/tls/ca.pem": (0o644, "demo", "demo"),
        "/etc/demo/ca-bundle.pem": (0o644, "demo", "demo"),
    }
    assert "PRIVATE KEY" in files["/etc/demo/tls/key.pem"].content


def test_extra_files_are_empty_without_tls() -> None:
    context = ctx()
    with context(context.on.config_changed(), base()) as manager:
        manager.run()
        assert manager.charm.trust_files(manager.charm.context) == []


def test_ingress_host_name_joins_the_request_when_ingress_arrives() -> None:
    relation = testing.Relation("certificates", remote_app_name="self-signed-certificates")
    first = ctx().run(ctx().on.relation_created(relation), with_relations(relation))
    ingress = testing.Relation(
        "ingress-public",
        remote_app_name="traefik",
        remote_app_data={"ingress": json.dumps({"url": "https://cloud.example.com/openstack-demo"})},
    )
    state = dataclasses.replace(first, relations={*first.relations, ingress})
    out = ctx().run(ctx().on.relation_changed(ingress), state)
    [csr_pem] = csrs(out, relation.id)
    assert "cloud.example.com" in CertificateSigningRequest.from_string(csr_pem).sans_dns
    assert csrs(out, relation.id) != csrs(first, relation.id)


def test_steady_hooks_serve_the_cached_certificate_without_the_library() -> None:
    relation = testing.Relation("certificates", remote_app_name="self-signed-certificates")
    first = ctx().run(ctx().on.relation_created(relation), with_relations(relation))
    answered = dataclasses.replace(
        first, relations={*(r for r in first.relations if r.id != relation.id), issue(first, relation)}
    )
    served = ctx().run(ctx().on.relation_changed(answered.get_relation(relation.id)), answered)
    cache = next(s for s in served.secrets if s.label == "tls-certificate")
    assert cache.owner == "unit"
    assert cache.tracked_content["private-key"].strip() == private_key(served).strip()
    context = ctx()
    with context(context.on.config_changed(), served) as manager:
        out = manager.run()
        assert manager.charm.certificates.library is None, "config-changed built the TLS library"
    assert out.unit_status == testing.ActiveStatus()
    files = pushed_files(out, context, "demo")
    assert files["/etc/demo/tls/key.pem"].strip() == private_key(served).strip()


def test_removing_the_relation_forgets_the_cached_certificate() -> None:
    relation = testing.Relation("certificates", remote_app_name="self-signed-certificates")
    first = ctx().run(ctx().on.relation_created(relation), with_relations(relation))
    answered = dataclasses.replace(
        first, relations={*(r for r in first.relations if r.id != relation.id), issue(first, relation)}
    )
    served = ctx().run(ctx().on.relation_changed(answered.get_relation(relation.id)), answered)
    assert any(s.label == "tls-certificate" for s in served.secrets)
    out = ctx().run(ctx().on.relation_broken(served.get_relation(relation.id)), served)
    assert not any(s.label == "tls-certificate" for s in out.secrets)


def test_an_unusable_private_key_secret_is_named_as_this_units_not_the_providers() -> None:
    relation = testing.Relation("certificates", remote_app_name="vault")
    first = ctx().run(ctx().on.relation_created(relation), with_relations(relation))
    garbled = [
        dataclasses.replace(
            s, tracked_content={"private-key": "garbage"}, latest_content={"private-key": "garbage"}
        )
        if s.owner == "unit" and "private-key" in s.tracked_content
        else s
        for s in first.secrets
    ]
    out = ctx().run(ctx().on.config_changed(), dataclasses.replace(first, secrets=garbled))
    assert out.unit_status == testing.WaitingStatus(
        "waiting for certificates (this unit's private key (its secret is unusable: ValueError))"
    )
