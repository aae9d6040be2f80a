"""nova-k8s: given a state, after an event, what an operator, keystone and the hypervisors see."""

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
    charm_context,
    container,
    mandatory_endpoints,
    pushed_files,
    state_with,
)
from openstack_charms.testing.identity import KEYSTONE_INTERNAL_URL, identity_service_fixture
from openstack_charms.testing.relations import (
    MYSQL_ENDPOINT,
    RABBITMQ_HOSTNAME,
    amqp_fixture,
    certificates_fixture,
    database_fixture,
    ingress_fixture,
    readiness_fixture,
)
from ops import testing

CHARM = "nova-k8s"
CONTAINERS = ("nova-api", "nova-metadata", "nova-scheduler", "nova-conductor", "nova-spiceproxy")
CONF = "/etc/nova/nova.conf"
PASTE = "/etc/nova/api-paste.ini"
INTERNAL_URL = "http://10.20.0.5/openstack-nova"
PUBLIC_URL = "https://nova.example.com/openstack-nova"
METADATA_URL = "http://10.20.0.5/openstack-nova-metadata"
CONSOLE_URL = "https://console.example.com/openstack-nova-spiceproxy"
SPICE_URL = f"{CONSOLE_URL}/spice_auto.html?path=/openstack-nova-spiceproxy"
API_DB_SYNC = ["nova-manage", "api_db", "sync"]
DB_SYNC = ["nova-manage", "db", "sync"]
LIST_HOSTS = ["nova-manage", "cell_v2", "list_hosts"]
DISCOVER = ["nova-manage", "cell_v2", "discover_hosts", "--verbose"]
EXECS = {testing.Exec(["nova-manage"]), testing.Exec(["sh", "-c"])}


@pytest.fixture
def ctx() -> testing.Context[Any]:
    return charm_context(CHARM)


def mandatory() -> list[RelationFixture]:
    return [
        database_fixture("api-database", "nova_api", relation_id=911_000),
        database_fixture("database", "nova", relation_id=912_000),
        database_fixture("cell-database", "nova_cell0", relation_id=913_000, password="cell0-password"),
        amqp_fixture(),
        identity_service_fixture(requirer_app="nova"),
        readiness_fixture(),
        ingress_fixture("ingress-internal", INTERNAL_URL),
    ]


def relations() -> list[RelationFixture]:
    return [
        *mandatory(),
        ingress_fixture("ingress-public", PUBLIC_URL),
        ingress_fixture("ingress-metadata", METADATA_URL),
        ingress_fixture("ingress-console", CONSOLE_URL),
    ]


#: far above the ids ops.testing hands out by itself across the whole suite's process
HYPERVISOR_RELATION = 940_000


def hypervisor(relation_id: int = HYPERVISOR_RELATION) -> testing.Relation:
    return testing.Relation(
        "nova-service", interface="nova", remote_app_name="openstack-hypervisor", id=relation_id
    )


def base(
    root: pathlib.Path | None = None,
    *,
    leader: bool = True,
    peer_data: dict[str, str] | None = None,
    execs: set[testing.Exec] | None = None,
    **kwargs: Any,
) -> testing.State:
    execs = EXECS if execs is None else execs
    return testing.State(
        leader=leader,
        model=testing.Model(name="openstack"),
        relations=[testing.PeerRelation("peers", local_app_data=peer_data or {})],
        containers=[container(c, root, execs=execs if c == "nova-api" else set()) for c in CONTAINERS],
        **kwargs,
    )


def complete(
    root: pathlib.Path | None = None, *, fixtures: list[RelationFixture] | None = None, **kwargs: Any
) -> testing.State:
    return state_with(relations() if fixtures is None else fixtures, base=base(root, **kwargs))


def parse(text: str) -> configparser.ConfigParser:
    # [DEFAULT] is an ordinary section to oslo.config; [pci] alias repeats (a MultiStrOpt)
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__", strict=False)
    parser.read_string(text)
    return parser


def conf(
    ctx: testing.Context[Any], out: testing.State, target: str = "nova-api"
) -> configparser.ConfigParser:
    return parse(pushed_files(out, ctx, target)[CONF])


