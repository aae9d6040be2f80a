"""How the sandbox reads a bundle: ours, stood in for, refused."""

from __future__ import annotations

import pathlib

import pytest
from openstack_charms.sandbox.cloud import MACHINE_BUNDLE, MACHINE_OVERLAYS, BundleError, read_bundle
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
        "ovn-relay": "ovn-relay-k8s",
        "neutron": "neutron-k8s",
        "nova": "nova-k8s",
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
    # the four stand-ins, and the Kubernetes API ovn-relay's LoadBalancer service needs
    assert len(layout.limits()) == 5
    assert layout.limits()[-1].startswith("the Kubernetes API (trusted charms): Services only")
    assert layout.machines == set()


def test_the_machine_bundle_consumes_the_offers_as_direct_relations() -> None:
    layout = read_bundle(BUNDLE, (), MACHINE_BUNDLE, MACHINE_OVERLAYS)
    assert layout.machines == {"ovn-chassis", "openstack-hypervisor"}
    assert layout.apps["ovn-chassis"] == "ovn-chassis"
    assert layout.scale["ovn-chassis"] == layout.scale["openstack-hypervisor"] == 1
    # guests under QEMU's emulation: the second overlay
    assert layout.config["openstack-hypervisor"] == {"virt-type": "qemu"}
    # the overlay's userspace datapath on top of the bundle's options
    assert layout.config["ovn-chassis"] == {
        "ovn-bridge-mappings": "physnet1:br-ex",
        "enable-chassis-as-gw": True,
        "datapath-type": "netdev",
    }
    # saas ovsdb-cms is the offer of ovn-relay:ovsdb-cms-relay; saas certificates the CA's
    assert ("ovn-chassis:ovsdb-cms", "ovn-relay:ovsdb-cms-relay") in layout.relations
    assert ("ovn-chassis:certificates", "certificates:certificates") in layout.relations
    assert ("ovn-chassis:receive-ca-cert", "certificates:send-ca-cert") in layout.relations
    # both on the bundle's machine 0: the hypervisor is a chassis
    assert layout.placement == {"ovn-chassis/0": "0", "openstack-hypervisor/0": "0"}
    assert ("openstack-hypervisor:nova-service", "nova:nova-service") in layout.relations
    assert ("openstack-hypervisor:identity-credentials", "keystone:identity-credentials") in layout.relations
    assert ("openstack-hypervisor:amqp", "rabbitmq:amqp") in layout.relations
    assert "(machines): namespaces per machine" in layout.limits()[-1]
    assert {"openvswitch-switch", "ovn-host", "libvirt-daemon-system", "qemu-system-x86"} <= layout.packages()


def test_a_saas_of_an_offer_no_bundle_makes_is_refused(tmp_path: pathlib.Path) -> None:
    machines = tmp_path / "machines.yaml"
    machines.write_text(
        "saas:\n  sb:\n    url: admin/openstack.southbound\napplications:\n"
        "  ovn-chassis:\n    charm: ../build/ovn-chassis.charm\nrelations:\n  - [ovn-chassis:ovsdb-cms, sb]\n"
    )
    with pytest.raises(BundleError, match=r"saas 'sb' consumes offer 'southbound', which no bundle offers"):
        read_bundle(BUNDLE, (), machines)
    machines.write_text("applications:\n  keystone:\n    charm: ../build/keystone-k8s.charm\nrelations: []\n")
    with pytest.raises(
        BundleError, match=r"'keystone' is '../build/keystone-k8s.charm', not one of our machine"
    ):
        read_bundle(BUNDLE, (), machines)


def test_a_placement_on_a_machine_the_bundle_lacks_is_refused(tmp_path: pathlib.Path) -> None:
    machines = tmp_path / "machines.yaml"
    machines.write_text(
        'machines:\n  "0": {}\napplications:\n  ovn-chassis:\n    charm: ../build/ovn-chassis.charm\n'
        '    num_units: 1\n    to: ["1"]\nrelations: []\n'
    )
    with pytest.raises(BundleError, match=r"'ovn-chassis': 'to' must name at most num_units of the bundle's"):
        read_bundle(BUNDLE, (), machines)


def test_overlays_are_merged_as_juju_merges_them() -> None:
    layout = read_bundle(BUNDLE, [OVERLAYS / "ha.yaml", OVERLAYS / "tls.yaml"])
    assert {app: layout.scale[app] for app in layout.apps} == {
        "keystone": 3,
        "glance": 3,
        "placement": 3,
        "ovn-central": 3,
        "ovn-relay": 3,
        "neutron": 3,
        "nova": 3,
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
