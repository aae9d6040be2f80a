"""Tempest, OpenStack's own test suite, against the cloud the charms configured.

tempest 46.2.0 has identity, image, network and compute API tests but none
for placement (its API is exercised by nova's tests: servers are scheduled
through it); the placement round trip in test_placement.py tests it directly.
Compute's smoke tests boot the guest of :mod:`guest` under QEMU's emulation.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

from clients import openstack_json
from openstack_charms.sandbox.cloud import Cloud
from tempest_run import COMPUTE_SMOKE_REGEX, SMOKE_REGEX, TempestResult, run_tempest, write_tempest_conf


def this_cloud(
    cloud: Cloud, venv: pathlib.Path, admin: dict[str, Any], external_network: dict[str, Any]
) -> dict[str, dict[str, str]]:
    """What every tempest run is told of this cloud beyond its endpoints and admin account."""
    # the extensions this neutron serves, as devstack tells tempest (its built-in list names the
    # agents' schedulers, which OVN replaces)
    extensions = openstack_json(venv, admin["clouds_yaml"], admin["cloud"], "extension", "list", "--network")
    return {
        # the public endpoints are traefik-public's, with a certificate from the sandbox's CA
        "identity": {"ca_certificates_file": str(cloud.ca.cert_path) if cloud.ca else ""},
        # routers' gateways and floating IPs come from the operator's external network
        "network": {
            "public_network_id": external_network["network"]["id"],
            "floating_network_name": external_network["network"]["name"],
        },
        "network-feature-enabled": {"api_extensions": ",".join(sorted(e["Alias"] for e in extensions))},
    }


def server_errors(cloud: Cloud) -> str:
    """The ingress's log lines of the requests answered with a 5xx (HAProxy's own 503s among them)."""
    if cloud.ingress is None or not cloud.ingress.log.exists():
        return ""
    lines = cloud.ingress.log.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if re.search(r" 5\d\d \d+ ", line))[-6000:]


def reported(what: str, outcome: TempestResult, cloud: Cloud) -> TempestResult:
    """The run's counts and skip reasons printed (the closing notes quote them); no test failed."""
    print(
        f"{what}: {outcome.ran} ran, {outcome.passed} passed, {outcome.skipped} skipped, "
        f"{outcome.failed} failed in {outcome.duration:.0f} s"
    )
    for test, reason in sorted(outcome.skip_reasons.items()):
        print(f"  skipped {test}: {reason}")
    if outcome.failed:
        # which unit answered a server error, or whether HAProxy had none to send to
        print(f"server errors through the ingress:\n{server_errors(cloud)}")
    assert outcome.failed == 0, "\n".join(f"{t}: {why}" for t, why in outcome.failures.items())
    return outcome


def test_identity_image_and_network_smoke_tests_pass(
    cloud: Cloud,
    venv: pathlib.Path,
    admin: dict[str, Any],
    external_network: dict[str, Any],
    tmp_path: pathlib.Path,
) -> None:
    results = admin["results"]
    write_tempest_conf(
        tmp_path,
        auth_url=results["public-endpoint"],
        admin_username=results["username"],
        admin_password=results["password"],
        region=results["region"],
        extra=this_cloud(cloud, venv, admin, external_network),
    )
    outcome = reported("tempest", run_tempest(venv, tmp_path, SMOKE_REGEX, timeout=900), cloud)
    assert outcome.ran >= 18 and outcome.passed == outcome.ran - outcome.skipped
    for api in ("identity", "image", "network"):
        assert [t for t in outcome.passed_tests if t.startswith(f"tempest.api.{api}")], (
            f"no {api} smoke test passed"
        )


def test_compute_smoke_tests_pass(
    cloud: Cloud,
    venv: pathlib.Path,
    admin: dict[str, Any],
    external_network: dict[str, Any],
    guest_image: dict[str, Any],
    tmp_path: pathlib.Path,
) -> None:
    results = admin["results"]
    flavor = guest_image["flavor"]["id"]
    write_tempest_conf(
        tmp_path,
        auth_url=results["public-endpoint"],
        admin_username=results["username"],
        admin_password=results["password"],
        region=results["region"],
        services={"nova": True},
        image_ref=guest_image["id"],
        extra={
            **this_cloud(cloud, venv, admin, external_network),
            # each test project gets a network, subnet and router of its own, as a user would make
            # them: its servers' ports are bound on the hypervisor's chassis
            "auth": {"create_isolated_networks": "true"},
            "compute": {
                "flavor_ref": flavor,
                "flavor_ref_alt": flavor,
                "region": results["region"],
                "endpoint_type": "public",
                "min_compute_nodes": "1",
                # guests are emulated: a boot takes tens of seconds
                "build_timeout": "300",
            },
            # what this cloud's hypervisor does: SPICE consoles, no migration (one hypervisor),
            # no resize to another host, no volumes (no cinder yet)
            "compute-feature-enabled": {
                "console_output": "true",
                "spice_console": "true",
                "vnc_console": "false",
                "serial_console": "false",
                "resize": "false",
                "cold_migration": "false",
                "live_migration": "false",
                "change_password": "false",
                "attach_encrypted_volume": "false",
            },
        },
    )
    outcome = reported(
        "tempest compute", run_tempest(venv, tmp_path, COMPUTE_SMOKE_REGEX, timeout=1500), cloud
    )
    created = [t for t in outcome.passed_tests if ".test_create_server." in t]
    assert created, "no server was created by tempest"
    assert outcome.passed == outcome.ran - outcome.skipped
