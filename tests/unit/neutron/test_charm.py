"""neutron-k8s: given a state, after an event, what an operator, keystone and OVN see."""

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
from openstack_charms.testing.identity import KEYSTONE_INTERNAL_URL, identity_service_fixture
from openstack_charms.testing.relations import (
    MYSQL_ENDPOINT,
    RABBITMQ_HOSTNAME,
    amqp_fixture,
    ca_fixture,
    certificates_fixture,
    database_fixture,
    ingress_fixture,
    ovsdb_cms_fixture,
)
from ops import testing

CHARM = "neutron-k8s"
SERVER = "neutron-server"
WORKERS = ("neutron-periodic-workers", "neutron-ovn-maintenance-worker")
CONTAINERS = (SERVER, *WORKERS)
CONF = "/etc/neutron/neutron.conf"
ML2 = "/etc/neutron/plugins/ml2/ml2_conf.ini"
PASTE = "/etc/neutron/api-paste.ini"
UWSGI = "/etc/neutron/neutron-api-uwsgi.ini"
CONFIG_FILES = ["--config-file", CONF, "--config-file", ML2]
DB_SYNC = ["neutron-db-manage", *CONFIG_FILES, "upgrade", "heads"]
INTERNAL_URL = "http://10.20.0.5/openstack-neutron"
TLS_DIR = "/etc/neutron/tls"
NB = "ssl:10.1.0.31:6641,ssl:10.1.0.32:6641,ssl:10.1.0.33:6641"
SB = "ssl:10.1.0.31:6642,ssl:10.1.0.32:6642,ssl:10.1.0.33:6642"


@pytest.fixture
def ctx() -> testing.Context[Any]:
    return charm_context(CHARM)


def mandatory(*, protocol: str | None = None) -> list[RelationFixture]:
    return [
        database_fixture(database="neutron"),
        amqp_fixture(),
        identity_service_fixture(requirer_app="neutron"),
        ingress_fixture("ingress-internal", INTERNAL_URL),
        ovsdb_cms_fixture(protocol=protocol),
    ]


def certificates() -> RelationFixture:
    return certificates_fixture(app=CHARM, model="openstack")


def relations() -> list[RelationFixture]:
    """What a deployment gives: OVN over TLS, and the unit's certificate to reach it."""
    return [*mandatory(), certificates()]


def base(
    root: pathlib.Path | None = None,
    *,
    leader: bool = True,
    peer_data: dict[str, str] | None = None,
    execs: set[testing.Exec] | None = None,
    **kwargs: Any,
) -> testing.State:
    execs = {testing.Exec(DB_SYNC)} if execs is None else execs
    return testing.State(
        leader=leader,
        model=testing.Model(name="openstack"),
        relations=[testing.PeerRelation("peers", local_app_data=peer_data or {})],
        containers=[container(SERVER, root, execs=execs), *(container(w, root) for w in WORKERS)],
        **kwargs,
    )


def complete(
    root: pathlib.Path | None = None, *, fixtures: list[RelationFixture] | None = None, **kwargs: Any
) -> testing.State:
    return state_with(relations() if fixtures is None else fixtures, base=base(root, **kwargs))


def parse(text: str) -> configparser.ConfigParser:
    # [DEFAULT] is an ordinary section to oslo.config: keep its keys out of the others
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
    parser.read_string(text)
    return parser


def conf(ctx: testing.Context[Any], out: testing.State, path: str = CONF) -> configparser.ConfigParser:
    return parse(pushed_files(out, ctx, SERVER)[path])


def db_syncs(ctx: testing.Context[Any]) -> list[list[str]]:
    return [list(e.command) for e in ctx.exec_history.get(SERVER, []) if list(e.command) == DB_SYNC]


# -- active, and what it wrote -------------------------------------------------


def test_active_with_ovn_over_tls_and_a_certificate(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    assert out.unit_status == testing.ActiveStatus()
    assert out.app_status == testing.ActiveStatus()


def test_active_with_ovn_over_plain_tcp_and_says_so(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=mandatory(protocol="tcp")))
    assert out.unit_status == testing.ActiveStatus("OVN databases over plain TCP")


def test_ovn_over_tls_without_certificates_is_blocked(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=mandatory()))
    assert out.unit_status == testing.BlockedStatus("the OVN databases serve TLS: relate certificates")
    assert db_syncs(ctx) == []
    assert all(not out.get_container(c).service_statuses for c in CONTAINERS)


