"""glance-k8s: given a state, after an event, what an operator and the image consumers see."""

from __future__ import annotations

import configparser
import dataclasses
import json
import pathlib
from typing import Any

import ops
import pytest
from openstack_charms.testing import (
    RelationFixture,
    assert_blocked_without_each_mandatory,
    assert_idempotent,
    assert_order_invariant,
    charm_context,
    container,
    mandatory_endpoints,
    pushed_files,
    state_with,
)
from openstack_charms.testing.identity import (
    KEYSTONE_INTERNAL_URL,
    KEYSTONE_PUBLIC_URL,
    identity_service_fixture,
)
from openstack_charms.testing.relations import (
    MYSQL_ENDPOINT,
    RABBITMQ_HOSTNAME,
    amqp_fixture,
    ca_fixture,
    certificates_fixture,
    database_fixture,
    ingress_fixture,
)
from ops import testing

CHARM = "glance-k8s"
CONF = "/etc/glance/glance-api.conf"
UWSGI = "/etc/glance/glance-api-uwsgi.ini"
IMAGES = "/var/lib/glance/images"
DB_SYNC = ["glance-manage", "db_sync"]
LOAD_METADEFS = ["glance-manage", "db_load_metadefs", "/etc/glance/metadefs"]
INTERNAL_URL = "http://10.20.0.5/openstack-glance"


@pytest.fixture
def ctx() -> testing.Context[Any]:
    return charm_context(CHARM)


def relations(*, amqp: bool = True) -> list[RelationFixture]:
    fixtures = [
        database_fixture(database="glance"),
        identity_service_fixture(requirer_app="glance"),
        ingress_fixture("ingress-internal", INTERNAL_URL),
    ]
    return [*fixtures, amqp_fixture()] if amqp else fixtures


def glance_container(root: pathlib.Path, *, persistent: bool = True, **kwargs: Any) -> testing.Container:
    """The workload container with the local-repository volume mounted, as Juju does.

    ``persistent`` keeps /etc, /run and /var between runs (one pod); without it
    every run is a new pod that finds only the image volume again.
    """
    images = root / "glance" / IMAGES.lstrip("/")
    images.mkdir(parents=True, exist_ok=True)
    execs = kwargs.pop("execs", {testing.Exec(DB_SYNC), testing.Exec(LOAD_METADEFS)})
    if persistent:
        return container("glance", root, execs=execs, **kwargs)
    volume = {"local-repository": testing.Mount(location=IMAGES, source=images)}
    return testing.Container("glance", can_connect=True, execs=execs, mounts=volume, **kwargs)


def base(
    root: pathlib.Path,
    *,
    leader: bool = True,
    peer_data: dict[str, str] | None = None,
    persistent: bool = True,
    **kwargs: Any,
) -> testing.State:
    return testing.State(
        leader=leader,
        model=testing.Model(name="openstack"),
        relations=[testing.PeerRelation("peers", local_app_data=peer_data or {})],
        containers=[glance_container(root, persistent=persistent)],
        storages=[testing.Storage("local-repository")],
        **kwargs,
    )


def complete(
    root: pathlib.Path, *, amqp: bool = True, fixtures: list[RelationFixture] | None = None, **kwargs: Any
) -> testing.State:
    return state_with(relations(amqp=amqp) if fixtures is None else fixtures, base=base(root, **kwargs))


def remote_data(fixture: RelationFixture) -> dict[str, str]:
    assert isinstance(fixture.relation, testing.Relation)
    return dict(fixture.relation.remote_app_data)


def parse(text: str) -> configparser.ConfigParser:
    # [DEFAULT] is an ordinary section to oslo.config: keep its keys out of the others
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
    parser.read_string(text)
    return parser


def runs(ctx: testing.Context[Any], argv: list[str]) -> list[testing.ExecArgs]:
    return [e for e in ctx.exec_history.get("glance", []) if list(e.command) == argv]


def conf_of(ctx: testing.Context[Any], out: testing.State) -> configparser.ConfigParser:
    return parse(pushed_files(out, ctx, "glance")[CONF])


# -- active, and what it wrote -------------------------------------------------


def test_active_with_its_relations(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    assert out.unit_status == testing.ActiveStatus()
    assert out.app_status == testing.ActiveStatus()


def test_active_without_the_optional_amqp(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path, amqp=False))
    assert out.unit_status == testing.ActiveStatus()
    conf = conf_of(ctx, out)
    assert "transport_url" not in conf["DEFAULT"]
    assert conf["oslo_messaging_notifications"]["driver"] == "noop"