def manage(ctx: testing.Context[Any]) -> list[list[str]]:
    return [list(e.command) for e in ctx.exec_history.get("nova-api", [])]


def peer_data(out: testing.State) -> dict[str, str]:
    return dict(next(r for r in out.relations if isinstance(r, testing.PeerRelation)).local_app_data)


def shared_secret(out: testing.State) -> testing.Secret:
    return next(s for s in out.secrets if s.label == "shared-metadata-secret")


# -- active, and what it wrote -------------------------------------------------


def test_active_with_every_relation(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    assert out.unit_status == ops.ActiveStatus()
    for name in CONTAINERS:
        assert pushed_files(out, ctx, name)[CONF] == pushed_files(out, ctx, "nova-api")[CONF]


def test_nova_conf_databases_queue_and_keystone(ctx: testing.Context[Any]) -> None:
    c = conf(ctx, ctx.run(ctx.on.config_changed(), complete()))
    host = MYSQL_ENDPOINT
    assert c["api_database"]["connection"] == f"mysql+pymysql://relation-911000:db-password@{host}/nova_api"
    assert c["database"]["connection"] == f"mysql+pymysql://relation-912000:db-password@{host}/nova"
    assert (
        c["DEFAULT"]["transport_url"] == f"rabbit://nova:rabbit-password@{RABBITMQ_HOSTNAME}:5672/openstack"
    )
    # the unit's own host: its scheduler and conductor are services of their own in nova's list
    assert c["DEFAULT"]["host"] == "nova-k8s-0"
    # cell0's database is nova-manage's business (its mapping), never a section of nova.conf
    assert (
        "nova_cell0" not in pushed_files(ctx.run(ctx.on.config_changed(), complete()), ctx, "nova-api")[CONF]
    )
    assert c["keystone_authtoken"]["auth_url"] == f"{KEYSTONE_INTERNAL_URL}/v3"
    assert c["keystone_authtoken"]["service_type"] == "compute"
    assert c["service_user"].getboolean("send_service_user_token") is True


def test_placement_neutron_glance_cinder_come_from_the_catalog(ctx: testing.Context[Any]) -> None:
    c = conf(ctx, ctx.run(ctx.on.config_changed(), complete()))
    for section in ("placement", "neutron"):
        assert c[section]["auth_type"] == "password"
        assert c[section]["auth_url"] == f"{KEYSTONE_INTERNAL_URL}/v3"
        assert c[section]["username"].startswith("svc_nova")
        assert c[section]["region_name"] == "RegionOne"
        assert c[section]["valid_interfaces"] == "internal"
        assert "endpoint_override" not in c[section]
    assert c["glance"]["valid_interfaces"] == "internal"
    assert "api_servers" not in c["glance"]
    assert c["cinder"]["catalog_info"] == "volumev3::internalURL"
    assert c["cinder"]["os_region_name"] == "RegionOne"


def test_metadata_proxy_secret_is_a_juju_secret_rendered_in_nova_conf(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    secret = shared_secret(out)
    value = secret.tracked_content["metadata-proxy-shared-secret"]
    assert len(value) == 36
    c = conf(ctx, out)
    assert c["neutron"]["metadata_proxy_shared_secret"] == value
    assert c["neutron"].getboolean("service_metadata_proxy") is True
    # the id, not the value, is in peer data; the file is not world-readable
    assert value not in json.dumps(peer_data(out))
    root = out.get_container("nova-api").get_filesystem(ctx)
    assert (root / CONF.lstrip("/")).stat().st_mode & 0o007 == 0
    # a second run keeps the same secret
    again = ctx.run(ctx.on.config_changed(), out)
    assert [s.label for s in again.secrets].count("shared-metadata-secret") == 1
    assert conf(ctx, again)["neutron"]["metadata_proxy_shared_secret"] == value


def test_scheduler_console_and_ratios(ctx: testing.Context[Any]) -> None:
    config = {
        "cpu-allocation-ratio": 8.0,
        "ram-allocation-ratio": 1.5,
        "scheduler-enabled-filters": "ComputeFilter, PciPassthroughFilter",
        "default-availability-zone": "zone-a",
        "pci-aliases": '[{"vendor_id": "8086", "product_id": "1563", "name": "sriov"}]',
    }
    c = conf(ctx, ctx.run(ctx.on.config_changed(), complete(config=config)))
    assert c["DEFAULT"].getfloat("cpu_allocation_ratio") == 8.0
    assert c["DEFAULT"].getfloat("ram_allocation_ratio") == 1.5
    assert "disk_allocation_ratio" not in c["DEFAULT"]
    assert c["DEFAULT"]["default_availability_zone"] == "zone-a"
    assert c["filter_scheduler"]["enabled_filters"] == "ComputeFilter,PciPassthroughFilter"
    assert json.loads(c["pci"]["alias"])["name"] == "sriov"
    assert c["scheduler"].getint("discover_hosts_in_cells_interval") == 30
    assert c["spice"].getboolean("enabled") is True
    assert c["spice"]["html5proxy_base_url"] == SPICE_URL
    assert c["spice"].getint("html5proxy_port") == 6082
    assert c["vnc"].getboolean("enabled") is False
    assert c["console"]["allowed_origins"] == "console.example.com"


def test_only_the_leader_discovers_hosts(ctx: testing.Context[Any]) -> None:
    leader = ctx.run(ctx.on.config_changed(), complete())
    follower = ctx.run(
        ctx.on.config_changed(),
        complete(leader=False, peer_data=peer_data(leader), secrets=list(leader.secrets)),
    )
    assert follower.unit_status == ops.ActiveStatus()
    assert conf(ctx, follower)["scheduler"].getint("discover_hosts_in_cells_interval") == -1


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("cpu-allocation-ratio", -1.0),
        ("scheduler-enabled-filters", "ComputeFilter;rm -rf"),
        ("scheduler-enabled-filters", ""),
        ("default-availability-zone", "zone a"),
        ("pci-aliases", "not json"),
        ("pci-aliases", '[{"vendor_id": "8086"}]'),
        ("workers", 0),
    ],
)
def test_invalid_config_is_blocked_naming_the_option(
    ctx: testing.Context[Any], option: str, value: Any
) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(config={option: value}))
    assert isinstance(out.unit_status, ops.BlockedStatus)
    assert option in out.unit_status.message


