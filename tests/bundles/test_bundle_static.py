"""Static checks of every bundle in bundles/: what `juju deploy` would reject, found without Juju.

Each Kubernetes bundle is checked alone and with every combination of
bundles/overlays/ applied as ``--overlay`` applies them; the machine bundle
(hypervisor.yaml, whose ``saas`` consume openstack.yaml's offers) alone and with
each of bundles/hypervisor-overlays/.

Every charm a bundle names exists (ours under charms/, the others in
EXTERNAL_CHARMS below), every relation joins a requirer and a provider endpoint
that exist and speak the same interface, our charms get their OCI resources and
every mandatory relation, and the offers (in overlay documents, where Juju takes
them) name endpoints that exist.
"""

from __future__ import annotations

import copy
import pathlib
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from openstack_charms.testing import CHARMS, REPO, merged_charmcraft
from openstack_charms.testing.bundle import (
    apply_overlays,
    combination_id,
    overlay_combinations,
    overlay_errors,
)

BUNDLES = sorted((REPO / "bundles").glob("*.yaml"))
MACHINE_BUNDLES = [b for b in BUNDLES if b.name == "hypervisor.yaml"]
K8S_BUNDLES = [b for b in BUNDLES if b not in MACHINE_BUNDLES]
MACHINE_OVERLAYS = sorted((REPO / "bundles" / "hypervisor-overlays").glob("*.yaml"))
#: charms written and unit-tested that no bundle deploys yet, each with what it waits for; a charm
#: leaves this list when the sandbox runs it (and then must be in its bundle)
NOT_YET_DEPLOYED: dict[str, str] = {}

# Endpoints of the charms we deploy but do not write: {charm: {role: {endpoint: interface}}}.
# Taken from each charm's own metadata in its repository:
#   mysql-k8s                canonical/mysql-k8s-operator            metadata.yaml
#   rabbitmq-k8s             canonical/charm-rabbitmq-k8s            charmcraft.yaml
#   traefik-k8s              canonical/traefik-k8s-operator          metadata.yaml
#   self-signed-certificates canonical/self-signed-certificates-operator charmcraft.yaml
EXTERNAL_CHARMS: dict[str, dict[str, dict[str, str]]] = {
    "mysql-k8s": {
        "provides": {
            "database": "mysql_client",
            "mysql": "mysql",
            "mysql-root": "mysql",
            "metrics-endpoint": "prometheus_scrape",
            "grafana-dashboard": "grafana_dashboard",
        },
        "requires": {"certificates": "tls-certificates", "s3-parameters": "s3", "logging": "loki_push_api"},
        "peers": {"database-peers": "mysql_peers", "upgrade": "upgrade"},
    },
    "rabbitmq-k8s": {
        "provides": {
            "amqp": "rabbitmq",
            "grafana-dashboard": "grafana_dashboard",
            "metrics-endpoint": "prometheus_scrape",
        },
        "requires": {
            "ingress": "ingress",
            "logging": "loki_push_api",
            "charm-tracing": "tracing",
            "receive-ca-cert": "certificate_transfer",
        },
        "peers": {"peers": "rabbitmq-peer"},
    },
    "traefik-k8s": {
        "provides": {
            "ingress": "ingress",
            "ingress-per-unit": "ingress_per_unit",
            "metrics-endpoint": "prometheus_scrape",
            "traefik-route": "traefik_route",
            "grafana-dashboard": "grafana_dashboard",
        },
        "requires": {
            "certificates": "tls-certificates",
            "experimental-forward-auth": "forward_auth",
            "logging": "loki_push_api",
            "tracing": "tracing",
            "receive-ca-cert": "certificate_transfer",
        },
        "peers": {"peers": "traefik_peers"},
    },
    "self-signed-certificates": {
        "provides": {"certificates": "tls-certificates", "send-ca-cert": "certificate_transfer"},
        "requires": {"tracing": "tracing"},
        "peers": {},
    },
}

