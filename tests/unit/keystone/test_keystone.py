"""keystone-k8s: keys, bootstrap, the identity providers, actions, status."""

from __future__ import annotations

import collections
import configparser
import dataclasses
import json
import pathlib
import stat
from collections.abc import Iterator
from typing import Any

import ops
import pytest
from charms.keystone_k8s.v0 import identity_credentials as idc
from charms.keystone_k8s.v0 import identity_service as ids
from fake_keystone import FakeKeystone
from openstack_charms import testing as octest
from openstack_charms.testing.relations import certificates_fixture, database_fixture, ingress_fixture
from ops import testing
from scenario import mocking

CHARM = "keystone-k8s"
EXECS = frozenset({testing.Exec(["keystone-manage"])})
PUBLIC_AUTH = "http://keystone-k8s.test-model.svc:5000/v3"


def ctx() -> testing.Context[Any]:
    return octest.charm_context(CHARM)


def base(root: pathlib.Path | None = None, *, leader: bool = True, **kw: Any) -> testing.State:
    return testing.State(
        leader=leader,
        model=testing.Model(name="test-model"),
        relations=[testing.PeerRelation("peers")],
        containers=[octest.container("keystone", root, execs=set(EXECS))],
        **kw,
    )


def complete(root: pathlib.Path | None = None, *extra: octest.RelationFixture, **kw: Any) -> testing.State:
    return octest.state_with([database_fixture(database="keystone"), *extra], base=base(root, **kw))


def glance_request(app: str = "glance", **changes: Any) -> testing.Relation:
    request = ids.IdentityServiceRequest(
        service_endpoints=(
            ids.ServiceEndpoint(
                service_name="glance",
                type="image",
                description="OpenStack Image",
                admin_url="http://glance.test-model.svc:9292",
                internal_url="http://glance.test-model.svc:9292",
                public_url="https://glance.example.com",
            ),
        ),
        region="RegionOne",
    )
    request = dataclasses.replace(request, **changes)
    data = {k: v for k, v in request.to_databag().items() if v is not None}
    return testing.Relation(
        "identity-service", interface="keystone", remote_app_name=app, remote_app_data=data
    )


def commands(context: testing.Context[Any]) -> list[list[str]]:
    return [list(e.command) for e in context.exec_history.get("keystone", [])]


def secret(state: testing.State, label: str) -> testing.Secret:
    (found,) = [s for s in state.secrets if s.label == label]
    return found


def files(state: testing.State, context: testing.Context[Any]) -> dict[str, str]:
    return octest.pushed_files(state, context, "keystone")


# -- a working keystone --------------------------------------------------------------------


def test_active_with_a_database(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(tmp_path))
    assert out.unit_status == testing.ActiveStatus(PUBLIC_AUTH)
    conf = files(out, context)["/etc/keystone/keystone.conf"]
    assert "connection = mysql+pymysql://" in conf
    assert "[token]\nprovider = fernet\nexpiration = 3600\n" in conf
    assert "[fernet_tokens]\nkey_repository = /etc/keystone/fernet-keys/\nmax_active_keys = 4\n" in conf
    assert "[credential]\nprovider = fernet\nkey_repository = /etc/keystone/credential-keys/\n" in conf
    assert "[catalog]\ndriver = sql\ncaching = false\n" in conf
    assert "[oslo_middleware]" in conf and "[cache]" in conf
    assert "transport_url" not in conf and "[oslo_messaging_rabbit]" not in conf


def test_the_workload_is_uwsgi_on_port_5000_with_a_health_check(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(tmp_path))
    plan = out.get_container("keystone").plan
    service = plan.services["keystone-api"]
    assert service.command == "uwsgi --ini /etc/keystone/keystone-api-uwsgi.ini"
    assert service.user == "keystone"
    check = plan.checks["keystone-api-up"]
    assert check.http is not None and check.http.get("url") == "http://localhost:5000/v3"
    assert service.on_check_failure == {"keystone-api-up": "restart"}
    uwsgi = files(out, context)["/etc/keystone/keystone-api-uwsgi.ini"]
    assert "http-socket = [::]:5000" in uwsgi and "module = keystone.wsgi.api:application" in uwsgi