def test_api_paste_ini_and_uwsgi_in_both_api_containers(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    for name, module, port in (
        ("nova-api", "nova.wsgi.osapi_compute:application", 8774),
        ("nova-metadata", "nova.wsgi.metadata:application", 8775),
    ):
        files = pushed_files(out, ctx, name)
        paste = parse(files[PASTE])
        assert "composite:osapi_compute" in paste and "composite:metadata" in paste
        uwsgi = files[f"/etc/nova/{name}-uwsgi.ini"]
        assert f"module = {module}" in uwsgi
        assert f":{port}" in uwsgi
        assert "add-header = Connection: close" in uwsgi


# -- Pebble layers and checks ----------------------------------------------------


def test_one_layer_and_check_per_container(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    services = {}
    for name in CONTAINERS:
        plan = out.get_container(name).layers["charm"].to_dict()
        services[name] = plan["services"]
        assert plan["checks"], f"{name} has no check"
    api = services["nova-api"]["nova-api"]
    assert api["command"] == "uwsgi --ini /etc/nova/nova-api-uwsgi.ini"
    assert api["environment"] == {"OS_NOVA_CONFIG_DIR": "/etc/nova"}
    assert api["user"] == "nova"
    assert services["nova-metadata"]["nova-metadata"]["environment"] == {"OS_NOVA_CONFIG_DIR": "/etc/nova"}
    for daemon in ("nova-scheduler", "nova-conductor"):
        assert services[daemon][daemon]["command"] == f"{daemon} --config-file /etc/nova/nova.conf"
    spice = services["nova-spiceproxy"]["nova-spicehtml5proxy"]
    assert spice["command"] == "nova-spicehtml5proxy --config-file /etc/nova/nova.conf"
    assert spice["on-check-failure"] == {"console-up": "restart"}
    checks = {n: out.get_container(n).layers["charm"].to_dict()["checks"] for n in CONTAINERS}
    assert checks["nova-api"]["nova-api-up"]["http"]["url"] == "http://localhost:8774/"
    assert checks["nova-metadata"]["nova-metadata-up"]["http"]["url"] == "http://localhost:8775/"
    assert checks["nova-spiceproxy"]["console-up"]["tcp"]["port"] == 6082
    assert checks["nova-conductor"]["nova-conductor-running"]["exec"]["command"] == "pgrep -f nova-conductor"


def test_tls_serves_the_apis_and_the_console_over_https(ctx: testing.Context[Any]) -> None:
    fixtures = [*relations(), certificates_fixture(app=CHARM, model="openstack")]
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=fixtures))
    assert out.unit_status == ops.ActiveStatus()
    c = conf(ctx, out, "nova-spiceproxy")
    assert c["DEFAULT"].getboolean("ssl_only") is True
    assert c["DEFAULT"]["cert"] == "/etc/nova/tls/cert.pem"
    assert "/etc/nova/tls/key.pem" in pushed_files(out, ctx, "nova-spiceproxy")
    assert "https-socket" in pushed_files(out, ctx, "nova-metadata")["/etc/nova/nova-metadata-uwsgi.ini"]


