"""Deploy bundles/openstack.yaml on a real Juju controller and wait until every unit is active.

Needs a Juju controller with a Kubernetes cloud (the model is added on the cloud
named by $JUJU_K8S_CLOUD, else the controller's default) and the packed charms
(`tox -e build`). Skipped, saying why, when no controller is reachable.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import jubilant
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "openstack.yaml"


def _controller_unreachable() -> str | None:
    """Why no Juju controller can be used from here, or None when one answers."""
    if shutil.which("juju") is None:
        return "no Juju controller reachable: the juju CLI is not installed"
    try:
        result = subprocess.run(
            ["juju", "models", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "no Juju controller reachable: `juju models` did not answer within 60 s"
    if result.returncode != 0:
        said = result.stderr.strip() or result.stdout.strip()
        return f"no Juju controller reachable: `juju models` said: {said}"
    return None


@pytest.fixture(scope="module")
def juju() -> Iterator[jubilant.Juju]:
    reason = _controller_unreachable()
    if reason:
        pytest.skip(reason)
    base = next(yaml.safe_load_all(BUNDLE.read_text()))
    missing = [
        spec["charm"]
        for spec in base["applications"].values()
        if spec["charm"].startswith(".") and not (BUNDLE.parent / spec["charm"]).is_file()
    ]
    assert not missing, (
        f"packed charms missing: {', '.join(missing)}; run `tox -e build` on a host that can pack"
    )
    with jubilant.temp_model(cloud=os.environ.get("JUJU_K8S_CLOUD")) as juju:
        juju.wait_timeout = 30 * 60
        yield juju


def test_bundle_deploys_and_every_unit_is_active(juju: jubilant.Juju):
    juju.deploy(BUNDLE, trust=True)
    status = juju.wait(jubilant.all_active, error=jubilant.any_error)
    base = next(yaml.safe_load_all(BUNDLE.read_text()))
    assert set(base["applications"]) <= set(status.apps)


def test_offers_for_the_machine_model_exist(juju: jubilant.Juju):
    offers = json.loads(juju.cli("offers", "--format", "json"))
    assert {"keystone-credentials", "placement", "rabbitmq", "certificates"} <= set(offers)