def test_ovn_over_tls_while_the_certificate_is_pending_is_waiting(ctx: testing.Context[Any]) -> None:
    pending = testing.Relation("certificates", interface="tls-certificates", remote_app_name="ca")
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=[*mandatory(), RelationFixture(pending)]))
    assert isinstance(out.unit_status, ops.WaitingStatus)
    assert "certificates" in out.unit_status.message


def test_neutron_conf(ctx: testing.Context[Any]) -> None:
    fixtures = relations()
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=fixtures))
    neutron = conf(ctx, out)
    default = neutron["DEFAULT"]
    assert default["core_plugin"] == "ml2"
    assert default["service_plugins"] == "ovn-router"
    assert default["auth_strategy"] == "keystone"
    # found beside neutron.conf: the option naming it is deprecated for removal
    assert "api_paste_config" not in default
    assert default["state_path"] == "/var/lib/neutron"
    assert default["transport_url"] == f"rabbit://neutron:rabbit-password@{RABBITMQ_HOSTNAME}:5672/openstack"
    assert default["log_config_append"] == "/etc/neutron/logging.conf"
    # the OVN hash ring tells units apart by host: the unit's own, not the platform's hostname
    assert default["host"] == "neutron-k8s-0"
    assert default["global_physnet_mtu"] == "1500"
    assert default["dns_domain"] == "openstack.internal."
    # OVN's native DHCP, and no nova yet
    assert default["dhcp_agent_notification"] == "false"
    # nova waits for network-vif-plugged: neutron tells it of port events
    assert default["notify_nova_on_port_status_changes"] == "true"
    assert default["notify_nova_on_port_data_changes"] == "true"
    user = f"relation-{fixtures[0].relation.id}"
    assert neutron["database"]["connection"] == f"mysql+pymysql://{user}:db-password@{MYSQL_ENDPOINT}/neutron"
    auth = neutron["keystone_authtoken"]
    assert auth["auth_url"] == f"{KEYSTONE_INTERNAL_URL}/v3"
    assert auth["username"].startswith("svc_neutron-")
    assert auth["service_type"] == "network"
    assert neutron["nova"]["username"] == auth["username"]
    assert neutron["nova"]["endpoint_type"] == "internal"
    assert neutron["oslo_concurrency"]["lock_path"] == "/var/lock/neutron"
    assert neutron["oslo_messaging_notifications"]["driver"] == "messagingv2"


def test_ml2_conf_reaches_ovn_over_tls_with_the_units_certificate(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    ml2 = conf(ctx, out, ML2)
    assert ml2["ml2"]["mechanism_drivers"] == "ovn"
    assert ml2["ml2"]["type_drivers"] == "local,flat,vlan,geneve"
    assert ml2["ml2"]["project_network_types"] == "geneve"
    assert ml2["ml2"]["extension_drivers"] == "port_security"
    assert ml2["ml2_type_geneve"]["max_header_size"] == "38"
    ovn = ml2["ovn"]
    assert ovn["ovn_nb_connection"] == NB
    assert ovn["ovn_sb_connection"] == SB
    for db in ("nb", "sb"):
        assert ovn[f"ovn_{db}_private_key"] == f"{TLS_DIR}/key.pem"
        assert ovn[f"ovn_{db}_certificate"] == f"{TLS_DIR}/cert.pem"
        assert ovn[f"ovn_{db}_ca_cert"] == f"{TLS_DIR}/ca.pem"
    assert ovn["ovn_metadata_enabled"] == "true"
    assert ovn["enable_distributed_floating_ip"] == "false"
    assert ovn["ovn_l3_scheduler"] == "leastloaded"
    assert "dns_servers" not in ovn
    # every process talks to OVN: each container holds the key and certificate the files name
    for name in CONTAINERS:
        files = pushed_files(out, ctx, name)
        assert "PRIVATE KEY" in files[f"{TLS_DIR}/key.pem"], name
        assert files[f"{TLS_DIR}/cert.pem"].startswith("-----BEGIN CERTIFICATE-----"), name
        assert files[f"{TLS_DIR}/ca.pem"].startswith("-----BEGIN CERTIFICATE-----"), name


def test_ml2_conf_reaches_ovn_over_tcp_without_certificates(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=mandatory(protocol="tcp")))
    ovn = conf(ctx, out, ML2)["ovn"]
    assert ovn["ovn_nb_connection"] == NB.replace("ssl:", "tcp:")
    assert ovn["ovn_sb_connection"] == SB.replace("ssl:", "tcp:")
    assert not [key for key in ovn if key.endswith(("_private_key", "_certificate", "_ca_cert"))]
    assert not [p for c in CONTAINERS for p in pushed_files(out, ctx, c) if p.startswith(TLS_DIR)]