def test_console_access_off_stops_the_proxy(ctx: testing.Context[Any]) -> None:
    state = complete(config={"console-access": False})
    state = dataclasses.replace(
        state,
        containers=[
            dataclasses.replace(
                c,
                layers={"charm": ops.pebble.Layer({"services": {"nova-spicehtml5proxy": {"command": "x"}}})},
                service_statuses={"nova-spicehtml5proxy": ops.pebble.ServiceStatus.ACTIVE},
            )
            if c.name == "nova-spiceproxy"
            else c
            for c in state.containers
        ],
    )
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == ops.ActiveStatus()
    assert conf(ctx, out)["spice"].getboolean("enabled") is False
    status = out.get_container("nova-spiceproxy").service_statuses["nova-spicehtml5proxy"]
    assert status == ops.pebble.ServiceStatus.INACTIVE


# -- statuses ------------------------------------------------------------------------


def test_blocked_naming_each_missing_mandatory_relation(ctx: testing.Context[Any]) -> None:
    mandatory_names = mandatory_endpoints(CHARM)
    assert set(mandatory_names) == {f.relation.endpoint for f in mandatory()}
    assert_blocked_without_each_mandatory(ctx, mandatory(), mandatory_names, base=base())


def test_without_any_relation_every_mandatory_one_is_named(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), base())
    assert isinstance(out.unit_status, ops.BlockedStatus)
    for endpoint in ("api-database", "database", "cell-database", "amqp", "identity-service", "placement"):
        assert endpoint in out.unit_status.message


def test_waits_for_placement_to_be_ready(ctx: testing.Context[Any]) -> None:
    fixtures = [f for f in relations() if f.relation.endpoint != "placement"]
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=[*fixtures, readiness_fixture(ready=False)]))
    assert isinstance(out.unit_status, ops.WaitingStatus)
    assert "placement (ready)" in out.unit_status.message
    assert manage(ctx) == []


def test_a_follower_waits_for_the_leader_s_secret(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(leader=False))
    assert isinstance(out.unit_status, ops.WaitingStatus)
    assert "leader" in out.unit_status.message and "shared secret" in out.unit_status.message


