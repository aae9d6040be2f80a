"""Every charm of bundles/openstack.yaml and the machine bundle in ops.testing, wired as they say.

Each combination of bundles/overlays/ (none, tls, ha, ha+tls) is simulated, with
bundles/hypervisor.yaml beside it (its saas resolved to the offers, as the
sandbox resolves them; its machine charms on fake hosts).

Our charms run for real, each unit of each application (``scale``) with its
own state; the charms we do not write (mysql-k8s, rabbitmq-k8s, traefik-k8s,
self-signed-certificates) answer with the data their real providers publish
(the fixtures in ``openstack_charms.testing``; the CA signs the requests our
units really made). Relation data and granted secrets are passed from each
side's output to the other's input, round after round, until nothing
changes; then every unit must be active. Keystone's REST calls go to an
in-memory keystone (its database, in effect).
"""

from __future__ import annotations

import pathlib
import re
import socket
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import ops
import pytest
from openstack_charms.relations.tls import CACHE_LABEL
from openstack_charms.sandbox.cloud import MACHINE_BUNDLE, MACHINE_OVERLAYS, read_bundle
from openstack_charms.sandbox.kubernetes import Kubernetes, real_kubernetes
from openstack_charms.testing import REPO, RelationFixture, fixture_for, merged_charmcraft, pushed_files
from openstack_charms.testing.bundle import combination_id, deployed, overlay_combinations
from openstack_charms.testing.model import Link, SimulatedModel
from openstack_charms.testing.relations import INGRESS_ADDRESSES, MODEL, ingress_fixture, signing_fixture
from ops import testing

BUNDLE = REPO / "bundles" / "openstack.yaml"
CA_CHARM = "self-signed-certificates"
MAX_ROUNDS = 8
#: what only the leader's files say: nova's one scheduler that maps new hypervisors, as nova advises
LEADER_ONLY = re.compile(r"^discover_hosts_in_cells_interval = .*$", re.MULTILINE)


def _our_charm(spec: dict[str, Any]) -> str | None:
    match = re.search(r"([a-z0-9-]+-k8s)(?:_[^/]*)?\.charm$", str(spec.get("charm", "")))
    return match.group(1) if match and (REPO / "charms" / match.group(1)).is_dir() else None


class Providers:
    """The charms we do not write, answering as the bundle relates them."""

    def __init__(self, bundle: Mapping[str, Any]) -> None:
        self.model: SimulatedModel | None = None
        cas = {f"{app}:certificates" for app, s in bundle["applications"].items() if s["charm"] == CA_CHARM}
        #: the applications with a certificate: traefik serves https then, and says so in its URLs
        self.tls_proxies = {
            end.split(":")[0]
            for a, b in bundle["relations"]
            for end in (a, b)
            if {a, b} & cas and end not in cas
        }

    def __call__(
        self, link: Link, _app_data: Mapping[str, str], _unit_data: Mapping[str, str]
    ) -> RelationFixture | None:
        if link.interface == "tls-certificates" and self.model is not None:
            _, units = self.model.requests(link)
            return signing_fixture(
                link.ours.endpoint, units.values(), remote_app=link.other.app, relation_id=link.id
            )
        if link.interface == "ingress":
            scheme = "https" if link.other.app in self.tls_proxies else "http"
            address = INGRESS_ADDRESSES.get(link.ours.endpoint, "10.20.2.10")
            url = f"{scheme}://{address}/{MODEL}-{link.ours.app}"
            return ingress_fixture(link.ours.endpoint, url, app=link.ours.app, remote_app=link.other.app)
        return fixture_for(link.ours.endpoint, link.interface, link.ours.app)


@pytest.fixture(autouse=True)
def kubernetes() -> Iterator[Kubernetes]:
    """The Kubernetes API the trusted charms (ovn-relay's LoadBalancer service) call."""
    api = Kubernetes(lambda: "10.27.5.1", lambda app: [])
    with real_kubernetes(api):
        yield api


@pytest.fixture
def keystone_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    src = REPO / "charms" / "keystone-k8s" / "src"
    sys.path.insert(0, str(src))
    sys.path.insert(0, str(REPO / "tests" / "unit" / "keystone"))
    try:
        import keystone_api
        from fake_keystone import FakeKeystone

        fake = FakeKeystone()
        monkeypatch.setattr(keystone_api, "KeystoneAPI", fake)
        yield fake
    finally:
        sys.path.remove(str(src))
        sys.path.remove(str(REPO / "tests" / "unit" / "keystone"))


def _certificate_names(pem: str) -> set[str]:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(pem.encode())
    return set(
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    )