def test_ml2_conf_from_a_proxy_takes_its_connection_strings(ctx: testing.Context[Any]) -> None:
    proxy = testing.Relation(
        "ovsdb-cms",
        interface="ovsdb-cms",
        remote_app_name="ovn-proxy",
        remote_app_data={
            "proxy-relation": "true",
            "db_nb_connection_strs": "ssl:10.20.0.11:6641,ssl:10.20.0.12:6641",
            "db_sb_connection_strs": "ssl:10.20.0.11:6642,ssl:10.20.0.12:6642",
        },
    )
    fixtures = [*(f for f in relations() if f.relation.endpoint != "ovsdb-cms"), RelationFixture(proxy)]
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=fixtures))
    ovn = conf(ctx, out, ML2)["ovn"]
    assert ovn["ovn_nb_connection"] == "ssl:10.20.0.11:6641,ssl:10.20.0.12:6641"
    assert ovn["ovn_sb_connection"] == "ssl:10.20.0.11:6642,ssl:10.20.0.12:6642"


def test_network_options_follow_config(ctx: testing.Context[Any]) -> None:
    config = {
        "flat-network-providers": "physnet1, physnet2",
        "vlan-ranges": "physnet1:100:200,physnet3",
        "tenant-network-type": "vlan",
        "global-mtu": 9000,
        "path-mtu": 1600,
        "dns-domain": "cloud.example.com.",
        "dns-servers": "10.0.0.53, 2001:db8::53",
        "enable-igmp-snooping": True,
        "ovn-metadata-enabled": False,
        "enable-distributed-floating-ip": True,
        "workers": 4,
        "debug": True,
    }
    out = ctx.run(ctx.on.config_changed(), complete(config=config))
    neutron, ml2 = conf(ctx, out), conf(ctx, out, ML2)
    assert neutron["DEFAULT"]["global_physnet_mtu"] == "9000"
    assert neutron["DEFAULT"]["dns_domain"] == "cloud.example.com."
    assert neutron["DEFAULT"]["debug"] == "true"
    assert ml2["ml2"]["project_network_types"] == "vlan"
    assert ml2["ml2"]["path_mtu"] == "1600"
    assert ml2["ml2_type_flat"]["flat_networks"] == "physnet1,physnet2"
    assert ml2["ml2_type_vlan"]["network_vlan_ranges"] == "physnet1:100:200,physnet3"
    assert ml2["ovs"]["igmp_snooping_enable"] == "true"
    assert ml2["ovn"]["ovn_metadata_enabled"] == "false"
    assert ml2["ovn"]["enable_distributed_floating_ip"] == "true"
    assert ml2["ovn"]["dns_servers"] == "10.0.0.53,2001:db8::53"
    assert parse(pushed_files(out, ctx, SERVER)[UWSGI])["uwsgi"]["processes"] == "4"


def test_every_container_reads_the_same_files(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    server = pushed_files(out, ctx, SERVER)
    for name in WORKERS:
        files = pushed_files(out, ctx, name)
        for path in (CONF, ML2, "/etc/neutron/logging.conf"):
            assert files[path] == server[path], (name, path)
        assert PASTE not in files and UWSGI not in files, name
    for path in (CONF, ML2):
        assert (tmp_path / SERVER / path.lstrip("/")).stat().st_mode & 0o777 == 0o640
    assert (tmp_path / SERVER / f"{TLS_DIR}/key.pem".lstrip("/")).stat().st_mode & 0o777 == 0o600


def test_uwsgi_serves_the_neutron_api_with_threads(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=mandatory(protocol="tcp")))
    uwsgi = parse(pushed_files(out, ctx, SERVER)[UWSGI])["uwsgi"]
    assert uwsgi["module"] == "neutron.wsgi.api:application"
    assert uwsgi["http-socket"] == "[::]:9696"
    assert uwsgi["enable-threads"] == "true"
    assert uwsgi["lazy-apps"] == "true"
    # one start time for every worker, which each registers in OVN's hash ring under
    assert uwsgi["start-time"] == "%t"