# Keys Juju's bundle format knows (juju/charm bundledata.go: BundleData, ApplicationSpec, OfferSpec).
BUNDLE_KEYS = {
    "bundle",
    "applications",
    "machines",
    "saas",
    "series",
    "default-base",
    "relations",
    "tags",
    "description",
}
APPLICATION_KEYS = {
    "charm",
    "channel",
    "revision",
    "series",
    "base",
    "resources",
    "num_units",
    "scale",
    "to",
    "placement",
    "expose",
    "exposed-endpoints",
    "options",
    "annotations",
    "constraints",
    "storage",
    "devices",
    "bindings",
    "offers",
    "plan",
    "trust",
}
OFFER_KEYS = {"endpoints", "acl"}
ROLES = ("requires", "provides", "peers")


def local_charm_name(charm: str) -> str | None:
    """Our charm's name for a local path such as ../build/keystone-k8s.charm, else None."""
    if not charm.startswith((".", "/")):
        return None
    return pathlib.PurePosixPath(charm).name.removesuffix(".charm")


def charm_endpoints(charm: str) -> tuple[dict[str, dict[str, str]], Mapping[str, Any] | None]:
    """({role: {endpoint: interface}}, our merged metadata or None) for a bundle's charm value."""
    name = local_charm_name(charm)
    if name is None:
        return EXTERNAL_CHARMS[charm], None
    meta = merged_charmcraft(name)
    return {
        role: {ep: spec["interface"] for ep, spec in (meta.get(role) or {}).items()} for role in ROLES
    }, meta


def load(bundle: pathlib.Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(bundle.read_text()))


def offered_endpoints(docs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, str]]]:
    """A k8s bundle's offers as a consumer sees them: offer name -> {role: {endpoint: interface}}."""
    apps = docs[0]["applications"]
    offers: dict[str, dict[str, dict[str, str]]] = {}
    for overlay in docs[1:]:
        for app, spec in (overlay.get("applications") or {}).items():
            roles = charm_endpoints(apps[app]["charm"])[0]
            for offer, ospec in (spec.get("offers") or {}).items():
                offered = set(ospec.get("endpoints") or [])
                offers[offer] = {
                    r: {e: i for e, i in eps.items() if e in offered} for r, eps in roles.items()
                }
    return offers