@pytest.mark.parametrize(
    "bad",
    [
        {"ingress": "not json"},
        {"ingress": json.dumps({"url": "ftp://x"})},
        {"ingress": json.dumps(["a list"])},
        {"ingress": json.dumps({"url": "http://a b/"})},
    ],
)
def test_bad_ingress_data_never_crashes_a_hook(ctx: testing.Context[Any], bad: dict[str, str]) -> None:
    fixtures = [f for f in relations() if f.relation.endpoint != "ingress-console"]
    broken = testing.Relation("ingress-console", interface="ingress", remote_app_data=bad)
    state = complete(fixtures=fixtures)
    state = dataclasses.replace(state, relations=[*state.relations, broken, hypervisor()])
    out = ctx.run(ctx.on.relation_changed(broken), state)
    # an optional ingress never holds nova back: the hypervisors just get no console URL yet
    assert out.unit_status.name == "active"
    # Juju keeps no empty value: an empty URL is an absent key, which requirers read as ""
    assert "spice-proxy-url" not in out.get_relation(HYPERVISOR_RELATION).local_app_data


def test_bad_placement_data_waits(ctx: testing.Context[Any]) -> None:
    fixtures = [f for f in relations() if f.relation.endpoint != "placement"]
    broken = testing.Relation("placement", interface="placement", remote_app_data={"ready": "{"})
    state = complete(fixtures=fixtures)
    out = ctx.run(
        ctx.on.relation_changed(broken), dataclasses.replace(state, relations=[*state.relations, broken])
    )
    assert isinstance(out.unit_status, ops.WaitingStatus)


# -- leader work ----------------------------------------------------------------------


