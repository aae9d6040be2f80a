"""How the sandbox reads a bundle: ours, stood in for, refused."""

from __future__ import annotations

import pathlib

import pytest
from openstack_charms.sandbox.cloud import BundleError, read_bundle
from openstack_charms.testing import REPO

BUNDLE = REPO / "bundles" / "openstack.yaml"
OVERLAYS = REPO / "bundles" / "overlays"


def test_the_default_bundle_is_our_charms_and_four_stand_ins() -> None:
    layout = read_bundle(BUNDLE)
    assert layout.apps == {
        "keystone": "keystone-k8s",
        "glance": "glance-k8s",
        "placement": "placement-k8s",
        "ovn-central": "ovn-central-k8s",
        "neutron": "neutron-k8s",
    }
    assert layout.stand_ins == {
        "mysql": "mysql-k8s",
        "rabbitmq": "rabbitmq-k8s",
        "traefik-public": "traefik-k8s",
        "traefik-internal": "traefik-k8s",
        "certificates": "self-signed-certificates",
    }
    # traefik-public has a certificate in the base bundle; both verify https units against the CA
    assert layout.tls_proxies == {"traefik-public"}
    assert layout.verifying_proxies == {"traefik-public", "traefik-internal"}
    assert ("glance:identity-service", "keystone:identity-service") in layout.relations
    assert not [r for r in layout.relations if r[0].startswith("traefik-public:")]
    assert len(layout.limits()) == 4


def test_overlays_are_merged_as_juju_merges_them() -> None:
    layout = read_bundle(BUNDLE, [OVERLAYS / "ha.yaml", OVERLAYS / "tls.yaml"])
    assert {app: layout.scale[app] for app in layout.apps} == {
        "keystone": 3,
        "glance": 3,
        "placement": 3,
        "ovn-central": 3,
        "neutron": 3,
    }
    assert layout.tls_proxies == layout.verifying_proxies == {"traefik-public", "traefik-internal"}
    assert ("keystone:certificates", "certificates:certificates") in layout.relations


def test_a_charm_neither_ours_nor_stood_in_for_is_refused(tmp_path: pathlib.Path) -> None:
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text("applications:\n  vault:\n    charm: vault-k8s\nrelations: []\n")
    with pytest.raises(BundleError, match=r"'vault' is charm 'vault-k8s': neither one of ours"):
        read_bundle(bundle)


def test_a_relation_no_stand_in_answers_is_refused(tmp_path: pathlib.Path) -> None:
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(
        "applications:\n  keystone:\n    charm: ../build/keystone-k8s.charm\n"
        "  db:\n    charm: rabbitmq-k8s\nrelations:\n  - [keystone:database, db:amqp]\n"
    )
    with pytest.raises(BundleError, match=r"db \(rabbitmq-k8s\) is related on keystone-k8s's database"):
        read_bundle(bundle)


def test_a_missing_bundle_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(BundleError, match="no such bundle"):
        read_bundle(tmp_path / "nope.yaml")