def test_api_paste_authenticates_the_api(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    paste = conf(ctx, out, PASTE)
    assert dict(paste["composite:neutron"]) == {
        "use": "egg:Paste#urlmap",
        "/": "versions",
        "/healthcheck": "healthcheck",
        "/v2.0": "api_v2_0",
    }
    pipeline = paste["pipeline:api_v2_0"]["pipeline"].split()
    assert pipeline.index("authtoken") < pipeline.index("keystonecontext") < pipeline.index("api_v2_0_app")
    assert paste["app:api_v2_0_app"]["paste.app_factory"] == "neutron.api.v2.router:APIRouter.factory"


def test_pebble_layers(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=mandatory(protocol="tcp")))
    plan = out.get_container(SERVER).plan
    api = plan.services["neutron-api"]
    assert api.command == f"uwsgi --ini {UWSGI}"
    assert (api.user, api.group) == ("neutron", "neutron")
    assert api.environment == {
        "OS_NEUTRON_CONFIG_DIR": "/etc/neutron",
        "OS_NEUTRON_CONFIG_FILES": "neutron.conf;plugins/ml2/ml2_conf.ini",
    }
    assert plan.checks["neutron-api-up"].http == {"url": "http://localhost:9696/"}
    assert api.on_check_failure == {"neutron-api-up": "restart"}
    for name in WORKERS:
        worker = out.get_container(name)
        service = worker.plan.services[name]
        assert service.command == " ".join([name, *CONFIG_FILES])
        assert (service.user, service.group) == ("neutron", "neutron")
        check = worker.plan.checks[f"{name}-running"]
        assert check.exec == {"command": f"pgrep -f {name}"}
        assert worker.service_statuses == {name: ops.pebble.ServiceStatus.ACTIVE}
    assert out.get_container(SERVER).service_statuses == {"neutron-api": ops.pebble.ServiceStatus.ACTIVE}


def test_tls_serves_the_api_over_https(ctx: testing.Context[Any]) -> None:
    state = state_with([*relations(), ca_fixture()], base=base())
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.ActiveStatus()
    files = pushed_files(out, ctx, SERVER)
    uwsgi = parse(files[UWSGI])["uwsgi"]
    assert uwsgi["https-socket"] == f"[::]:9696,{TLS_DIR}/cert.pem,{TLS_DIR}/key.pem"
    assert parse(files[CONF])["nova"]["cafile"] == "/etc/neutron/ca-bundle.pem"
    check = out.get_container(SERVER).plan.checks["neutron-api-up"]
    assert check.exec is not None and "https://neutron-k8s.openstack.svc:9696/" in check.exec["command"]


def test_catalog_registers_the_network_service(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(config={"region": "RegionTwo"}))
    data = out.get_relations("identity-service")[0].local_app_data
    assert data["region"] == "RegionTwo"
    (endpoint,) = json.loads(data["service-endpoints"])
    assert endpoint["service_name"] == "neutron"
    assert endpoint["type"] == "network"
    assert endpoint["internal_url"] == INTERNAL_URL
    assert endpoint["public_url"] == INTERNAL_URL


def test_asks_ovn_for_addresses_inside_the_cluster(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete())
    assert out.get_relations("ovsdb-cms")[0].local_app_data == {"external-connectivity": "false"}


# -- db sync on the leader, once ---------------------------------------------


def test_db_sync_runs_once_on_the_leader(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(tmp_path))
    (sync,) = [e for e in ctx.exec_history[SERVER] if list(e.command) == DB_SYNC]
    assert sync.user == "neutron"
    ctx.run(ctx.on.update_status(), out)
    assert db_syncs(ctx) == [DB_SYNC], "a second event must not sync again"


def test_non_leader_waits_for_the_leaders_db_sync(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(leader=False))
    assert out.unit_status == testing.WaitingStatus(
        "waiting for the leader to run neutron-db-manage --config-file"
    )
    assert db_syncs(ctx) == []
    assert all(not out.get_container(c).service_statuses for c in CONTAINERS)


def test_non_leader_follows_once_the_leader_synced(ctx: testing.Context[Any]) -> None:
    fixtures = relations()
    leader = ctx.run(ctx.on.config_changed(), complete(fixtures=fixtures))
    peer_data = dict(leader.get_relations("peers")[0].local_app_data)
    follower = charm_context(CHARM)
    out = follower.run(
        follower.on.config_changed(), complete(fixtures=fixtures, leader=False, peer_data=peer_data)
    )
    assert out.unit_status == testing.ActiveStatus()
    assert db_syncs(follower) == []