def bundle_errors(
    docs: list[dict[str, Any]],
    bundle_dir: pathlib.Path,
    offers: Mapping[str, dict[str, dict[str, str]]] | None = None,
) -> list[str]:
    """Everything wrong with a bundle (base document and overlays), as readable strings.

    With ``offers`` (a k8s bundle's, :func:`offered_endpoints`) the bundle is a machine
    bundle whose ``saas`` consume them: no ``bundle: kubernetes``, machine charms, units.
    """
    errors: list[str] = []
    base, overlays = docs[0], docs[1:]
    errors += [f"unknown top-level key {k!r}" for k in base if k not in BUNDLE_KEYS]
    if offers is None and base.get("bundle") != "kubernetes":
        errors.append(f"bundle: must be 'kubernetes', not {base.get('bundle')!r}")
    if offers is not None and "bundle" in base:
        errors.append(f"bundle: a machine bundle has no 'bundle' key, not {base['bundle']!r}")
    applications: dict[str, Any] = base.get("applications") or {}
    if not applications:
        errors.append("applications: none")

    endpoints: dict[str, dict[str, dict[str, str]]] = {}
    metas: dict[str, Mapping[str, Any]] = {}
    for name, spec in (base.get("saas") or {}).items():
        offer = str((spec or {}).get("url", "")).rsplit(".", 1)[-1]
        if offers is None:
            errors.append(f"saas {name!r}: a Kubernetes bundle here consumes no offer")
        elif offer not in offers:
            errors.append(f"saas {name!r}: offer {offer!r} is not one openstack.yaml makes")
        else:
            endpoints[name] = offers[offer]
    for app, spec in applications.items():
        if offers is not None and "scale" in spec:
            errors.append(f"{app}: a machine application has num_units, not scale")
        errors += [f"{app}: unknown key {k!r}" for k in spec if k not in APPLICATION_KEYS]
        if "offers" in spec:
            errors.append(f"{app}: offers are taken only from overlays, not the base bundle")
        charm = spec.get("charm", "")
        name = local_charm_name(charm)
        if name is not None:
            if not (CHARMS / name / "charmcraft.yaml").is_file():
                errors.append(f"{app}: charm {charm!r}: no charms/{name}/charmcraft.yaml")
                continue
            if (bundle_dir / charm).resolve().parent != (REPO / "build").resolve():
                errors.append(f"{app}: charm {charm!r} is not where `tox -e build` puts build/{name}.charm")
        elif charm not in EXTERNAL_CHARMS:
            errors.append(f"{app}: charm {charm!r} is neither ours nor a known external charm")
            continue
        elif "channel" not in spec:
            errors.append(f"{app}: charm {charm!r} from Charmhub without a channel")
        endpoints[app], meta = charm_endpoints(charm)
        if meta is not None:
            metas[app] = meta
            errors += _local_charm_errors(app, spec, meta)
            if offers is not None and meta.get("containers"):
                errors.append(f"{app}: {name} is a Kubernetes charm, in a machine bundle")

    related: Counter[tuple[str, str]] = Counter()
    seen: set[frozenset[str]] = set()
    for relation in base.get("relations") or []:
        if not (isinstance(relation, list) and len(relation) == 2 and all(":" in str(e) for e in relation)):
            errors.append(f"relation {relation!r}: must be two 'application:endpoint' strings")
            continue
        key = frozenset(relation)
        if key in seen:
            errors.append(f"relation {relation!r}: listed twice")
        seen.add(key)
        sides = []
        for end in relation:
            app, endpoint = end.split(":", 1)
            if app not in endpoints:
                errors.append(f"relation {relation!r}: no application {app!r}")
                break
            found = [(role, eps[endpoint]) for role, eps in endpoints[app].items() if endpoint in eps]
            if not found:
                errors.append(f"relation {relation!r}: {app} has no endpoint {endpoint!r}")
                break
            sides.append((app, endpoint, *found[0]))
            related[(app, endpoint)] += 1
        else:
            (_, _, role_a, iface_a), (_, _, role_b, iface_b) = sides
            if {role_a, role_b} != {"requires", "provides"}:
                errors.append(
                    f"relation {relation!r}: roles {role_a}/{role_b}, must be one requirer and one provider"
                )
            if iface_a != iface_b:
                errors.append(f"relation {relation!r}: interfaces differ ({iface_a} vs {iface_b})")

    for app, meta in metas.items():
        for endpoint, spec in (meta.get("requires") or {}).items():
            if not spec.get("optional", False) and not related[(app, endpoint)]:
                errors.append(f"{app}: mandatory endpoint {endpoint!r} is not related")
        for role in ("requires", "provides"):
            for endpoint, spec in (meta.get(role) or {}).items():
                limit = spec.get("limit")
                if limit is not None and related[(app, endpoint)] > limit:
                    errors.append(
                        f"{app}: {related[(app, endpoint)]} relations on {endpoint!r}, limit {limit}"
                    )

    for i, overlay in enumerate(overlays, start=1):
        for app, spec in (overlay.get("applications") or {}).items():
            if app not in endpoints:
                errors.append(f"overlay {i}: application {app!r} is not in the base bundle")
                continue
            for offer, ospec in (spec.get("offers") or {}).items():
                errors += [
                    f"overlay {i}: offer {offer!r}: unknown key {k!r}" for k in ospec if k not in OFFER_KEYS
                ]
                offered = ospec.get("endpoints") or []
                if not offered:
                    errors.append(f"overlay {i}: offer {offer!r} has no endpoints")
                for endpoint in offered:
                    if not any(endpoint in endpoints[app][role] for role in ("requires", "provides")):
                        errors.append(f"overlay {i}: offer {offer!r}: {app} has no endpoint {endpoint!r}")
    return errors