def test_keys_come_from_juju_secrets_and_are_private_files(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(tmp_path))
    fernet_secret = secret(out, "fernet-keys")
    assert fernet_secret.owner == "app" and fernet_secret.rotate == ops.SecretRotate.DAILY
    assert set(fernet_secret.tracked_content) == {"fernet-0", "fernet-1"}
    credential_secret = secret(out, "credential-keys")
    pushed = files(out, context)
    assert pushed["/etc/keystone/fernet-keys/0"] == fernet_secret.tracked_content["fernet-0"]
    assert pushed["/etc/keystone/fernet-keys/1"] == fernet_secret.tracked_content["fernet-1"]
    assert pushed["/etc/keystone/credential-keys/1"] == credential_secret.tracked_content["fernet-1"]
    mode = (tmp_path / "keystone" / "etc" / "keystone" / "fernet-keys" / "1").stat().st_mode & 0o777
    assert mode == 0o600


def test_leader_runs_db_sync_bootstrap_and_credential_migrate_once(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(tmp_path))
    assert commands(context) == [
        ["keystone-manage", "db_sync"],
        ["keystone-manage", "bootstrap"],
        ["keystone-manage", "credential_migrate"],
    ]
    bootstrap = context.exec_history["keystone"][1]
    admin_password = secret(out, "admin-password").tracked_content["password"]
    assert bootstrap.environment["OS_BOOTSTRAP_PASSWORD"] == admin_password
    assert bootstrap.environment["OS_BOOTSTRAP_PUBLIC_URL"] == PUBLIC_AUTH
    assert bootstrap.environment["OS_BOOTSTRAP_REGION_ID"] == "RegionOne"
    assert admin_password not in " ".join(bootstrap.command)
    again = ctx()
    twice = again.run(again.on.config_changed(), out)
    assert commands(again) == []
    assert octest.observable(twice) == octest.observable(out)


@pytest.mark.parametrize(
    "event",
    [
        "config_changed",
        "update_status",
        "upgrade_charm_second",
        "leader_elected",
        "pebble_ready",
        "database_changed",
    ],
)
def test_every_event_twice_changes_nothing(
    tmp_path: pathlib.Path, keystone: FakeKeystone, event: str
) -> None:
    context = ctx()
    state = context.run(context.on.config_changed(), complete(tmp_path))
    if event == "pebble_ready":
        ev = context.on.pebble_ready(state.get_container("keystone"))
    elif event == "database_changed":
        ev = context.on.relation_changed(next(r for r in state.relations if r.endpoint == "database"))
    elif event == "upgrade_charm_second":
        # an upgrade re-runs the leader tasks once; the second upgrade-less event changes nothing
        state = context.run(context.on.upgrade_charm(), state)
        ev = context.on.update_status()
    else:
        ev = getattr(context.on, event)()
    octest.assert_idempotent(context, state, ev)


def test_blocked_without_the_database() -> None:
    octest.assert_blocked_without_each_mandatory(
        ctx(), [database_fixture(database="keystone")], octest.mandatory_endpoints(CHARM), base=base()
    )
    assert octest.mandatory_endpoints(CHARM) == ["database"]


def test_relation_order_does_not_matter(keystone: FakeKeystone) -> None:
    from openstack_charms.testing.relations import ingress_fixture

    # an established keystone (keys and admin password exist: Juju gives new secrets random ids)
    context = ctx()
    established = context.run(context.on.config_changed(), complete())
    peers = [r for r in established.relations if r.endpoint == "peers"]
    fixtures = [
        database_fixture(database="keystone"),
        ingress_fixture(endpoint="ingress-public", url="https://keystone.example.com"),
        ingress_fixture(endpoint="ingress-internal", url="http://keystone.internal"),
    ]
    out = octest.assert_order_invariant(
        ctx(), fixtures, base=dataclasses.replace(established, relations=peers)
    )
    assert out.unit_status == testing.ActiveStatus("https://keystone.example.com/v3")


