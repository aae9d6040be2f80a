"""keystone-k8s: its own files and commands run a keystone that issues and validates tokens."""

from __future__ import annotations

import pathlib
from typing import Any

from clients import Credentials, openstack, openstack_json, validate_token, write_clouds_yaml
from openstack_charms.sandbox.cloud import Cloud
from openstack_charms.sandbox.providers import CREDENTIALS_USER

CLOUD = "sandbox"


def test_every_charm_is_active_with_its_real_services(cloud: Cloud) -> None:
    assert {app: s.name for app, s in cloud.model.statuses().items()} == {
        "keystone": "active",
        "glance": "active",
        "placement": "active",
        "ovn-central": "active",
        "ovn-relay": "active",
        "neutron": "active",
        "nova": "active",
        "ovn-chassis": "active",
        "openstack-hypervisor": "active",
    }
    assert {name for _, name in cloud.machine.processes} == {
        "keystone-api",
        "glance-api",
        "placement-api",
        "ovn-nb-db-server",
        "ovn-sb-db-server",
        "ovn-northd",
        "neutron-api",
        "neutron-periodic-workers",
        "neutron-ovn-maintenance-worker",
        # ovn-relay's
        "ovsdb-server",
        "nova-api",
        "nova-metadata",
        "nova-scheduler",
        "nova-conductor",
        "nova-spicehtml5proxy",
    }
    # and on the chassis' machine, the packages' systemd units, split as Open vSwitch splits them
    machine = cloud.hosts["ovn-chassis/0"]
    units = ("openvswitch-switch", "ovsdb-server", "ovs-vswitchd", "ovn-controller")
    assert {name: machine.running(name) for name in units} == dict.fromkeys(units, True)
    # the hypervisor's, on the same machine: libvirt's split units, nova-compute and the agent
    units = ("libvirtd", "virtlogd", "virtlockd", "nova-compute", "neutron-ovn-metadata-agent")
    hypervisor = cloud.hosts["openstack-hypervisor/0"]
    assert {name: hypervisor.running(name) for name in units} == dict.fromkeys(units, True)


def test_token_issue_with_the_clouds_yaml_of_get_admin_account(
    venv: pathlib.Path, admin: dict[str, Any]
) -> None:
    token = openstack_json(venv, admin["clouds_yaml"], CLOUD, "token", "issue")
    assert token["id"] and token["project_id"]


def _keys(cloud: Cloud, directory: str) -> dict[str, str]:
    return {
        p.name: p.read_text() for p in sorted(cloud.machine.path("keystone", "keystone", directory).iterdir())
    }


def test_old_tokens_validate_after_rotate_fernet_keys(
    cloud: Cloud, venv: pathlib.Path, admin: dict[str, Any]
) -> None:
    auth_url = admin["results"]["public-endpoint"]
    before = openstack_json(venv, admin["clouds_yaml"], CLOUD, "token", "issue")["id"]
    keys_before = _keys(cloud, "/etc/keystone/fernet-keys")

    results = cloud.model.run_action("keystone", "rotate-fernet-keys")
    assert results["applied"] == "now"
    keys_after = _keys(cloud, "/etc/keystone/fernet-keys")
    # the staged key became the new primary (highest index), a new key is staged
    assert max(keys_after, key=int) == str(int(max(keys_before, key=int)) + 1)
    assert keys_after[max(keys_after, key=int)] == keys_before["0"]
    assert keys_after["0"] != keys_before["0"]

    after = openstack_json(venv, admin["clouds_yaml"], CLOUD, "token", "issue")["id"]
    assert validate_token(auth_url, after, before), "a token issued before the rotation no longer validates"
    assert validate_token(auth_url, before, after)
    assert not validate_token(auth_url, after, after[:-4] + "AAAA"), "a forged token validates"


def test_identity_credentials_account_authenticates(
    cloud: Cloud, venv: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    # the operator's tool's account (the hypervisor has one of its own)
    (link,) = [
        lk for lk in cloud.model.links if (lk.ours.app, lk.other.app) == ("keystone", "operator-tools")
    ]
    answer = next(r for r in cloud.model.states["keystone"].relations if r.id == link.id)
    data = dict(answer.local_app_data)
    secret = next(s for s in cloud.model.states["keystone"].secrets if s.id == data["credentials"])
    assert link.id in secret.remote_grants, "the credentials are not granted to the requirer"
    account = secret.latest_content
    assert account["username"] == CREDENTIALS_USER
    credentials = Credentials(
        auth_url=data["public-endpoint"],
        username=account["username"],
        password=account["password"],
        project_name=data["project-name"],
        user_domain_name=data["user-domain-name"],
        project_domain_name=data["project-domain-name"],
        region_name=data["region"],
    )
    assert cloud.ca is not None
    clouds_yaml = write_clouds_yaml(tmp_path / "clouds.yaml", CLOUD, credentials, cacert=cloud.ca.cert_path)
    token = openstack_json(venv, clouds_yaml, CLOUD, "token", "issue")
    assert token["project_id"] == data["project-id"]


def test_a_change_is_seen_by_every_worker(venv: pathlib.Path, admin: dict[str, Any]) -> None:
    # keystone runs several uwsgi workers: a per-worker cache would serve the old name from one of them
    role = openstack_json(venv, admin["clouds_yaml"], CLOUD, "role", "create", "functional-role")
    try:
        openstack(
            venv,
            admin["clouds_yaml"],
            CLOUD,
            "role",
            "set",
            "--name",
            "functional-renamed",
            role["id"],
            fmt=None,
        )
        names = {
            openstack_json(venv, admin["clouds_yaml"], CLOUD, "role", "show", role["id"])["name"]
            for _ in range(6)
        }
        assert names == {"functional-renamed"}
    finally:
        openstack(venv, admin["clouds_yaml"], CLOUD, "role", "delete", role["id"], fmt=None)
