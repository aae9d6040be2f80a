"""placement-k8s: registered through the identity-service flow, keeps resource providers."""

from __future__ import annotations

import json
import pathlib
import urllib.error
import urllib.request
from typing import Any

from test_keystone import openstack

MICROVERSION = {"OpenStack-API-Version": "placement 1.39"}


def call(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    """One placement API call with the admin token (every call bounded in time)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-Auth-Token": token, "Content-Type": "application/json", **MICROVERSION}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_resource_provider_and_inventory_round_trip(venv: pathlib.Path, admin: dict[str, Any]) -> None:
    token = openstack(venv, admin["clouds_yaml"], "token", "issue")["id"]
    (endpoint,) = openstack(
        venv, admin["clouds_yaml"], "endpoint", "list", "--service", "placement", "--interface", "public"
    )
    base = endpoint["URL"]
    assert base == "http://127.0.0.1:8778"
    assert call("GET", f"{base}/resource_providers", "not-a-token")[0] == 401

    status, provider = call("POST", f"{base}/resource_providers", token, {"name": "functional-compute"})
    assert status == 200, provider
    uuid = provider["uuid"]
    try:
        inventories = {"VCPU": {"total": 8}, "MEMORY_MB": {"total": 4096, "reserved": 512}}
        status, body = call(
            "PUT",
            f"{base}/resource_providers/{uuid}/inventories",
            token,
            {"resource_provider_generation": provider["generation"], "inventories": inventories},
        )
        assert status == 200, body
        status, body = call("GET", f"{base}/resource_providers/{uuid}/inventories", token)
        assert status == 200
        assert body["inventories"]["VCPU"]["total"] == 8
        assert body["inventories"]["MEMORY_MB"]["total"] == 4096
        assert body["inventories"]["MEMORY_MB"]["reserved"] == 512
        status, found = call("GET", f"{base}/resource_providers?name=functional-compute", token)
        assert [p["uuid"] for p in found["resource_providers"]] == [uuid]
    finally:
        assert call("DELETE", f"{base}/resource_providers/{uuid}", token)[0] == 204
