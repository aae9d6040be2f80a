"""The functional layer: one real cloud per test session, brought up by the sandbox's own code.

The cloud is bundles/openstack.yaml and the machine bundle as ``tox -e sandbox`` deploys them
(:class:`openstack_charms.sandbox.cloud.Cloud`), in this process: the tests
read the charms' states and the containers' files directly. The whole run
is in the sandbox's private network (``enter_private_network``, at start).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from openstack_charms.sandbox import network
from openstack_charms.sandbox.cloud import MACHINE_BUNDLE, MACHINE_OVERLAYS, Cloud, read_bundle
from openstack_charms.sandbox.controller import CLOUD_NAME, access_files, admin_account
from openstack_charms.sandbox.packages import ensure_debian
from openstack_charms.testing import REPO

#: relations beyond the bundle's: an operator's tool asking keystone for an account
EXTRA = [("keystone:identity-credentials", "operator-tools:identity-credentials")]


def pytest_configure(config: pytest.Config) -> None:
    """Every port the run opens stays private, as the sandbox's do; MariaDB and RabbitMQ are forwarded."""
    if os.geteuid() != 0:
        raise pytest.UsageError("the functional tests run services as their own users: run them as root")
    network.enter_private_network()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The scaling tests last: every other test sees the cloud as the bundle deployed it."""
    items.sort(key=lambda item: item.path.name == "test_scaling.py")


def openstack_venv() -> pathlib.Path:
    """The OpenStack release (services, clients, tempest) installed by tox -e functional."""
    value = os.environ.get("OPENSTACK_VENV")
    if not value or not (pathlib.Path(value) / "bin" / "keystone-manage").exists():
        pytest.fail(
            f"OPENSTACK_VENV={value!r} holds no OpenStack install: run the tests with tox -e functional"
        )
    return pathlib.Path(value)


@pytest.fixture(scope="session")
def venv() -> pathlib.Path:
    return openstack_venv()


@pytest.fixture(scope="session")
def haproxy() -> None:
    """Debian's haproxy at its pin, the ingress providers' stand-in, for tests that make their own."""
    ensure_debian(["haproxy"])


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory, venv: pathlib.Path) -> Iterator[Cloud]:
    layout = read_bundle(REPO / "bundles" / "openstack.yaml", (), MACHINE_BUNDLE, MACHINE_OVERLAYS)
    # the Debian software standing in for images and charms we do not write, at its pins
    ensure_debian(layout.packages())
    # pytest's own temporary tree: outside what the containers overlay, and pruned by pytest
    # if a killed run never reached its cleanup
    cloud = Cloud(tmp_path_factory.mktemp("sandbox"), venv, layout, extra_relations=EXTRA, report=print)
    try:
        cloud.up()
        print(f"cloud up in {cloud.elapsed():.1f} s; hooks run: {cloud.hooks_per_app()}")
        yield cloud
    finally:
        cloud.down()


@pytest.fixture(scope="session")
def admin(cloud: Cloud, venv: pathlib.Path) -> dict[str, Any]:
    """The admin account as keystone's get-admin-account action hands it out, with the sandbox's CA.

    The operator's clients trust the CA that signed the public endpoints, as they would
    be told to in a real cloud: the clouds.yaml names it, and so does ``SSL_CERT_FILE``
    for the tests' own REST calls.
    """
    results = admin_account(cloud)
    access = access_files(cloud.state, venv, cloud, results)
    assert cloud.ca is not None
    os.environ["SSL_CERT_FILE"] = str(cloud.ca.cert_path)
    return {"results": results, "clouds_yaml": pathlib.Path(access["clouds_yaml"]), "cloud": CLOUD_NAME}


@pytest.fixture(scope="session")
def external_network(venv: pathlib.Path, admin: dict[str, Any]) -> dict[str, Any]:
    """The cloud's external network, as an operator makes it: flat on ``physnet1``, with a subnet."""
    from clients import openstack_json

    def osc(*args: str) -> Any:
        return openstack_json(venv, admin["clouds_yaml"], admin["cloud"], *args, timeout=120)

    network = osc(
        "network", "create", "--external", "--provider-network-type", "flat",
        "--provider-physical-network", "physnet1", "ext-net",
    )  # fmt: skip
    subnet = osc(
        "subnet", "create", "--network", "ext-net", "--subnet-range", "203.0.113.0/24", "--no-dhcp",
        "--gateway", "203.0.113.1", "ext-subnet",
    )  # fmt: skip
    return {"network": network, "subnet": subnet}


#: the flavor the functional tests' servers take: the guest needs little
FLAVOR = "functional-tiny"


@pytest.fixture(scope="session")
def guest_image(
    tmp_path_factory: pytest.TempPathFactory, venv: pathlib.Path, admin: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """The guest (:mod:`guest`) as glance keeps an AMI: a kernel (aki), a ramdisk (ari) and a machine
    image naming both, public; and the flavor :data:`FLAVOR` for it."""
    import guest
    from clients import openstack, openstack_json

    def osc(*args: str) -> Any:
        return openstack_json(venv, admin["clouds_yaml"], admin["cloud"], *args, timeout=120)

    built = guest.build(tmp_path_factory.mktemp("guest"))
    kernel = osc("image", "create", "--public", "--disk-format", "aki", "--container-format", "aki",
                 "--file", str(built.kernel), "functional-guest-kernel")  # fmt: skip
    ramdisk = osc("image", "create", "--public", "--disk-format", "ari", "--container-format", "ari",
                  "--file", str(built.ramdisk), "functional-guest-ramdisk")  # fmt: skip
    machine = osc("image", "create", "--public", "--disk-format", "ami", "--container-format", "ami",
                  "--property", f"kernel_id={kernel['id']}", "--property", f"ramdisk_id={ramdisk['id']}",
                  "--file", str(built.disk), "functional-guest")  # fmt: skip
    flavor = osc("flavor", "create", "--ram", "256", "--disk", "1", "--vcpus", "1", FLAVOR)
    yield {**machine, "flavor": flavor}
    for image in (machine, ramdisk, kernel):
        openstack(venv, admin["clouds_yaml"], admin["cloud"], "image", "delete", image["id"], fmt=None)
    openstack(venv, admin["clouds_yaml"], admin["cloud"], "flavor", "delete", FLAVOR, fmt=None)