def test_failed_db_sync_is_waiting_and_retried(ctx: testing.Context[Any]) -> None:
    failing = testing.Exec(DB_SYNC, return_code=1, stderr="OperationalError: (2003) cannot connect")
    out = ctx.run(ctx.on.config_changed(), complete(execs={failing}))
    assert out.unit_status == testing.WaitingStatus(
        "neutron-db-manage --config-file failed (exit code 1); will retry"
    )
    assert all(not out.get_container(c).service_statuses for c in CONTAINERS)


# -- what is missing ------------------------------------------------------------


def test_blocked_names_each_missing_mandatory_relation(ctx: testing.Context[Any]) -> None:
    assert mandatory_endpoints(CHARM) == [
        "amqp",
        "database",
        "identity-service",
        "ingress-internal",
        "ovsdb-cms",
    ]
    assert_blocked_without_each_mandatory(ctx, relations(), mandatory_endpoints(CHARM), base=base())


def test_blocked_names_all_missing_relations(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.install(), base())
    assert out.unit_status == testing.BlockedStatus(
        "missing relations: database, amqp, ingress-internal, identity-service, ovsdb-cms"
    )


def test_ovn_without_a_served_address_is_waiting(ctx: testing.Context[Any]) -> None:
    bare = ovsdb_cms_fixture(addresses=())
    fixtures = [*(f for f in relations() if f.relation.endpoint != "ovsdb-cms"), bare]
    out = ctx.run(ctx.on.config_changed(), complete(fixtures=fixtures))
    assert out.unit_status == testing.WaitingStatus(
        "waiting for ovsdb-cms (bound-address from a unit of ovn-central)"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"tenant-network-type": "flat"},
            "config option 'tenant-network-type' is 'flat', must be one of geneve, vlan",
        ),
        (
            {"tenant-network-type": "vlan"},
            "config option 'tenant-network-type' is vlan, but vlan-ranges gives no VLAN id range to hand out",
        ),
        (
            {"vlan-ranges": "physnet1:200:100"},
            "config option 'vlan-ranges' has 'physnet1:200:100', VLAN ids must be 1 to 4094, "
            "the first not above the last",
        ),
        (
            {"vlan-ranges": "physnet1:100"},
            "config option 'vlan-ranges' has 'physnet1:100', "
            "must be <physnet> or <physnet>:<first vlan>:<last vlan>",
        ),
        (
            {"flat-network-providers": "physnet1 br-ex:eth1"},
            "config option 'flat-network-providers' has 'br-ex:eth1', "
            "not a physical network name (letters, digits, '_', '.', '-')",
        ),
        ({"global-mtu": 1000}, "config option 'global-mtu' is 1000, must be between 1280 and 9216"),
        ({"path-mtu": 65000}, "config option 'path-mtu' is 65000, must be between 1280 and 9216"),
        (
            {"dns-domain": "openstack.internal"},
            "config option 'dns-domain' is 'openstack.internal', must be a domain name ending with a dot",
        ),
        ({"dns-domain": "bad_label.example."}, "config option 'dns-domain' has an invalid label 'bad_label'"),
        (
            {"dns-servers": "10.0.0.53,dns.example"},
            "config option 'dns-servers' has 'dns.example', not an IP address",
        ),
        ({"workers": 0}, "config option 'workers' is 0, must be between 1 and 64"),
    ],
)
def test_invalid_config_is_blocked_naming_the_option(
    ctx: testing.Context[Any], config: dict[str, Any], message: str
) -> None:
    out = ctx.run(ctx.on.config_changed(), complete(config=config))
    assert out.unit_status == testing.BlockedStatus(message)
    assert db_syncs(ctx) == []


@pytest.mark.parametrize("name", CONTAINERS)
def test_a_container_not_up_yet_is_waiting(ctx: testing.Context[Any], name: str) -> None:
    state = complete()
    down = [dataclasses.replace(c, can_connect=False) if c.name == name else c for c in state.containers]
    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(state, containers=down))
    assert out.unit_status == testing.WaitingStatus(f"waiting for container {name} (Pebble)")


# -- generic properties -----------------------------------------------------------


def test_the_same_event_twice_changes_nothing(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    once = assert_idempotent(ctx, complete(tmp_path), ctx.on.config_changed())
    assert once.unit_status == testing.ActiveStatus()


def test_relation_order_does_not_matter(ctx: testing.Context[Any]) -> None:
    out = assert_order_invariant(ctx, relations(), base=base)
    assert out.unit_status == testing.ActiveStatus()