def test_glance_api_conf(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    fixtures = relations()
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path, fixtures=fixtures))
    conf = conf_of(ctx, out)
    user = f"relation-{fixtures[0].relation.id}"
    assert conf["database"]["connection"] == f"mysql+pymysql://{user}:db-password@{MYSQL_ENDPOINT}/glance"
    auth = conf["keystone_authtoken"]
    assert auth["auth_url"] == f"{KEYSTONE_INTERNAL_URL}/v3"
    assert auth["www_authenticate_uri"] == f"{KEYSTONE_PUBLIC_URL}/v3"
    assert auth["username"].startswith("svc_glance-")
    assert auth["password"] == "svc-password"
    assert auth["service_type"] == "image"
    assert conf["paste_deploy"]["flavor"] == "keystone"
    assert conf["paste_deploy"]["config_file"] == "/etc/glance/glance-api-paste.ini"
    default = conf["DEFAULT"]
    assert default["enabled_backends"] == "filestore:file"
    # copy-image is offered only with a second store (a copy to the only store never finishes)
    assert default["enabled_import_methods"] == "[glance-direct,web-download]"
    assert (
        default["worker_self_reference_url"]
        == "http://glance-k8s-0.glance-k8s-endpoints.openstack.svc.cluster.local:9292"
    )
    assert "image_size_cap" not in default
    assert conf["glance_store"]["default_backend"] == "filestore"
    assert conf["filestore"]["filesystem_store_datadir"] == f"{IMAGES}/store/"
    assert conf["os_glance_staging_store"]["filesystem_store_datadir"] == "/var/lib/glance/staging/"
    assert conf["os_glance_tasks_store"]["filesystem_store_datadir"] == "/var/lib/glance/tasks_work_dir/"
    assert conf["image_format"]["disk_formats"] == "ami,ari,aki,vhd,vhdx,vmdk,raw,qcow2,vdi,iso,ploop"
    assert conf["oslo_concurrency"]["lock_path"] == "/var/lock/glance"
    assert conf["oslo_middleware"]["enable_proxy_headers_parsing"] == "true"


def test_notifications_go_to_rabbitmq(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    conf = conf_of(ctx, out)
    transport_url = conf["DEFAULT"]["transport_url"]
    assert transport_url == f"rabbit://glance:rabbit-password@{RABBITMQ_HOSTNAME}:5672/openstack"
    assert conf["oslo_messaging_notifications"]["driver"] == "messagingv2"
    assert conf["oslo_messaging_notifications"]["transport_url"] == transport_url


def test_upload_limits_and_formats_follow_config(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    config = {
        "image-size-cap": "5G",
        "disk-formats": "qcow2, raw",
        "import-methods": "glance-direct",
    }
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path, config=config))
    conf = conf_of(ctx, out)
    assert conf["DEFAULT"]["image_size_cap"] == str(5 * 1024**3)
    assert conf["image_format"]["disk_formats"] == "qcow2,raw"
    assert conf["DEFAULT"]["enabled_import_methods"] == "[glance-direct]"


def test_copy_image_needs_a_second_store(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    config = {"import-methods": "glance-direct,copy-image"}
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path, config=config))
    assert out.unit_status == testing.BlockedStatus(
        "config option 'import-methods' has copy-image, which needs a second store; this charm has one"
    )


@pytest.mark.parametrize(("value", "size"), [("1024", 1024), ("500M", 500 * 1024**2), ("2TiB", 2 * 1024**4)])
def test_image_size_cap_units(
    ctx: testing.Context[Any], tmp_path: pathlib.Path, value: str, size: int
) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path, config={"image-size-cap": value}))
    assert conf_of(ctx, out)["DEFAULT"]["image_size_cap"] == str(size)


