"""glance-k8s: registered through the identity-service flow, stores and returns images."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from clients import image_roundtrip, openstack_json
from openstack_charms.sandbox.cloud import Cloud

CLOUD = "sandbox"


def test_glance_is_in_the_catalog_at_its_ingress_url(
    cloud: Cloud, venv: pathlib.Path, admin: dict[str, Any]
) -> None:
    endpoints = openstack_json(venv, admin["clouds_yaml"], CLOUD, "endpoint", "list", "--service", "image")
    # HAProxy's frontends, one per ingress relation, on each traefik's address; traefik-public
    # has a certificate from the CA (the bundle relates them), so its frontends are https
    assert cloud.ingress is not None
    public, internal = (cloud.ingress.addresses[f"traefik-{n}"] for n in ("public", "internal"))
    assert {(e["Interface"], e["URL"]) for e in endpoints} == {
        ("public", f"https://{public}:9292"),
        ("internal", f"http://{internal}:9292"),
        ("admin", f"http://{internal}:9292"),
    }


def test_image_upload_and_download_return_the_same_bytes(
    cloud: Cloud, venv: pathlib.Path, admin: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    data = os.urandom(1024 * 1024 + 17)
    image_id, back = image_roundtrip(
        venv, admin["clouds_yaml"], CLOUD, data, tmp_path, name="functional-image"
    )
    assert back == data
    # the bytes are on the storage volume the charm declared, owned by glance
    stored = cloud.machine.path("glance", "glance", f"/var/lib/glance/images/store/{image_id}")
    assert stored.read_bytes() == data
    assert stored.stat().st_uid == cloud.machine.uid("glance", "glance", "glance")
    image_roundtrip(
        venv, admin["clouds_yaml"], CLOUD, b"x" * 4096, tmp_path, name="deleted-image", delete=True
    )


def test_the_metadata_definitions_are_loaded(venv: pathlib.Path, admin: dict[str, Any]) -> None:
    # the leader's load-metadefs task: what the dashboard's image property editor lists
    namespaces = openstack_json(venv, admin["clouds_yaml"], CLOUD, "image", "metadef", "namespace", "list")
    names = {n["namespace"] for n in namespaces}
    assert "OS::Compute::Hypervisor" in names, sorted(names)[:10]
    resource_types = openstack_json(
        venv, admin["clouds_yaml"], CLOUD, "image", "metadef", "resource", "type", "list"
    )
    assert "OS::Glance::Image" in {r["Name"] for r in resource_types}
