"""Every charm of bundles/openstack.yaml in ops.testing, wired as the bundle says.

Our charms run for real; the charms we do not write (mysql-k8s, rabbitmq-k8s,
traefik-k8s, self-signed-certificates) answer with the data their real
providers publish (the fixtures in ``openstack_charms.testing``). Relation data
and granted secrets are passed from each side's output to the other's input,
round after round, until nothing changes; then every unit must be active.
Keystone's REST calls go to an in-memory keystone (its database, in effect).
"""

from __future__ import annotations

import pathlib
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import ops
import pytest
import yaml
from openstack_charms.testing import REPO, RelationFixture, fixture_for, merged_charmcraft
from openstack_charms.testing.model import Link, SimulatedModel
from openstack_charms.testing.relations import INGRESS_ADDRESSES, MODEL

BUNDLE = REPO / "bundles" / "openstack.yaml"
MAX_ROUNDS = 8


def _bundle() -> dict[str, Any]:
    return next(yaml.safe_load_all(BUNDLE.read_text()))


def _our_charm(spec: dict[str, Any]) -> str | None:
    match = re.search(r"([a-z0-9-]+-k8s)(?:_[^/]*)?\.charm$", str(spec.get("charm", "")))
    return match.group(1) if match and (REPO / "charms" / match.group(1)).is_dir() else None


def _fixtures(
    link: Link, _app_data: Mapping[str, str], _unit_data: Mapping[str, str]
) -> RelationFixture | None:
    return fixture_for(link.ours.endpoint, link.interface, link.ours.app)


@pytest.fixture
def keystone_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    src = REPO / "charms" / "keystone-k8s" / "src"
    sys.path.insert(0, str(src))
    sys.path.insert(0, str(REPO / "tests" / "unit" / "keystone"))
    try:
        import keystone_api
        from fake_keystone import FakeKeystone

        fake = FakeKeystone()
        monkeypatch.setattr(keystone_api, "KeystoneAPI", fake)
        yield fake
    finally:
        sys.path.remove(str(src))
        sys.path.remove(str(REPO / "tests" / "unit" / "keystone"))


def test_bundle_reaches_active(tmp_path: pathlib.Path, keystone_db: Any) -> None:
    bundle = _bundle()
    ours = {app: c for app, spec in bundle["applications"].items() if (c := _our_charm(spec))}
    assert ours, "the bundle deploys none of our charms"
    model = SimulatedModel(ours, [tuple(r) for r in bundle["relations"]], _fixtures, tmp_path, model=MODEL)
    missing = [
        f"{lk.ours.app}:{lk.ours.endpoint} ({lk.interface})"
        for lk in model.links
        if not lk.other_is_ours and _fixtures(lk, {}, {}) is None
    ]
    assert not missing, f"no stand-in for the external side of {missing}"

    statuses = model.settle(MAX_ROUNDS)
    assert all(isinstance(s, ops.ActiveStatus) for s in statuses.values()), statuses
    # the identity-service flow really happened: every requirer got a service user in keystone
    users = {name for name, _ in keystone_db.users}
    for app, charm in ours.items():
        if "identity-service" in (merged_charmcraft(charm).get("requires") or {}):
            assert any(app.replace("-", "_") in u for u in users), f"no service user for {app}: {users}"
    # ... and its endpoints are in the catalog, public ones behind the public ingress
    public = {url for (_, interface, _), url in keystone_db.endpoints.items() if interface == "public"}
    address = INGRESS_ADDRESSES["ingress-public"]
    assert public == {f"http://{address}/{MODEL}-{app}" for app in ("glance", "placement")}
