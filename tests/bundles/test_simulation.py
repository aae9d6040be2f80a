"""Every charm of bundles/openstack.yaml in ops.testing, wired as the bundle says.

Our charms run for real; the charms we do not write (mysql-k8s, rabbitmq-k8s,
traefik-k8s, self-signed-certificates) answer with the data their real
providers publish (the fixtures in ``openstack_charms.testing``). Relation data
and granted secrets are passed from each side's output to the other's input,
round after round, until nothing changes; then every unit must be active.
Keystone's REST calls go to an in-memory keystone (its database, in effect).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import sys
from collections.abc import Iterator
from typing import Any

import ops
import pytest
import yaml
from openstack_charms.testing import (
    REPO,
    charm_context,
    container,
    container_storages,
    fixture_for,
    merged_charmcraft,
)
from openstack_charms.testing.relations import INGRESS_ADDRESSES, MODEL
from ops import testing

BUNDLE = REPO / "bundles" / "openstack.yaml"
MAX_ROUNDS = 8


@dataclasses.dataclass
class Side:
    app: str
    endpoint: str


@dataclasses.dataclass
class Link:
    id: int
    ours: Side
    other: Side
    other_is_ours: bool
    interface: str


def _bundle() -> dict[str, Any]:
    return next(yaml.safe_load_all(BUNDLE.read_text()))


def _our_charm(spec: dict[str, Any]) -> str | None:
    match = re.search(r"([a-z0-9-]+-k8s)(?:_[^/]*)?\.charm$", str(spec.get("charm", "")))
    return match.group(1) if match and (REPO / "charms" / match.group(1)).is_dir() else None


def _endpoint_interface(charm: str, endpoint: str) -> str:
    meta = merged_charmcraft(charm)
    for role in ("requires", "provides"):
        if endpoint in (meta.get(role) or {}):
            return meta[role][endpoint]["interface"]
    raise AssertionError(f"{charm} has no endpoint {endpoint}")


def _links(bundle: dict[str, Any], ours: dict[str, str]) -> list[Link]:
    links: list[Link] = []
    for n, (a, b) in enumerate(bundle["relations"], start=100):
        left, right = (Side(*x.split(":")) for x in (a, b))
        for mine, theirs in ((left, right), (right, left)):
            if mine.app in ours:
                interface = _endpoint_interface(ours[mine.app], mine.endpoint)
                links.append(Link(n, mine, theirs, theirs.app in ours, interface))
    return links


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


def _databags(state: testing.State) -> dict[int, tuple[object, object]]:
    return {
        r.id: (dict(r.local_app_data), dict(r.local_unit_data))
        for r in state.relations
        if isinstance(r, testing.Relation)
    }


def test_bundle_reaches_active(tmp_path: pathlib.Path, keystone_db: Any) -> None:
    bundle = _bundle()
    ours = {app: c for app, spec in bundle["applications"].items() if (c := _our_charm(spec))}
    assert ours, "the bundle deploys none of our charms"
    links = _links(bundle, ours)
    contexts = {app: charm_context(charm) for app, charm in ours.items()}
    external = {
        link.id: fixture_for(link.ours.endpoint, link.interface, link.ours.app)
        for link in links
        if not link.other_is_ours
    }
    missing = [
        f"{lk.ours.app}:{lk.ours.endpoint} ({lk.interface})"
        for lk in links
        if lk.id in external and external[lk.id] is None
    ]
    assert not missing, f"no stand-in for the external side of {missing}"

    states: dict[str, testing.State] = {}
    for app, charm in ours.items():
        meta = merged_charmcraft(charm)
        states[app] = testing.State(
            leader=True,
            model=testing.Model(name=MODEL),
            relations=[testing.PeerRelation(p) for p in meta.get("peers") or {}],
            containers=[
                container(c, tmp_path / app, container_storages(spec), execs={testing.Exec([], stdout="")})
                for c, spec in (meta.get("containers") or {}).items()
            ],
            storages=[testing.Storage(s) for s in meta.get("storage") or {}],
        )

    def relation_for(app: str, link: Link) -> testing.Relation:
        previous = next((r for r in states[app].relations if r.id == link.id), None)
        local_app = dict(previous.local_app_data) if isinstance(previous, testing.Relation) else {}
        local_unit = dict(previous.local_unit_data) if isinstance(previous, testing.Relation) else {}
        if link.other_is_ours:
            other = next((r for r in states[link.other.app].relations if r.id == link.id), None)
            remote_app = dict(other.local_app_data) if isinstance(other, testing.Relation) else {}
            remote_unit = dict(other.local_unit_data) if isinstance(other, testing.Relation) else {}
        else:
            fixture = external[link.id]
            assert fixture is not None and isinstance(fixture.relation, testing.Relation)
            remote_app = dict(fixture.relation.remote_app_data)
            remote_unit = dict(next(iter(fixture.relation.remote_units_data.values()), {}))
        return testing.Relation(
            link.ours.endpoint,
            id=link.id,
            interface=link.interface,
            remote_app_name=link.other.app,
            local_app_data=local_app,
            local_unit_data=local_unit,
            remote_app_data=remote_app,
            remote_units_data={0: remote_unit},
        )

    def secrets_for(app: str) -> list[testing.Secret]:
        own = [s for s in states[app].secrets if s.owner is not None]
        granted: list[testing.Secret] = []
        my_links = {lk.id for lk in links if lk.ours.app == app}
        for other, state in states.items():
            if other == app:
                continue
            for s in state.secrets:
                if s.owner is not None and set(s.remote_grants) & my_links:
                    granted.append(testing.Secret(s.latest_content, id=s.id, owner=None))
        for link in links:
            fixture = external.get(link.id)
            if link.ours.app == app and fixture is not None:
                granted.extend(fixture.secrets)
        return own + granted

    for _ in range(MAX_ROUNDS):
        before = {app: _databags(s) for app, s in states.items()}
        for app in ours:
            peers = [r for r in states[app].relations if isinstance(r, testing.PeerRelation)]
            state = dataclasses.replace(
                states[app],
                relations=[*peers, *(relation_for(app, lk) for lk in links if lk.ours.app == app)],
                secrets=secrets_for(app),
            )
            states[app] = contexts[app].run(contexts[app].on.config_changed(), state)
        if {app: _databags(s) for app, s in states.items()} == before:
            break
    else:
        pytest.fail(f"relation data still changing after {MAX_ROUNDS} rounds")

    statuses = {app: states[app].unit_status for app in ours}
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
