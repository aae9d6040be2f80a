"""The functional layer: one real cloud per test session, built from what the charms declared."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from harness import Cloud, Ingress, Machine, Providers, ensure_haproxy, real_pebble
from openstack_charms.testing import REPO, container_storages, merged_charmcraft
from openstack_charms.testing.model import SimulatedModel

#: relations of the bundle left out here, and why
LEFT_OUT = {
    "certificates": "TLS between services is proven by the unit tests; here services speak plain HTTP",
}


#: what the kolla images ship outside their venv that the charms rely on, by (charm, container):
#: path in the image -> in the venv (kolla copies a service's etc/ into /etc/<service>; pip puts
#: it under the venv's etc/)
IMAGE_FILES = {("glance-k8s", "glance"): {"/etc/glance/metadefs": "etc/glance/metadefs"}}

#: relations beyond the bundle's: an operator's tool asking keystone for an account
EXTRA = [("keystone:identity-credentials", "operator-tools:identity-credentials")]


def openstack_venv() -> pathlib.Path:
    """The OpenStack release (services, clients, tempest) installed by tox -e functional."""
    value = os.environ.get("OPENSTACK_VENV")
    if not value or not (pathlib.Path(value) / "bin" / "keystone-manage").exists():
        pytest.fail(
            f"OPENSTACK_VENV={value!r} holds no OpenStack install: run the tests with tox -e functional"
        )
    return pathlib.Path(value)


def bundle_layout() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Our applications and their relations, as bundles/openstack.yaml deploys them."""
    bundle = next(yaml.safe_load_all((REPO / "bundles" / "openstack.yaml").read_text()))
    apps = {
        app: pathlib.Path(spec["charm"]).stem
        for app, spec in bundle["applications"].items()
        if str(spec["charm"]).endswith(".charm")
    }
    relations = [
        (a, b) for a, b in bundle["relations"] if not {a.split(":")[0], b.split(":")[0]} & set(LEFT_OUT)
    ]
    return apps, relations + EXTRA


@pytest.fixture(scope="session")
def venv() -> pathlib.Path:
    return openstack_venv()


@pytest.fixture(scope="session")
def sandbox() -> None:
    if os.environ.get("OPENSTACK_SANDBOX") != "1":
        pytest.fail("the functional tests run inside tests/functional/sandbox.py: use tox -e functional")


@pytest.fixture(scope="session")
def haproxy(sandbox: None) -> None:
    """Debian's haproxy at its pin, the ingress providers' stand-in."""
    ensure_haproxy()


@pytest.fixture(scope="session")
def cloud(
    tmp_path_factory: pytest.TempPathFactory, venv: pathlib.Path, sandbox: None, haproxy: None
) -> Iterator[Cloud]:
    apps, relations = bundle_layout()
    logs = tmp_path_factory.mktemp("logs")
    # pytest's own temporary tree: outside what the containers overlay, and pruned by pytest
    # if a killed run never reached its cleanup
    machine = Machine(venv, logs, tmp_path_factory.mktemp("units"))
    ingress = Ingress(machine, tmp_path_factory.mktemp("ingress"), logs)
    providers = Providers(ingress=ingress)
    model = SimulatedModel(
        apps, relations, providers, tmp_path_factory.mktemp("model"), charm_runs_in=machine.charm_runs_in
    )
    try:
        # the pods are there before their charms run
        for app, charm in apps.items():
            for unit in model.units[app]:
                for name, spec in (merged_charmcraft(charm).get("containers") or {}).items():
                    machine.add_container(unit, name, container_storages(spec))
                    image = IMAGE_FILES.get((charm, name), {})
                    machine.provide_image_files(unit, name, {path: venv / src for path, src in image.items()})
        with real_pebble(machine):
            cloud = Cloud(model, machine, ingress)
            cloud.settle()
            yield cloud
    finally:
        try:
            try:
                ingress.close()
            finally:
                machine.cleanup()
        finally:
            providers.cleanup()


@pytest.fixture(scope="session")
def admin(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The admin account as keystone's get-admin-account action hands it out."""
    results = cloud.model.run_action("keystone", "get-admin-account")
    clouds_yaml = tmp_path_factory.mktemp("admin") / "clouds.yaml"
    clouds_yaml.write_text(results["clouds-yaml"])
    clouds_yaml.chmod(0o600)
    return {"results": results, "clouds_yaml": clouds_yaml}
