"""placement-k8s: registered through the identity-service flow, keeps resource providers."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from clients import HTTPError, http_request, openstack_json, placement_roundtrip
from openstack_charms.sandbox.cloud import Cloud

CLOUD = "sandbox"


def test_placement_is_in_the_catalog_and_refuses_anonymous_calls(
    cloud: Cloud, venv: pathlib.Path, admin: dict[str, Any]
) -> None:
    endpoints = openstack_json(
        venv, admin["clouds_yaml"], CLOUD, "endpoint", "list", "--service", "placement"
    )
    # HAProxy's frontends, one per ingress relation, on each traefik's address; traefik-public's
    # are https (it has a certificate from the CA)
    assert cloud.ingress is not None
    public, internal = (cloud.ingress.addresses[f"traefik-{n}"] for n in ("public", "internal"))
    urls = {e["Interface"]: e["URL"] for e in endpoints}
    assert set(urls.values()) == {f"https://{public}:8778", f"http://{internal}:8778"}
    assert urls["public"] == f"https://{public}:8778"
    with pytest.raises(HTTPError) as refused:
        http_request("GET", f"https://{public}:8778/resource_providers")
    assert refused.value.status == 401


def test_resource_provider_and_inventory_round_trip(venv: pathlib.Path, admin: dict[str, Any]) -> None:
    result = placement_roundtrip(
        venv, admin["clouds_yaml"], CLOUD, inventory={"VCPU": 8, "MEMORY_MB": 4096}, name="functional-compute"
    )
    assert result.provider_name == "functional-compute"
    assert result.inventories["VCPU"]["total"] == 8
    assert result.inventories["MEMORY_MB"]["total"] == 4096
    assert result.status_after_delete == 404
