"""glance-k8s: registered through the identity-service flow, stores and returns images."""

from __future__ import annotations

import os
import pathlib
import pwd
from typing import Any

from harness import Cloud
from test_keystone import openstack


def test_glance_is_in_the_catalog_at_its_ingress_url(venv: pathlib.Path, admin: dict[str, Any]) -> None:
    endpoints = openstack(venv, admin["clouds_yaml"], "endpoint", "list", "--service", "image")
    assert {(e["Interface"], e["URL"]) for e in endpoints} == {
        ("public", "http://127.0.0.1:9292"),
        ("internal", "http://127.0.0.1:9292"),
        ("admin", "http://127.0.0.1:9292"),
    }


def test_image_upload_and_download_return_the_same_bytes(
    cloud: Cloud, venv: pathlib.Path, admin: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    data = os.urandom(1024 * 1024 + 17)
    source = tmp_path / "image.raw"
    source.write_bytes(data)
    image = openstack(
        venv,
        admin["clouds_yaml"],
        "image",
        "create",
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--file",
        str(source),
        "functional-image",
    )
    assert image["status"] == "active"
    saved = tmp_path / "saved.raw"
    openstack(
        venv, admin["clouds_yaml"], "image", "save", "--file", str(saved), image["id"], json_output=False
    )
    assert saved.read_bytes() == data
    # the bytes are on the storage volume the charm declared, owned by glance
    stored = pathlib.Path("/var/lib/glance/images/store") / image["id"]
    assert stored.read_bytes() == data
    assert stored.stat().st_uid == pwd.getpwnam("glance").pw_uid
    openstack(venv, admin["clouds_yaml"], "image", "delete", image["id"], json_output=False)
    assert not stored.exists()