@pytest.mark.parametrize("combo", overlay_combinations(), ids=combination_id)
def test_bundle_reaches_active(
    tmp_path: pathlib.Path, keystone_db: Any, combo: tuple[pathlib.Path, ...]
) -> None:
    bundle = deployed(BUNDLE, combo)[0]
    layout = read_bundle(BUNDLE, combo, MACHINE_BUNDLE, MACHINE_OVERLAYS)
    ours = layout.apps
    assert {a for a, s in bundle["applications"].items() if _our_charm(s)} <= set(ours)
    assert layout.machines, "the machine bundle deploys none of our charms"
    scale = {app: layout.scale[app] for app in ours}
    providers = Providers(bundle)
    model = SimulatedModel(
        ours,
        layout.relations,
        providers,
        tmp_path,
        model=MODEL,
        config=layout.config,
        scale=scale,
        live={"tls-certificates"},
    )
    providers.model = model
    missing = [
        f"{lk.ours.app}:{lk.ours.endpoint} ({lk.interface})"
        for lk in model.links
        # the CA has an answer only once asked: it is there whatever the request
        if not lk.other_is_ours and lk.interface != "tls-certificates" and providers(lk, {}, {}) is None
    ]
    assert not missing, f"no stand-in for the external side of {missing}"

    model.settle(MAX_ROUNDS)
    statuses = model.unit_statuses()
    assert len(statuses) == sum(scale.values())
    assert all(isinstance(s, ops.ActiveStatus) for s in statuses.values()), statuses
    assert [u for u, s in model.unit_states.items() if s.leader] == [f"{app}/0" for app in ours]
    # every unit saw the others of its application, and every unit of ours across each relation
    for unit, state in model.unit_states.items():
        app, number = unit.split("/")
        for relation in state.relations:
            if isinstance(relation, testing.PeerRelation):
                assert set(relation.peers_data) == set(range(scale[app])) - {int(number)}, unit
            elif isinstance(relation, testing.Relation) and relation.remote_app_name in scale:
                assert set(relation.remote_units_data) == set(range(scale[relation.remote_app_name])), unit

    # the units of an application run the same service: the same files (keystone's fernet and
    # credential keys included) but for their own certificate and their own pod's name (a file
    # naming every pod, as OVN's raft members, is the same as it is)
    for app, units in model.units.items():
        seen: dict[str, dict[tuple[str, str], tuple[str, str]]] = {}
        for unit in units:
            pod = re.compile(rf"\b{re.escape(unit.replace('/', '-'))}\b")
            state = model.unit_states[unit]
            seen[unit] = {
                (c.name, path): (text, LEADER_ONLY.sub("", pod.sub("<pod>", text)))
                for c in state.containers
                for path, text in pushed_files(state, model.contexts[unit], c.name).items()
                # the charm's manifest holds digests of every file, the unit's own certificate among them
                if "/tls/" not in path and not path.startswith("/run/")
            }
        leader = seen[units[0]]
        # ovn-relay's only files are its TLS ones; a machine charm pushes nothing to Pebble
        if app in ("ovn-relay", *layout.machines):
            continue
        assert leader, app
        for unit in units[1:]:
            assert set(seen[unit]) == set(leader), f"{unit} has other files than the leader"
            differ = [
                k for k, (raw, own) in seen[unit].items() if raw != leader[k][0] and own != leader[k][1]
            ]
            assert not differ, f"{unit} differs from the leader in {differ}"

    # the identity-service flow really happened: every requirer got a service user in keystone
    users = {name for name, _ in keystone_db.users}
    for app, charm in ours.items():
        if "identity-service" in (merged_charmcraft(charm).get("requires") or {}):
            assert any(app.replace("-", "_") in u for u in users), f"no service user for {app}: {users}"

    # ... and its endpoints are in the catalog, each behind its ingress, https where traefik has TLS
    def scheme(proxy: str) -> str:
        return "https" if proxy in providers.tls_proxies else "http"

    # nova's clients expect its v2.1 API at the endpoint itself
    expected = {
        (interface, f"{scheme(proxy)}://{INGRESS_ADDRESSES[endpoint]}/{MODEL}-{app}{path}")
        for app, path in (("glance", ""), ("placement", ""), ("neutron", ""), ("nova", "/v2.1"))
        for interface, endpoint, proxy in (
            ("public", "ingress-public", "traefik-public"),
            ("internal", "ingress-internal", "traefik-internal"),
            ("admin", "ingress-internal", "traefik-internal"),
        )
    }
    assert {(interface, url) for (_, interface, _), url in keystone_db.endpoints.items()} == expected

    tls = "traefik-internal" in providers.tls_proxies
    # keystone's own URLs, which it hands its requirers
    keystone = model.states["keystone"]
    for relation in keystone.relations:
        if relation.endpoint == "identity-service":
            data = relation.local_app_data
            assert data["internal-auth-url"].startswith(f"{'https' if tls else 'http'}://"), data
            assert data["public-auth-url"].startswith("https://"), data

    # every unit related to the CA serves a certificate of its own, naming its pod (APIs: with TLS)
    certified = {end.split(":")[0] for r in layout.relations for end in r if end.endswith(":certificates")}
    for unit, state in model.unit_states.items():
        app, number = unit.split("/")
        served = [s for s in state.secrets if s.label == CACHE_LABEL]
        assert (app in certified) == bool(served), unit
        if not served:
            assert not served, unit
            continue
        assert served, f"{unit} serves no certificate"
        names = _certificate_names((served[0].latest_content or {})["certificate"])
        if app in layout.machines:
            # a machine's certificate names the machine (this one's host name, under a fake host)
            assert socket.getfqdn() in names, (unit, names)
            continue
        assert f"{app}-{number}.{app}-endpoints.{MODEL}.svc.cluster.local" in names, (unit, names)