def test_leader_work_in_order_once(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    ran = manage(ctx)
    assert ran[0] == API_DB_SYNC
    assert ran[1][:2] == ["sh", "-c"] and "map_cell0" in ran[1][2]
    assert ran[2][:2] == ["sh", "-c"] and "create_cell --name cell1" in ran[2][2]
    assert ran[3] == DB_SYNC
    assert len(ran) == 4
    # no password in any command line: cell0's URL is in the environment, cell1's in nova.conf
    assert not any("password" in " ".join(c) for c in ran)
    cell0 = ctx.exec_history["nova-api"][1]
    assert "cell0-password" in cell0.environment["CELL0_CONNECTION"]
    assert cell0.environment["CELL0_CONNECTION"].endswith("/nova_cell0")
    assert "update_cell --cell_uuid 00000000-0000-0000-0000-000000000000" in ran[1][2]
    assert "update_cell" in ran[2][2] and "list_cells" in ran[2][2]
    assert all(e.user == "nova" for e in ctx.exec_history["nova-api"])
    ctx.exec_history.clear()
    assert_idempotent(ctx, out, ctx.on.config_changed())
    assert manage(ctx) == []


def test_leader_work_runs_again_when_a_database_moves(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    ctx.exec_history.clear()
    moved = database_fixture("database", "nova", relation_id=912_000, endpoints="mysql-new:3306")
    relations_ = [r for r in out.relations if r.endpoint != "database"]
    out = ctx.run(
        ctx.on.config_changed(),
        dataclasses.replace(
            out, relations=[*relations_, moved.relation], secrets=[*out.secrets, *moved.secrets]
        ),
    )
    ran = manage(ctx)
    assert ran[0][2:] != []
    assert [c[:2] for c in ran] == [["sh", "-c"], ["nova-manage", "db"]], ran


def test_a_failing_step_waits_and_stops_the_ones_after(ctx: testing.Context[Any]) -> None:
    execs = {testing.Exec(["nova-manage"]), testing.Exec(["sh", "-c"], return_code=1, stderr="boom")}
    out = ctx.run(ctx.on.config_changed(), complete(execs=execs))
    assert isinstance(out.unit_status, ops.WaitingStatus)
    assert "failed" in out.unit_status.message
    assert manage(ctx) == [API_DB_SYNC, manage(ctx)[1]]


# -- nova-service ------------------------------------------------------------------------


def test_nova_service_databag_and_grant(ctx: testing.Context[Any]) -> None:
    config = {"pci-aliases": '[{"name": "gpu", "vendor_id": "10de", "product_id": "1eb8"}]', "region": "R2"}
    state = complete(config=config)
    relation = hypervisor()
    out = ctx.run(
        ctx.on.relation_changed(relation), dataclasses.replace(state, relations=[*state.relations, relation])
    )
    data = out.get_relation(HYPERVISOR_RELATION).local_app_data
    secret = shared_secret(out)
    assert data == {
        "spice-proxy-url": SPICE_URL,
        "pci-aliases": '[{"name": "gpu", "product_id": "1eb8", "vendor_id": "10de"}]',
        "region": "R2",
        "metadata-url": METADATA_URL,
        "metadata-proxy-shared-secret-id": secret.id,
    }
    assert secret.owner == "app"
    assert "openstack-hypervisor" in secret.remote_grants.get(HYPERVISOR_RELATION, set())
    assert secret.tracked_content["metadata-proxy-shared-secret"] not in json.dumps(dict(data))


def test_nova_service_empty_urls_without_their_ingress(ctx: testing.Context[Any]) -> None:
    fixtures = mandatory()
    relation = hypervisor()
    state = complete(fixtures=fixtures)
    out = ctx.run(
        ctx.on.relation_changed(relation), dataclasses.replace(state, relations=[*state.relations, relation])
    )
    data = out.get_relation(HYPERVISOR_RELATION).local_app_data
    assert "spice-proxy-url" not in data and "metadata-url" not in data and data["pci-aliases"] == "[]"
    assert "ingress-console" in out.unit_status.message


def test_nova_service_nothing_from_a_non_leader(ctx: testing.Context[Any]) -> None:
    leader = ctx.run(ctx.on.config_changed(), complete())
    relation = hypervisor()
    state = complete(leader=False, peer_data=peer_data(leader), secrets=list(leader.secrets))
    out = ctx.run(
        ctx.on.relation_changed(relation), dataclasses.replace(state, relations=[*state.relations, relation])
    )
    assert out.unit_status == ops.ActiveStatus()
    assert out.get_relation(HYPERVISOR_RELATION).local_app_data == {}


# -- actions ------------------------------------------------------------------------------

LIST_HOSTS_OUTPUT = """\
+-----------+--------------------------------------+-----------+
| Cell Name |              Cell UUID               |  Hostname |
+-----------+--------------------------------------+-----------+
|   cell1   | 2c0e1e3a-0000-4000-8000-000000000001 | compute-1 |
|   cell1   | 2c0e1e3a-0000-4000-8000-000000000001 | compute-2 |
+-----------+--------------------------------------+-----------+
"""

DISCOVER_OUTPUT = """\
Found 2 cell mappings.
Skipping cell0 since it does not contain hosts.
Getting computes from cell 'cell1': 2c0e1e3a-0000-4000-8000-000000000001
Checking host mapping for compute host 'compute-3': 9f1
Creating host mapping for compute host 'compute-3': 9f1
Found 1 unmapped computes in cell: 2c0e1e3a-0000-4000-8000-000000000001
"""


def test_list_compute_nodes(ctx: testing.Context[Any]) -> None:
    state = complete(execs={testing.Exec(LIST_HOSTS, stdout=LIST_HOSTS_OUTPUT)})
    ctx.run(ctx.on.action("list-compute-nodes"), state)
    results = ctx.action_results or {}
    assert results["count"] == 2
    hosts = json.loads(results["compute-nodes"])
    assert hosts[0] == {
        "host": "compute-1",
        "cell": "cell1",
        "cell-uuid": "2c0e1e3a-0000-4000-8000-000000000001",
    }
    assert [h["host"] for h in hosts] == ["compute-1", "compute-2"]


def test_discover_hosts(ctx: testing.Context[Any]) -> None:
    state = complete(execs={testing.Exec(DISCOVER, stdout=DISCOVER_OUTPUT)})
    ctx.run(ctx.on.action("discover-hosts"), state)
    results = ctx.action_results or {}
    assert results == {"count": 1, "mapped-hosts": '["compute-3"]'}
    assert manage(ctx) == [DISCOVER]


def test_an_action_fails_with_nova_manage_s_last_error_line(ctx: testing.Context[Any]) -> None:
    state = complete(execs={testing.Exec(LIST_HOSTS, return_code=1, stderr="x\nCould not connect\n")})
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("list-compute-nodes"), state)
    assert failed.value.message == "nova-manage failed (exit code 1): Could not connect"
