"""Tempest, OpenStack's own test suite, against the cloud the charms configured.

tempest 46.2.0 has identity and image API tests but none for placement (its
API is exercised by nova's tests, and nova is not part of this cloud yet); the
placement round trip in test_placement.py stands in for it.
"""

from __future__ import annotations

import pathlib
from typing import Any

from openstack_charms.sandbox.cloud import Cloud
from tempest_run import SMOKE_REGEX, run_tempest, write_tempest_conf


def test_identity_and_image_smoke_tests_pass(
    cloud: Cloud, venv: pathlib.Path, admin: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    results = admin["results"]
    write_tempest_conf(
        tmp_path,
        auth_url=results["public-endpoint"],
        admin_username=results["username"],
        admin_password=results["password"],
        region=results["region"],
        # the public endpoints are traefik-public's, with a certificate from the sandbox's CA
        extra={"identity": {"ca_certificates_file": str(cloud.ca.cert_path)}} if cloud.ca else None,
    )
    outcome = run_tempest(venv, tmp_path, SMOKE_REGEX, timeout=900)
    print(
        f"tempest: {outcome.ran} ran, {outcome.passed} passed, {outcome.skipped} skipped, "
        f"{outcome.failed} failed in {outcome.duration:.0f} s"
    )
    for test, reason in sorted(outcome.skip_reasons.items()):
        print(f"  skipped {test}: {reason}")
    assert outcome.failed == 0, "\n".join(f"{t}: {why}" for t, why in outcome.failures.items())
    assert outcome.ran >= 18 and outcome.passed == outcome.ran - outcome.skipped
    identity = [t for t in outcome.passed_tests if t.startswith("tempest.api.identity")]
    image = [t for t in outcome.passed_tests if t.startswith("tempest.api.image")]
    assert identity and image, "both the identity and the image API smoke tests must have run"