def _local_charm_errors(app: str, spec: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    errors = []
    resources = meta.get("resources") or {}
    given = spec.get("resources") or {}
    for name, rspec in resources.items():
        if name not in given:
            errors.append(f"{app}: resource {name!r} not given (a local charm needs its OCI image)")
        elif rspec.get("type") == "oci-image" and given[name] != rspec.get("upstream-source"):
            errors.append(
                f"{app}: resource {name!r} is {given[name]!r}, "
                f"the charm's image is {rspec['upstream-source']!r}"
            )
    errors += [
        f"{app}: resource {name!r} is not declared by the charm" for name in given if name not in resources
    ]
    storage = meta.get("storage") or {}
    errors += [
        f"{app}: storage {name!r} is not declared by the charm"
        for name in spec.get("storage") or {}
        if name not in storage
    ]
    return errors


def test_there_are_bundles():
    assert BUNDLES, "no bundles/*.yaml"


@pytest.mark.parametrize("bundle", K8S_BUNDLES, ids=lambda p: p.name)
def test_bundle_is_consistent(bundle: pathlib.Path):
    assert bundle_errors(load(bundle), bundle.parent) == []


@pytest.mark.parametrize("overlay", [None, *MACHINE_OVERLAYS], ids=lambda p: p.name if p else "none")
@pytest.mark.parametrize("bundle", MACHINE_BUNDLES, ids=lambda p: p.name)
def test_machine_bundle_consumes_the_offers_consistently(bundle: pathlib.Path, overlay: pathlib.Path | None):
    offers = offered_endpoints(load(REPO / "bundles" / "openstack.yaml"))
    docs, extra = load(bundle), load(overlay) if overlay else []
    assert (
        overlay_errors(docs, extra) + bundle_errors(apply_overlays(docs, extra), bundle.parent, offers) == []
    )


def test_every_machine_charm_is_in_the_machine_bundle():
    deployed = {
        local_charm_name(s["charm"]) for b in MACHINE_BUNDLES for s in load(b)[0]["applications"].values()
    }
    machine = {
        p.parent.name
        for p in CHARMS.glob("*/charmcraft.yaml")
        if not merged_charmcraft(p.parent.name).get("containers")
    }
    assert machine and machine - deployed == machine & set(NOT_YET_DEPLOYED)
    assert not deployed & set(NOT_YET_DEPLOYED), "a deployed charm is still listed as not yet deployed"


def test_a_saas_of_an_offer_not_made_is_caught():
    offers = offered_endpoints(load(REPO / "bundles" / "openstack.yaml"))
    docs = load(REPO / "bundles" / "hypervisor.yaml")
    docs[0]["saas"]["ovsdb-cms"]["url"] = "admin/openstack.ovsdb"
    docs[0]["relations"].append(["ovn-chassis:certificates", "keystone:certificates"])
    errors = bundle_errors(docs, REPO / "bundles", offers)
    assert "saas 'ovsdb-cms': offer 'ovsdb' is not one openstack.yaml makes" in errors
    assert (
        "relation ['ovn-chassis:certificates', 'keystone:certificates']: no application 'keystone'" in errors
    )
    assert "ovn-chassis: mandatory endpoint 'ovsdb-cms' is not related" not in errors


def test_every_k8s_charm_is_in_the_openstack_bundle():
    base = load(REPO / "bundles" / "openstack.yaml")[0]
    deployed = {local_charm_name(spec["charm"]) for spec in base["applications"].values()}
    k8s = {
        p.parent.name
        for p in CHARMS.glob("*/charmcraft.yaml")
        if merged_charmcraft(p.parent.name).get("containers")
    }
    assert k8s, "no k8s charm under charms/"
    assert k8s - deployed == k8s & set(NOT_YET_DEPLOYED)
    assert not deployed & set(NOT_YET_DEPLOYED), "a deployed charm is still listed as not yet deployed"


def test_external_charm_data_is_well_formed():
    for charm, roles in EXTERNAL_CHARMS.items():
        assert set(roles) == set(ROLES), charm
        names = [ep for eps in roles.values() for ep in eps]
        assert len(names) == len(set(names)), f"{charm}: an endpoint under two roles"


# -- the checks catch what they should ------------------------------------------------


@pytest.fixture
def docs() -> list[dict[str, Any]]:
    return load(REPO / "bundles" / "openstack.yaml")


def errors_after(docs: list[dict[str, Any]], change: Any) -> list[str]:
    docs = copy.deepcopy(docs)
    change(docs)
    return bundle_errors(docs, REPO / "bundles")


def test_unknown_endpoint_is_caught(docs: list[dict[str, Any]]):
    def change(d: list[dict[str, Any]]) -> None:
        d[0]["relations"].append(["glance:databse", "mysql:database"])

    assert "relation ['glance:databse', 'mysql:database']: glance has no endpoint 'databse'" in errors_after(
        docs, change
    )


def test_interface_mismatch_is_caught(docs: list[dict[str, Any]]):
    def change(d: list[dict[str, Any]]) -> None:
        d[0]["relations"].append(["glance:amqp", "mysql:database"])

    errors = errors_after(docs, change)
    assert (
        "relation ['glance:amqp', 'mysql:database']: interfaces differ (rabbitmq vs mysql_client)" in errors
    )


def test_two_requirers_are_caught(docs: list[dict[str, Any]]):
    def change(d: list[dict[str, Any]]) -> None:
        d[0]["relations"].append(["glance:ingress-public", "rabbitmq:ingress"])

    errors = errors_after(docs, change)
    assert (
        "relation ['glance:ingress-public', 'rabbitmq:ingress']: roles requires/requires, "
        "must be one requirer and one provider" in errors
    )
    assert "glance: 2 relations on 'ingress-public', limit 1" in errors


def test_missing_mandatory_relation_is_caught(docs: list[dict[str, Any]]):
    def change(d: list[dict[str, Any]]) -> None:
        d[0]["relations"] = [r for r in d[0]["relations"] if "placement:database" not in r]

    assert "placement: mandatory endpoint 'database' is not related" in errors_after(docs, change)


def test_unknown_charm_and_missing_resource_are_caught(docs: list[dict[str, Any]]):
    def change(d: list[dict[str, Any]]) -> None:
        d[0]["applications"]["mysql"]["charm"] = "mariadb-k8s"
        del d[0]["applications"]["keystone"]["resources"]

    errors = errors_after(docs, change)
    assert "mysql: charm 'mariadb-k8s' is neither ours nor a known external charm" in errors
    assert "keystone: resource 'keystone-image' not given (a local charm needs its OCI image)" in errors


def test_offer_of_a_missing_endpoint_is_caught(docs: list[dict[str, Any]]):
    def change(d: list[dict[str, Any]]) -> None:
        d[1]["applications"]["keystone"]["offers"]["keystone-credentials"]["endpoints"] = ["credentials"]

    assert "overlay 1: offer 'keystone-credentials': keystone has no endpoint 'credentials'" in errors_after(
        docs, change
    )


# -- overlays -------------------------------------------------------------------------

COMBINATIONS = overlay_combinations()
API_APPS = ("keystone", "glance", "placement", "neutron", "nova")
#: what the HA overlay runs three units of: every API, the OVN raft cluster and its relays
HA_APPS = (*API_APPS, "ovn-central", "ovn-relay")


def overlay_docs(combo: tuple[pathlib.Path, ...]) -> list[dict[str, Any]]:
    return [doc for path in combo for doc in load(path)]


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combination_id)
@pytest.mark.parametrize("bundle", K8S_BUNDLES, ids=lambda p: p.name)
def test_bundle_with_overlays_is_consistent(bundle: pathlib.Path, combo: tuple[pathlib.Path, ...]):
    docs, extra = load(bundle), overlay_docs(combo)
    assert overlay_errors(docs, extra) + bundle_errors(apply_overlays(docs, extra), bundle.parent) == []