def test_config_file_is_not_world_readable(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    ctx.run(ctx.on.config_changed(), complete(tmp_path))
    assert (tmp_path / "glance" / CONF.lstrip("/")).stat().st_mode & 0o777 == 0o640


def test_uwsgi_accepts_chunked_uploads(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    uwsgi = parse(pushed_files(out, ctx, "glance")[UWSGI])["uwsgi"]
    assert uwsgi["module"] == "glance.wsgi.api:application"
    assert uwsgi["http-socket"] == "[::]:9292"
    assert uwsgi["http-chunked-input"] == "true"
    assert uwsgi["http-auto-chunked"] == "true"
    assert uwsgi["http-raw-body"] == "true"


def test_pebble_layer(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    glance = out.get_container("glance")
    service = glance.plan.services["glance-api"]
    assert service.command == f"uwsgi --ini {UWSGI}"
    assert (service.user, service.group) == ("glance", "glance")
    assert glance.plan.checks["glance-api-up"].http == {"url": "http://localhost:9292/versions"}
    assert service.on_check_failure == {"glance-api-up": "restart"}
    assert glance.service_statuses["glance-api"] == ops.pebble.ServiceStatus.ACTIVE


def test_catalog_request(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    data = out.get_relations("identity-service")[0].local_app_data
    assert data["region"] == "RegionOne"
    (endpoint,) = json.loads(data["service-endpoints"])
    assert (endpoint["service_name"], endpoint["type"]) == ("glance", "image")
    assert endpoint["description"] == "OpenStack Image"
    assert endpoint["internal_url"] == endpoint["public_url"] == INTERNAL_URL


def test_tls_serves_https_and_trusts_the_received_ca(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    tls = [certificates_fixture(app="glance-k8s", model="openstack"), ca_fixture()]
    out = ctx.run(ctx.on.config_changed(), state_with([*relations(), *tls], base=base(tmp_path)))
    assert out.unit_status == testing.ActiveStatus()
    files = pushed_files(out, ctx, "glance")
    uwsgi = parse(files[UWSGI])["uwsgi"]
    assert uwsgi["https-socket"] == "[::]:9292,/etc/glance/tls/cert.pem,/etc/glance/tls/key.pem"
    assert uwsgi["http-chunked-input"] == "true"
    conf = parse(files[CONF])
    assert conf["keystone_authtoken"]["cafile"] == "/etc/glance/ca-bundle.pem"
    assert conf["DEFAULT"]["worker_self_reference_url"].startswith("https://glance-k8s-0.")
    check = out.get_container("glance").plan.checks["glance-api-up"]
    # Pebble would verify https://localhost against the system CAs and fail: curl checks the certificate
    assert (
        check.http is None
        and check.exec is not None
        and check.exec["command"]
        == (
            "curl --fail --silent --show-error --output /dev/null --max-time 3"
            " --cacert /etc/glance/tls/ca.pem --resolve glance-k8s.openstack.svc:9292:127.0.0.1 https://glance-k8s.openstack.svc:9292/versions"
        )
    )


# -- the image store --------------------------------------------------------------


def test_the_file_store_is_a_directory_on_the_volume(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    ctx.run(ctx.on.config_changed(), complete(tmp_path))
    store = tmp_path / "glance" / IMAGES.lstrip("/") / "store"
    assert store.is_dir()
    assert store.stat().st_mode & 0o777 == 0o750
    assert [e.command for e in ctx.exec_history["glance"]] == [DB_SYNC, LOAD_METADEFS], "nothing runs as root"
    assert {e.user for e in ctx.exec_history["glance"]} == {"glance"}


def test_waiting_while_the_image_volume_is_not_mounted(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    state = complete(tmp_path)
    (tmp_path / "glance" / IMAGES.lstrip("/")).rmdir()
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus(f"waiting for storage local-repository at {IMAGES}")
    assert runs(ctx, DB_SYNC) == []


# -- db sync on the leader, once ---------------------------------------------


def test_db_sync_runs_once_on_the_leader(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    (sync,) = runs(ctx, DB_SYNC)
    assert sync.user == "glance"
    ctx.run(ctx.on.update_status(), out)
    assert len(runs(ctx, DB_SYNC)) == 1, "a second event must not sync again"


def test_non_leader_waits_for_the_leaders_db_sync(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path, leader=False))
    assert out.unit_status == testing.WaitingStatus("waiting for the leader to run glance-manage db_sync")
    assert runs(ctx, DB_SYNC) == []
    assert not out.get_container("glance").service_statuses


def test_non_leader_follows_once_the_leader_synced(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    fixtures = relations()
    leader = ctx.run(ctx.on.config_changed(), complete(tmp_path / "leader", fixtures=fixtures))
    peer_data = dict(leader.get_relations("peers")[0].local_app_data)
    follower = charm_context(CHARM)
    state = complete(tmp_path / "follower", fixtures=fixtures, leader=False, peer_data=peer_data)
    out = follower.run(follower.on.config_changed(), state)
    assert out.unit_status == testing.ActiveStatus()
    assert runs(follower, DB_SYNC) == []


# -- what is missing ------------------------------------------------------------


def test_blocked_names_each_missing_mandatory_relation(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    assert mandatory_endpoints(CHARM) == ["database", "identity-service", "ingress-internal"]
    assert_blocked_without_each_mandatory(ctx, relations(), mandatory_endpoints(CHARM), base=base(tmp_path))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"image-size-cap": "5 apples"},
            "config option 'image-size-cap' is '5 apples', must be a size such as 500M, 20G or 1T",
        ),
        (
            {"image-size-cap": "8192P"},
            "config option 'image-size-cap' is '8192P', must be more than 0 and less than 8 EiB",
        ),
        (
            {"disk-formats": "qcow2,raw,qcow2"},
            "config option 'disk-formats' is 'qcow2,raw,qcow2', has duplicates",
        ),
        ({"disk-formats": " , "}, "config option 'disk-formats' must name at least one value"),
        (
            {"disk-formats": "qcow2,Raw Disk"},
            "config option 'disk-formats' has invalid format names: Raw Disk",
        ),
        (
            {"import-methods": "glance-direct,glance-download"},
            "config option 'import-methods' has glance-download; "
            "choose among glance-direct, web-download, copy-image",
        ),
        ({"workers": 65}, "config option 'workers' is 65, must be between 1 and 64"),
    ],
)
def test_invalid_config_is_blocked_naming_the_option(
    ctx: testing.Context[Any], tmp_path: pathlib.Path, config: dict[str, Any], message: str
) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path, config=config))
    assert out.unit_status == testing.BlockedStatus(message)
    assert runs(ctx, DB_SYNC) == []


def test_incomplete_amqp_is_waiting_naming_the_field(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    amqp = amqp_fixture()
    broken = dataclasses.replace(amqp.relation, remote_app_data={"password": "p"}, remote_units_data={})
    fixtures = [*relations(amqp=False), RelationFixture(broken, amqp.secrets)]
    out = ctx.run(ctx.on.config_changed(), state_with(fixtures, base=base(tmp_path)))
    assert out.unit_status == testing.WaitingStatus("waiting for amqp (hostname)")
    assert not out.get_container("glance").service_statuses


def test_malformed_database_data_is_waiting_not_a_crash(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    database = database_fixture(database="glance")
    data = {**remote_data(database), "endpoints": "mysql-primary:not-a-port"}
    fixtures = [
        *relations()[1:],
        RelationFixture(dataclasses.replace(database.relation, remote_app_data=data), database.secrets),
    ]
    out = ctx.run(ctx.on.config_changed(), state_with(fixtures, base=base(tmp_path)))
    assert isinstance(out.unit_status, ops.WaitingStatus)
    assert out.unit_status.message.startswith("waiting for database (")


# -- generic properties -----------------------------------------------------------


def test_the_same_event_twice_changes_nothing(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    once = assert_idempotent(ctx, complete(tmp_path), ctx.on.config_changed())
    assert once.unit_status == testing.ActiveStatus()


def test_relation_order_does_not_matter(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = assert_order_invariant(ctx, relations(), base=base(tmp_path, persistent=False))
    assert out.unit_status == testing.ActiveStatus()


# -- image-service (nova, cinder) -------------------------------------------------


def consumer() -> testing.Relation:
    return testing.Relation("image-service", interface="glance", remote_app_name="nova")


def test_image_service_publishes_the_api_url(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    state = complete(tmp_path)
    out = ctx.run(
        ctx.on.config_changed(), dataclasses.replace(state, relations=[*state.relations, consumer()])
    )
    relation = out.get_relations("image-service")[0]
    assert relation.local_app_data == {"glance-api-server": INTERNAL_URL}
    assert relation.local_unit_data["glance-api-server"] == INTERNAL_URL


def test_non_leader_publishes_in_its_unit_databag_only(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    state = complete(tmp_path, leader=False)
    out = ctx.run(
        ctx.on.config_changed(), dataclasses.replace(state, relations=[*state.relations, consumer()])
    )
    relation = out.get_relations("image-service")[0]
    assert relation.local_app_data == {}
    assert relation.local_unit_data["glance-api-server"] == INTERNAL_URL


def test_paste_pipeline_is_the_charms_own_and_authenticates(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    paste = configparser.ConfigParser(interpolation=None)
    paste.read_string(pushed_files(out, ctx, "glance")["/etc/glance/glance-api-paste.ini"])
    # flavor "keystone" makes glance load the pipeline named glance-api-keystone
    assert paste["composite:glance-api-keystone"]["/"] == "api"
    pipeline = paste["composite:api"]["keystone"].split()
    assert pipeline.index("authtoken") < pipeline.index("context") < pipeline.index("rootapp")
    for name in pipeline[:-1]:
        assert f"filter:{name}" in paste, f"pipeline names an undefined filter {name}"