# -- leadership ----------------------------------------------------------------------------


def test_non_leader_waits_for_the_leader_keys() -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(leader=False))
    assert out.unit_status == testing.WaitingStatus("waiting for the leader to create the fernet keys")
    assert commands(context) == []


def test_leader_change_loses_no_key_and_reruns_no_bootstrap(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    context = ctx()
    first = context.run(context.on.config_changed(), complete(tmp_path))
    keys = secret(first, "fernet-keys").tracked_content
    # the old leader's peer data and secrets, seen from a new unit (a fresh pod) that becomes leader
    new_leader = dataclasses.replace(
        first, containers=[octest.container("keystone", tmp_path / "new-pod", execs=set(EXECS))]
    )
    context = ctx()
    out = context.run(context.on.leader_elected(), new_leader)
    assert commands(context) == []
    assert out.unit_status == testing.ActiveStatus(PUBLIC_AUTH)
    assert secret(out, "fernet-keys").tracked_content == keys
    assert files(out, context)["/etc/keystone/fernet-keys/1"] == keys["fernet-1"]
    assert len([s for s in out.secrets if s.label == "fernet-keys"]) == 1


def test_a_follower_writes_the_leader_keys(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    context = ctx()
    first = context.run(context.on.config_changed(), complete(tmp_path))
    follower = dataclasses.replace(
        first, leader=False, containers=[octest.container("keystone", tmp_path / "unit1", execs=set(EXECS))]
    )
    context = ctx()
    out = context.run(context.on.config_changed(), follower)
    assert out.unit_status == testing.ActiveStatus(PUBLIC_AUTH)
    assert (
        files(out, context)["/etc/keystone/fernet-keys/0"]
        == secret(first, "fernet-keys").tracked_content["fernet-0"]
    )
    assert commands(context) == []


# -- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "option"),
    [
        ({"fernet-max-active-keys": 3}, "fernet-max-active-keys"),
        ({"token-expiration": 10}, "token-expiration"),
        ({"admin-user": "bad user"}, "admin-user"),
        ({"region": " "}, "region"),
        ({"log-level": "LOUD"}, "log-level"),
        ({"workers": 0}, "workers"),
    ],
)
def test_invalid_config_is_blocked_naming_the_option(config: dict[str, Any], option: str) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(config=config))
    assert out.unit_status.name == "blocked"
    assert f"config option '{option}'" in out.unit_status.message