def test_there_are_tls_and_ha_overlays():
    assert {combination_id(c) for c in COMBINATIONS} >= {"none", "tls", "ha", "ha+tls"}


def _deployed(*names: str) -> dict[str, Any]:
    combo = tuple(REPO / "bundles" / "overlays" / f"{n}.yaml" for n in names)
    return apply_overlays(load(REPO / "bundles" / "openstack.yaml"), overlay_docs(combo))[0]


def test_tls_overlay_relates_every_api_to_the_ca():
    base = _deployed("tls")
    related = {end for r in base["relations"] for end in r if any("certificates:" in e for e in r)}
    for app in API_APPS:
        requires = charm_endpoints(base["applications"][app]["charm"])[0]["requires"]
        for endpoint in ("certificates", "receive-ca-cert"):
            if endpoint in requires:
                assert f"{app}:{endpoint}" in related, f"{app}:{endpoint} is not related to certificates"
    # the internal catalog URLs are traefik-internal's: https only once it has a certificate
    assert "traefik-internal:certificates" in related
    # and the proxies, whose backends now speak https, verify them against the CA
    assert {"traefik-internal:receive-ca-cert", "traefik-public:receive-ca-cert"} <= related


def test_ha_overlay_scales_every_api_and_ovn_and_keeps_the_rest():
    plain, ha = _deployed(), _deployed("ha")
    for app, spec in ha["applications"].items():
        expected = (
            {**plain["applications"][app], "scale": 3} if app in HA_APPS else plain["applications"][app]
        )
        assert spec == expected, app
    assert ha["relations"] == plain["relations"]