def test_config_reaches_keystone_conf(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    context = ctx()
    config = {
        "token-expiration": 7200,
        "fernet-max-active-keys": 5,
        "catalog-cache-expiration": 300,
        "debug": True,
    }
    out = context.run(context.on.config_changed(), complete(tmp_path, config=config))
    conf = files(out, context)["/etc/keystone/keystone.conf"]
    assert "expiration = 7200" in conf and "max_active_keys = 5" in conf and "cache_time = 300" in conf
    assert "debug = true" in conf


# -- identity-service ----------------------------------------------------------------------


def test_identity_service_request_is_answered(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    relation = glance_request(extra_roles=("member",))
    context = ctx()
    out = context.run(
        context.on.relation_changed(relation), complete(tmp_path, octest.RelationFixture(relation))
    )
    assert out.unit_status == testing.ActiveStatus(PUBLIC_AUTH)
    data = out.get_relation(relation.id).local_app_data
    assert set(data) == set(ids.IdentityServiceProviderData.keys())
    answer = ids.IdentityServiceProviderData.from_databag(data)
    assert answer is not None
    assert answer.internal_auth_url == answer.admin_auth_url == "http://keystone-k8s.test-model.svc:5000/v3"
    assert answer.public_auth_url == PUBLIC_AUTH
    assert (answer.service_project_name, answer.service_domain_name) == ("services", "service_domain")
    assert answer.api_version == "v3" and answer.region == "RegionOne" and answer.admin_role == "admin"
    assert json.loads(answer.processed_extra_roles) == ["member"]
    credentials = secret(out, "credentials_svc_glance")
    assert credentials.id == answer.service_credentials
    assert credentials.remote_grants == {relation.id: {"glance"}}
    user = keystone.user("svc_glance-")
    assert credentials.tracked_content == {"username": user.name, "password": user.password}
    assert answer.service_user_id == user.id
    assert keystone.roles_of(user) == {"admin", "service", "member"}
    assert keystone.catalog("glance") == {
        "admin": "http://glance.test-model.svc:9292",
        "internal": "http://glance.test-model.svc:9292",
        "public": "https://glance.example.com",
    }


def test_an_answered_request_calls_no_api_again(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    relation = glance_request()
    context = ctx()
    out = context.run(
        context.on.relation_changed(relation), complete(tmp_path, octest.RelationFixture(relation))
    )
    calls = len(keystone.calls)
    for event in (context.on.relation_changed(out.get_relation(relation.id)), context.on.leader_elected()):
        out = context.run(event, out)
    assert len(keystone.calls) == calls
    # a changed request is processed again, with the same user and secret
    changed = dataclasses.replace(
        out.get_relation(relation.id), remote_app_data=glance_request(region="RegionTwo").remote_app_data
    )
    out = context.run(
        context.on.relation_changed(changed),
        dataclasses.replace(out, relations=[*(r for r in out.relations if r.id != relation.id), changed]),
    )
    assert len(keystone.calls) > calls
    assert len([u for (n, _), u in keystone.users.items() if n.startswith("svc_glance")]) == 1
    assert "RegionTwo" in keystone.regions


def test_keystone_api_not_answering_is_waiting_then_answered(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    relation = glance_request()
    keystone.up = False
    context = ctx()
    out = context.run(
        context.on.relation_changed(relation), complete(tmp_path, octest.RelationFixture(relation))
    )
    assert out.unit_status == testing.WaitingStatus("keystone API not answering yet")
    assert out.get_relation(relation.id).local_app_data == {}
    keystone.up = True
    out = context.run(context.on.update_status(), out)
    assert out.unit_status == testing.ActiveStatus(PUBLIC_AUTH)
    assert "service-credentials" in out.get_relation(relation.id).local_app_data


@pytest.mark.parametrize(
    "data",
    [
        {"service-endpoints": "not json", "region": "RegionOne"},
        {"service-endpoints": '[{"service_name": 1}]', "region": "RegionOne"},
        {"service-endpoints": '[{"service_name": "x"}]'},
        {"region": "RegionOne", "extra-roles": "{"},
        {},
    ],
)
def test_malformed_or_incomplete_requests_are_left_alone(
    tmp_path: pathlib.Path, keystone: FakeKeystone, data: dict[str, str]
) -> None:
    relation = testing.Relation("identity-service", remote_app_name="glance", remote_app_data=data)
    context = ctx()
    out = context.run(
        context.on.relation_changed(relation), complete(tmp_path, octest.RelationFixture(relation))
    )
    assert out.unit_status == testing.ActiveStatus(PUBLIC_AUTH)
    assert out.get_relation(relation.id).local_app_data == {}


def test_identity_credentials_request_is_answered(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    relation = testing.Relation(
        "identity-credentials", remote_app_name="exporter", remote_app_data={"username": "exporter"}
    )
    context = ctx()
    out = context.run(
        context.on.relation_changed(relation), complete(tmp_path, octest.RelationFixture(relation))
    )
    data = out.get_relation(relation.id).local_app_data
    answer = idc.CredentialsProviderData.from_databag(data)
    assert answer is not None and set(data) == set(idc.CredentialsProviderData.keys())
    assert answer.internal_endpoint == "http://keystone-k8s.test-model.svc:5000/v3"
    assert answer.public_endpoint == PUBLIC_AUTH
    assert (answer.project_name, answer.user_domain_name) == ("services", "service_domain")
    credentials = secret(out, "credentials_exporter")
    assert credentials.id == answer.credentials
    assert credentials.remote_grants == {relation.id: {"exporter"}}
    assert credentials.tracked_content["password"] == keystone.user("exporter").password


def test_identity_credentials_may_not_take_the_admin_user(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    relation = testing.Relation(
        "identity-credentials", remote_app_name="evil", remote_app_data={"username": "admin"}
    )
    context = ctx()
    out = context.run(
        context.on.relation_changed(relation), complete(tmp_path, octest.RelationFixture(relation))
    )
    assert out.get_relation(relation.id).local_app_data == {}
    assert (
        keystone.admin_password is None
        or keystone.users[("admin", "default")].password == keystone.admin_password
    )


# -- rotation and actions ------------------------------------------------------------------


def test_fernet_secret_rotation_rotates_the_keys(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(tmp_path))
    before = secret(out, "fernet-keys").latest_content
    out = context.run(context.on.secret_rotate(secret(out, "fernet-keys")), out)
    after = secret(out, "fernet-keys").latest_content
    assert set(after) == {"fernet-0", "fernet-1", "fernet-2"}
    assert after["fernet-2"] == before["fernet-0"] and after["fernet-1"] == before["fernet-1"]
    assert files(out, context)["/etc/keystone/fernet-keys/2"] == before["fernet-0"]


def test_rotate_fernet_keys_action(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(tmp_path))
    for _ in range(4):
        out = context.run(context.on.action("rotate-fernet-keys"), out)
    assert context.action_results == {"primary-key": "5", "keys": "4", "applied": "now"}
    keys = secret(out, "fernet-keys").latest_content
    assert set(keys) == {"fernet-0", "fernet-3", "fernet-4", "fernet-5"}
    on_disk = {p for p in files(out, context) if p.startswith("/etc/keystone/fernet-keys/")}
    assert on_disk == {f"/etc/keystone/fernet-keys/{i}" for i in (0, 3, 4, 5)}


def test_admin_actions(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(tmp_path))
    password = secret(out, "admin-password").tracked_content["password"]
    context.run(context.on.action("get-admin-password"), out)
    assert context.action_results == {"password": password}
    context.run(context.on.action("get-admin-account"), out)
    results = context.action_results or {}
    assert f"export OS_PASSWORD={password}\n" in results["openrc"]
    assert f"export OS_AUTH_URL={PUBLIC_AUTH}\n" in results["openrc"]
    assert f"auth_url: {PUBLIC_AUTH}" in results["clouds-yaml"] and results["username"] == "admin"


def test_regenerate_admin_password_reruns_bootstrap(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(tmp_path))
    old = secret(out, "admin-password").tracked_content["password"]
    context = ctx()
    out = context.run(context.on.action("regenerate-password"), out)
    new = (context.action_results or {})["password"]
    assert new != old and secret(out, "admin-password").latest_content == {"password": new}
    (bootstrap,) = [e for e in context.exec_history["keystone"] if e.command[1] == "bootstrap"]
    assert bootstrap.environment["OS_BOOTSTRAP_PASSWORD"] == new


def test_regenerate_service_password(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    relation = glance_request()
    context = ctx()
    out = context.run(
        context.on.relation_changed(relation), complete(tmp_path, octest.RelationFixture(relation))
    )
    user = keystone.user("svc_glance-")
    out = context.run(context.on.action("regenerate-password", params={"username": user.name}), out)
    assert keystone.user("svc_glance-").password == (context.action_results or {})["password"]
    assert secret(out, "credentials_svc_glance").latest_content["password"] == user.password


def test_actions_that_change_things_need_the_leader(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), complete(tmp_path))
    for action in ("rotate-fernet-keys", "regenerate-password"):
        with pytest.raises(testing.ActionFailed, match="leader"):
            context.run(context.on.action(action), dataclasses.replace(out, leader=False))


def test_active_with_every_relation(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    context = ctx()
    state = octest.complete_state(CHARM, tmp_path, execs=EXECS)
    out = context.run(context.on.config_changed(), state)
    assert out.unit_status.name == "active"
    pushed = files(out, context)
    conf = pushed["/etc/keystone/keystone.conf"]
    assert "transport_url = rabbit://" in conf and "driver = messagingv2" in conf
    uwsgi = pushed["/etc/keystone/keystone-api-uwsgi.ini"]
    assert "https-socket = [::]:5000," in uwsgi
    check = out.get_container("keystone").plan.checks["keystone-api-up"]
    # Pebble would verify https://localhost against the system CAs and fail: curl checks the certificate
    assert (
        check.http is None
        and check.exec is not None
        and check.exec["command"]
        == (
            "curl --fail --silent --show-error --output /dev/null --max-time 3"
            " --cacert /etc/keystone/tls/ca.pem --resolve keystone-k8s.openstack.svc:5000:127.0.0.1 https://keystone-k8s.openstack.svc:5000/v3"
        )
    )


def test_key_repositories_are_private_directories(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    context = ctx()
    out = context.run(context.on.config_changed(), octest.complete_state(CHARM, tmp_path, execs=EXECS))
    root = out.get_container("keystone").get_filesystem(context)
    for directory in ("etc/keystone/fernet-keys", "etc/keystone/credential-keys"):
        # keystone warns about, and operators audit, key repositories others can read
        assert stat.S_IMODE((root / directory).stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "etc/keystone").stat().st_mode) == 0o755


@pytest.mark.parametrize(("expiration", "catalog_cached"), [(60, True), (0, False)])
def test_only_the_catalog_is_cached(
    tmp_path: pathlib.Path, keystone: FakeKeystone, expiration: int, catalog_cached: bool
) -> None:
    context = ctx()
    out = context.run(
        context.on.config_changed(), complete(tmp_path, config={"catalog-cache-expiration": expiration})
    )
    conf = configparser.ConfigParser(interpolation=None, strict=True)
    conf.read_string(files(out, context)["/etc/keystone/keystone.conf"])
    # in-process caches differ between workers: a cached role or revocation would be stale elsewhere
    cached = {s for s in conf.sections() if conf.has_option(s, "caching") and conf.getboolean(s, "caching")}
    assert cached == ({"catalog"} if catalog_cached else set())
    assert conf.getboolean("cache", "enabled") is catalog_cached
    for section in ("token", "revoke", "role", "identity", "resource", "credential"):
        assert conf.getboolean(section, "caching") is False


# -- what a steady hook costs, what the answer says about TLS ----------------------------------


@pytest.fixture
def hook_tools(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Count the hook tools ops.testing stands in for (each a process in a real deployment)."""
    counts: collections.Counter[str] = collections.Counter()
    depth = [0]

    def counted(name: str, original: Any) -> Any:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            # ops.testing's stand-ins call one another: only the outermost call is a process;
            # ops keeps is-leader for 30 s where ops.testing asks every time
            if depth[0] == 0 and not (name == "is_leader" and counts[name]):
                counts[name] += 1
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        return call

    for name, method in list(vars(mocking._MockModelBackend).items()):
        if callable(method) and not name.startswith("_") and name != "get_pebble":
            monkeypatch.setattr(mocking._MockModelBackend, name, counted(name, method))
    yield counts


def settled_with(tmp_path: pathlib.Path, apps: int) -> tuple[testing.Context[Any], testing.State, list[int]]:
    """Keystone having answered ``apps`` identity-service requirers, and their relation ids."""
    context = ctx()
    related = [glance_request(f"glance{i}") for i in range(apps)]
    state = complete(tmp_path, *(octest.RelationFixture(r) for r in related))
    for _ in range(2):
        state = context.run(context.on.config_changed(), state)
    for relation in related:
        assert "service-credentials" in state.get_relation(relation.id).local_app_data
    return context, state, [r.id for r in related]


def test_a_steady_hook_costs_the_same_however_many_applications_are_related(
    tmp_path: pathlib.Path, keystone: FakeKeystone, hook_tools: collections.Counter[str]
) -> None:
    cost = {}
    for apps in (1, 100):
        context, state, _ = settled_with(tmp_path / str(apps), apps)
        hook_tools.clear()
        out = context.run(context.on.config_changed(), state)
        assert out.unit_status == testing.ActiveStatus(PUBLIC_AUTH)
        cost[apps] = sum(hook_tools.values())
    assert cost[100] <= cost[1] + 2, (cost, hook_tools)


def test_changed_answer_inputs_reanswer_every_relation(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    context, state, _ = settled_with(tmp_path, 3)
    out = context.run(context.on.config_changed(), dataclasses.replace(state, config={"region": "RegionTwo"}))
    answered = [r for r in out.relations if r.endpoint == "identity-service"]
    assert len(answered) == 3
    assert {r.local_app_data["region"] for r in answered} == {"RegionTwo"}


def test_a_changed_request_is_answered_on_its_relation_changed(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    context, state, (_, second, _) = settled_with(tmp_path, 3)
    relation = state.get_relation(second)
    changed = dataclasses.replace(
        relation, remote_app_data=glance_request("glance1", region="RegionTwo").remote_app_data
    )
    state = dataclasses.replace(state, relations=[*(r for r in state.relations if r.id != second), changed])
    calls = len(keystone.calls)
    out = context.run(context.on.relation_changed(changed), state)
    assert len(keystone.calls) > calls and "RegionTwo" in keystone.regions
    assert out.get_relation(second).local_app_data["region"] == "RegionOne"  # keystone's own region


def test_a_changed_request_not_answered_for_an_api_outage_is_answered_later(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    context, state, (first, _) = settled_with(tmp_path, 2)
    relation = state.get_relation(first)
    changed = dataclasses.replace(
        relation, remote_app_data=glance_request("glance0", extra_roles=("member",)).remote_app_data
    )
    state = dataclasses.replace(state, relations=[*(r for r in state.relations if r.id != first), changed])
    keystone.up = False
    state = context.run(context.on.relation_changed(changed), state)
    assert state.unit_status == testing.WaitingStatus("keystone API not answering yet")
    keystone.up = True
    out = context.run(context.on.update_status(), state)
    assert json.loads(out.get_relation(first).local_app_data["processed-extra-roles"]) == ["member"]


def test_the_keys_of_a_departed_relation_are_forgotten(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    context, state, (first, second) = settled_with(tmp_path, 2)
    (peers,) = [r for r in state.relations if isinstance(r, testing.PeerRelation)]
    assert {f"identity-service-{first}", f"identity-service-{second}"} <= set(peers.local_app_data)
    out = context.run(context.on.relation_broken(state.get_relation(first)), state)
    (peers,) = [r for r in out.relations if isinstance(r, testing.PeerRelation)]
    assert f"identity-service-{first}" not in peers.local_app_data
    assert f"identity-service-{second}" in peers.local_app_data


def _answers(
    out: testing.State, requests: list[octest.RelationFixture]
) -> tuple[ids.IdentityServiceProviderData, idc.CredentialsProviderData]:
    service_relation, credentials_relation = (f.relation.id for f in requests)
    service = ids.IdentityServiceProviderData.from_databag(out.get_relation(service_relation).local_app_data)
    credentials = idc.CredentialsProviderData.from_databag(
        out.get_relation(credentials_relation).local_app_data
    )
    assert service is not None and credentials is not None
    return service, credentials


def _both_requests() -> list[octest.RelationFixture]:
    return [
        octest.RelationFixture(glance_request()),
        octest.RelationFixture(
            testing.Relation(
                "identity-credentials",
                remote_app_name="exporter",
                remote_app_data={"username": "exporter"},
            )
        ),
    ]


def test_the_pod_address_is_https_when_the_pod_serves_tls(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    # traefik terminates plain http for the internal URL, the pod itself serves the certificate
    context, requests = ctx(), _both_requests()
    state = complete(
        tmp_path,
        ingress_fixture("ingress-internal", "http://10.20.1.10/test-model-keystone-k8s", app="keystone-k8s"),
        certificates_fixture(app="keystone-k8s", model="test-model"),
        *requests,
    )
    out = context.run(context.on.config_changed(), state)
    assert out.unit_status.name == "active"
    service, credentials = _answers(out, requests)
    assert service.internal_auth_url == "http://10.20.1.10/test-model-keystone-k8s/v3"
    assert service.internal_protocol == "http"
    assert (service.auth_protocol, service.service_protocol, service.auth_port) == ("https", "https", "5000")
    assert (credentials.auth_protocol, credentials.internal_protocol) == ("https", "https")


def test_the_pod_address_is_http_without_a_certificate(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    # traefik serves https on the internal URL, the pod itself plain http
    context, requests = ctx(), _both_requests()
    state = complete(
        tmp_path,
        ingress_fixture("ingress-internal", "https://keystone.internal.example", app="keystone-k8s"),
        *requests,
    )
    out = context.run(context.on.config_changed(), state)
    assert out.unit_status.name == "active"
    service, credentials = _answers(out, requests)
    assert service.internal_auth_url == "https://keystone.internal.example/v3"
    assert service.internal_protocol == "https"
    assert (service.auth_protocol, service.service_protocol, service.auth_port) == ("http", "http", "5000")
    assert (credentials.auth_protocol, credentials.internal_protocol) == ("http", "http")


def test_a_certificate_arriving_later_reanswers_with_https(
    tmp_path: pathlib.Path, keystone: FakeKeystone
) -> None:
    context, requests = ctx(), _both_requests()
    ingress = ingress_fixture(
        "ingress-internal", "http://10.20.1.10/test-model-keystone-k8s", app="keystone-k8s"
    )
    out = context.run(context.on.config_changed(), complete(tmp_path, ingress, *requests))
    assert _answers(out, requests)[0].auth_protocol == "http"
    certificates = certificates_fixture(app="keystone-k8s", model="test-model")
    out = context.run(
        context.on.relation_changed(certificates.relation), octest.state_with([certificates], base=out)
    )
    service, credentials = _answers(out, requests)
    assert (service.auth_protocol, credentials.auth_protocol) == ("https", "https")


def test_a_new_leader_reads_every_request(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    # the request changed while another unit led: this unit may never have seen its relation-changed
    context, state, (_, second) = settled_with(tmp_path, 2)
    changed = dataclasses.replace(
        state.get_relation(second),
        remote_app_data=glance_request("glance1", region="RegionTwo").remote_app_data,
    )
    state = dataclasses.replace(state, relations=[*(r for r in state.relations if r.id != second), changed])
    context.run(context.on.config_changed(), state)
    assert "RegionTwo" not in keystone.regions  # no event of that relation: not read
    context.run(context.on.leader_elected(), state)
    assert "RegionTwo" in keystone.regions


def test_an_upgrade_answers_every_request_again(tmp_path: pathlib.Path, keystone: FakeKeystone) -> None:
    # a new revision may answer differently (as this one does the protocol of the pod address)
    context, state, _ = settled_with(tmp_path, 2)
    calls = len(keystone.calls)
    out = context.run(context.on.upgrade_charm(), state)
    assert out.unit_status == testing.ActiveStatus(PUBLIC_AUTH)
    assert keystone.calls[calls:].count("ensure_user") == 2