# -- apply_overlays does what `juju deploy --overlay` does ------------------------------


BASE: dict[str, Any] = {
    "bundle": "kubernetes",
    "applications": {
        "a": {"charm": "x", "scale": 1, "options": {"debug": False, "region": "One"}},
        "b": {"charm": "y", "scale": 1},
    },
    "relations": [["a:db", "b:db"]],
}


def test_an_overlay_overrides_application_keys():
    over = {"applications": {"a": {"scale": 3, "options": {"debug": True}}}}
    (merged,) = apply_overlays([BASE], [over])
    assert merged["applications"]["a"] == {
        "charm": "x",
        "scale": 3,
        "options": {"debug": True, "region": "One"},
    }
    assert merged["applications"]["b"] == BASE["applications"]["b"]
    assert BASE["applications"]["a"]["scale"] == 1, "the base documents are left as they were"


def test_an_overlay_adds_relations_once():
    over = {"relations": [["b:db", "a:db"], ["a:tls", "b:tls"], ["a:tls", "b:tls"]]}
    (merged,) = apply_overlays([BASE], [over, {"relations": [["b:tls", "a:tls"]]}])
    assert merged["relations"] == [["a:db", "b:db"], ["a:tls", "b:tls"]]


def test_an_overlay_adds_and_removes_applications():
    over = {"applications": {"c": {"charm": "z"}, "b": None}, "relations": [["a:x", "c:x"]]}
    (merged,) = apply_overlays([BASE], [over])
    assert set(merged["applications"]) == {"a", "c"}
    assert merged["relations"] == [["a:x", "c:x"]]


def test_offers_stay_in_an_overlay_document():
    offers = {"applications": {"a": {"offers": {"a-db": {"endpoints": ["db"]}}}}}
    merged, overlay = apply_overlays([BASE, offers], [{"applications": {"a": {"scale": 2}}}])
    assert "offers" not in merged["applications"]["a"]
    assert merged["applications"]["a"]["scale"] == 2
    assert overlay == offers


def test_overlay_of_a_missing_application_is_caught(docs: list[dict[str, Any]]):
    over = {"applications": {"keystne": {"scale": 3}}}
    assert overlay_errors(docs, [over]) == [
        "overlay: application 'keystne' is not in the bundle and names no charm"
    ]
    related = {"relations": [["keystne:certificates", "certificates:certificates"]]}
    assert (
        "relation ['keystne:certificates', 'certificates:certificates']: no application 'keystne'"
        in bundle_errors(apply_overlays(docs, [related]), REPO / "bundles")
    )


def test_overlay_of_a_missing_endpoint_is_caught(docs: list[dict[str, Any]]):
    # keystone calls no other service over TLS: it has no receive-ca-cert to relate
    over = {"relations": [["keystone:receive-ca-cert", "certificates:send-ca-cert"]]}
    assert (
        "relation ['keystone:receive-ca-cert', 'certificates:send-ca-cert']: "
        "keystone has no endpoint 'receive-ca-cert'"
        in bundle_errors(apply_overlays(docs, [over]), REPO / "bundles")
    )
