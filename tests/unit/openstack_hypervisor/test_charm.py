"""openstack-hypervisor: given a machine and its relations, after an event, what is installed and run."""

from __future__ import annotations

import configparser
import dataclasses
import os
import pathlib
import stat
from typing import Any

import pytest
from openstack_charms.testing import RelationFixture, assert_idempotent, charm_context, state_with
from openstack_charms.testing.host import FakeHost
from openstack_charms.testing.identity import identity_credentials_fixture
from openstack_charms.testing.relations import (
    amqp_fixture,
    ca_fixture,
    certificates_fixture,
    nova_service_fixture,
    ovsdb_cms_fixture,
)
from ops import testing

CHARM = "openstack-hypervisor"
HOSTNAME = "compute-1"
LB = "10.27.5.1"
SECRET = "metadata-shared-secret"
METADATA = "http://10.20.0.10:8775"
NOVA_CONF = "/etc/nova/nova.conf"
COMPUTE_CONF = "/etc/nova/nova-compute.conf"
AGENT_INI = "/etc/neutron/neutron_ovn_metadata_agent.ini"
BRIDGE_CFG = "/etc/neutron/nova-metadata-bridge.cfg"
BRIDGE_UNIT = "/etc/systemd/system/nova-metadata-bridge.service"
METADATA_SERVICES = {"nova-metadata-bridge", "neutron-ovn-metadata-agent"}
SOURCE = "/etc/apt/sources.list.d/cloud-archive-gazpacho.sources"
NOVA_PIN = "3:33.0.2-0ubuntu1~cloud0"
AGENT_PIN = "2:28.0.2-0ubuntu1~cloud0"
COMPUTE_PACKAGES = {
    "ubuntu-cloud-keyring": "candidate",
    "nova-compute": NOVA_PIN,
    "nova-compute-kvm": NOVA_PIN,
}
MANDATORY = ("amqp", "identity-credentials", "ovsdb-cms", "nova-service")


@pytest.fixture(autouse=True)
def machine_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # what nova-compute and ovn-chassis call this machine, and the name its certificate is asked for
    monkeypatch.setattr("socket.gethostname", lambda: HOSTNAME)
    monkeypatch.setattr("socket.getfqdn", lambda *_: f"{HOSTNAME}.maas")


@pytest.fixture
def ctx(tmp_path: pathlib.Path) -> testing.Context[Any]:
    context = charm_context(CHARM, root=tmp_path)
    # the pinned packages are only in the cloud archive: installable once its source is there
    suite = "noble-updates/gazpacho"
    host_of(context).repositories = dict.fromkeys(
        ("nova-compute", "nova-compute-kvm", "neutron-ovn-metadata-agent"), suite
    )
    return context


def host_of(ctx: testing.Context[Any]) -> FakeHost:
    return ctx.host  # type: ignore[attr-defined]


def nova(metadata_url: str = METADATA, **kwargs: Any) -> RelationFixture:
    """nova-service as nova's leader leaves it (by default with a metadata URL the agent can use)."""
    return nova_service_fixture(metadata_url=metadata_url, **kwargs)


def relay(protocol: str | None = "tcp") -> RelationFixture:
    """ovsdb-cms as ovn-relay leaves it (protocol None: TLS, as sunbeam's always serves)."""
    return ovsdb_cms_fixture(remote_app="ovn-relay", loadbalancer=LB, protocol=protocol)


def relations(**replaced: RelationFixture) -> list[RelationFixture]:
    """Every mandatory relation answered, some replaced by endpoint."""
    fixtures = {
        "amqp": amqp_fixture(),
        "identity-credentials": identity_credentials_fixture(username=CHARM),
        "ovsdb-cms": relay(),
        "nova-service": nova(),
    }
    return list((fixtures | replaced).values())


def state(
    fixtures: list[RelationFixture] | None = None,
    *,
    config: dict[str, Any] | None = None,
    leader: bool = True,
    **kwargs: Any,
) -> testing.State:
    return state_with(
        relations() if fixtures is None else fixtures,
        base=testing.State(leader=leader, config=config or {}),
        **kwargs,
    )


def ini(host: FakeHost, path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.read_string(host.read_text(path))
    return parser


def settle(ctx: testing.Context[Any], **kwargs: Any) -> testing.State:
    out = ctx.run(ctx.on.config_changed(), state(**kwargs))
    assert out.unit_status.name == "active", out.unit_status
    return out


# -- what is missing -------------------------------------------------------------------


def test_blocked_naming_every_missing_relation_and_touching_nothing(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.install(), testing.State(leader=True))
    assert out.unit_status == testing.BlockedStatus(
        "missing relations: amqp, identity-credentials, ovsdb-cms, nova-service"
    )
    assert host_of(ctx).calls == []


@pytest.mark.parametrize("endpoint", MANDATORY)
def test_each_missing_relation_is_named_alone(ctx: testing.Context[Any], endpoint: str) -> None:
    fixtures = [f for f in relations() if f.relation.endpoint != endpoint]
    out = ctx.run(ctx.on.config_changed(), state(fixtures))
    assert out.unit_status == testing.BlockedStatus(f"missing relation: {endpoint}")


def test_waits_for_nova_to_send_its_console_url(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(relations(**{"nova-service": nova(spice_proxy_url="")})))
    assert out.unit_status == testing.WaitingStatus("waiting for nova-service (spice-proxy-url)")
    assert host_of(ctx).calls == []


def test_waits_for_the_grant_of_the_metadata_secret(ctx: testing.Context[Any]) -> None:
    fixture = nova()
    ungranted = dataclasses.replace(fixture, secrets=())
    out = ctx.run(ctx.on.config_changed(), state(relations(**{"nova-service": ungranted})))
    assert out.unit_status == testing.WaitingStatus(
        "waiting for nova-service (access to the metadata-proxy-shared-secret secret (not granted yet))"
    )


def test_asks_rabbitmq_and_keystone_for_its_own_user(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state())
    amqp = out.get_relations("amqp")[0].local_app_data
    assert amqp == {"username": CHARM, "vhost": "openstack", "external_connectivity": "true"}
    assert out.get_relations("identity-credentials")[0].local_app_data["username"] == CHARM
    # a machine outside the cluster needs the relay's load balancer
    assert out.get_relations("ovsdb-cms")[0].local_app_data == {"external-connectivity": "true"}


# -- KVM ------------------------------------------------------------------------------


def test_kvm_without_dev_kvm_is_blocked_naming_the_problem_and_the_option(ctx: testing.Context[Any]) -> None:
    host_of(ctx).devices.discard("/dev/kvm")
    out = ctx.run(ctx.on.config_changed(), state())
    assert out.unit_status == testing.BlockedStatus(
        "config option 'virt-type' is kvm, but this machine has no /dev/kvm: set virt-type=qemu or enable KVM"
    )
    assert host_of(ctx).calls == []


def test_a_dev_kvm_that_is_no_device_is_unusable(ctx: testing.Context[Any]) -> None:
    host = host_of(ctx)
    host.devices.discard("/dev/kvm")
    host.path("/dev").mkdir(parents=True)
    host.path("/dev/kvm").write_text("")
    out = ctx.run(ctx.on.config_changed(), state())
    assert out.unit_status == testing.BlockedStatus(
        "config option 'virt-type' is kvm, but /dev/kvm here is no device: set virt-type=qemu or enable KVM"
    )


def test_a_pvm_dev_kvm_is_unusable_for_stock_guests(ctx: testing.Context[Any]) -> None:
    host_of(ctx).path("/sys/module/kvm_pvm").mkdir(parents=True)
    out = ctx.run(ctx.on.config_changed(), state())
    assert out.unit_status == testing.BlockedStatus(
        "config option 'virt-type' is kvm, but /dev/kvm here is PVM's, where stock guest kernels hang: "
        "set virt-type=qemu"
    )


def test_qemu_needs_no_dev_kvm(ctx: testing.Context[Any]) -> None:
    host = host_of(ctx)
    host.devices.discard("/dev/kvm")
    out = settle(ctx, config={"virt-type": "qemu", "cpu-mode": "none"})
    assert out.unit_status == testing.ActiveStatus(f"{HOSTNAME} (qemu)")
    libvirt = ini(host, COMPUTE_CONF)["libvirt"]
    assert (libvirt["virt_type"], libvirt["cpu_mode"]) == ("qemu", "none")


def test_kvm_comes_back_once_the_machine_has_it(ctx: testing.Context[Any]) -> None:
    host = host_of(ctx)
    host.devices.discard("/dev/kvm")
    blocked = ctx.run(ctx.on.config_changed(), state())
    host.devices.add("/dev/kvm")
    assert ctx.run(ctx.on.update_status(), blocked).unit_status.name == "active"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"virt-type": "xen"}, "config option 'virt-type' is 'xen', must be one of kvm, qemu"),
        (
            {"cpu-mode": "host"},
            "config option 'cpu-mode' is 'host', must be one of host-model, host-passthrough, custom, none",
        ),
        ({"cpu-mode": "custom"}, "config option 'cpu-mode' is custom, but cpu-models names no model"),
        (
            {"cpu-models": "Skylake-Server"},
            "config option 'cpu-models' names models, but cpu-mode is host-model, not custom",
        ),
        (
            {"cpu-mode": "custom", "cpu-models": "Skylake;rm"},
            "config option 'cpu-models' has 'Skylake;rm', not a CPU model name",
        ),
        (
            {"virt-type": "qemu", "cpu-mode": "host-passthrough"},
            "config option 'cpu-mode' is host-passthrough, which QEMU's emulation (virt-type qemu) lacks",
        ),
        (
            {"reserved-host-memory-mb": -1},
            "config option 'reserved-host-memory-mb' is -1, must be at least 0",
        ),
        ({"hostname": "compute_1"}, "config option 'hostname' is 'compute_1', not a host name"),
    ],
)
def test_invalid_config_is_blocked_naming_the_option(
    ctx: testing.Context[Any], config: dict[str, Any], message: str
) -> None:
    out = ctx.run(ctx.on.config_changed(), state(config=config))
    assert out.unit_status == testing.BlockedStatus(message)
    assert host_of(ctx).calls == []


# -- what it installs, writes and runs ---------------------------------------------------


def test_the_cloud_archive_comes_first_then_the_pinned_packages(ctx: testing.Context[Any]) -> None:
    out = settle(ctx)
    assert out.unit_status == testing.ActiveStatus(f"{HOSTNAME} (kvm)")
    host = host_of(ctx)
    assert host.read_text(SOURCE) == (
        "Types: deb\n"
        "URIs: http://ubuntu-cloud.archive.canonical.com/ubuntu\n"
        "Suites: noble-updates/gazpacho\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/ubuntu-cloud-keyring.gpg\n"
    )
    assert host.calls[:6] == [
        ("apt", "ubuntu-cloud-keyring", ""),
        ("write", SOURCE),
        ("run", "apt-get", "update", "-q"),
        ("apt", "nova-compute", NOVA_PIN),
        ("apt", "nova-compute-kvm", NOVA_PIN),
        ("apt", "neutron-ovn-metadata-agent", AGENT_PIN),
    ]
    # the bridge's haproxy is declared, at the archive's candidate
    assert host.calls[6] == ("apt", "haproxy", "")
    assert host.installed == COMPUTE_PACKAGES | {
        "neutron-ovn-metadata-agent": AGENT_PIN,
        "haproxy": "candidate",
    }


def test_the_services_run_libvirt_before_nova_compute(ctx: testing.Context[Any]) -> None:
    settle(ctx)
    host = host_of(ctx)
    assert host.running_services == {"libvirtd", "nova-compute", *METADATA_SERVICES}
    starts = [c[1] for c in host.calls if c[0] == "start"]
    assert starts == ["libvirtd", "nova-compute", "nova-metadata-bridge", "neutron-ovn-metadata-agent"]
    # the packages ship their units: the charm writes only the bridge's, HAProxy as neutron
    assert [p.name for p in host.path("/etc/systemd/system").iterdir()] == ["nova-metadata-bridge.service"]
    unit = host.read_text(BRIDGE_UNIT)
    assert 'ExecStart="/usr/sbin/haproxy" "-db" "-f" "/etc/neutron/nova-metadata-bridge.cfg"\n' in unit
    assert "User=neutron\n" in unit and "Restart=on-failure\n" in unit
    assert host.mode("/var/lib/nova/instances") == 0o755


def test_libvirtd_lets_the_libvirt_group_in_and_stays_up(ctx: testing.Context[Any]) -> None:
    settle(ctx)
    host = host_of(ctx)
    conf = host.read_text("/etc/libvirt/libvirtd.conf")
    settings = dict(line.split(" = ") for line in conf.splitlines() if line and not line.startswith("#"))
    # nova is in group libvirt: the socket's group is the access control, no polkit over D-Bus
    assert settings == {
        "unix_sock_group": '"libvirt"',
        "unix_sock_ro_perms": '"0777"',
        "unix_sock_rw_perms": '"0770"',
        "auth_unix_ro": '"none"',
        "auth_unix_rw": '"none"',
    }
    assert (host.owner("/etc/libvirt/libvirtd.conf"), host.mode("/etc/libvirt/libvirtd.conf")) == (
        (0, 0),
        0o644,
    )
    # Ubuntu's unit gives libvirtd --timeout 120 unless this file says otherwise
    assert host.read_text("/etc/default/libvirtd") == 'LIBVIRTD_ARGS=""\n'


def test_nova_conf(ctx: testing.Context[Any]) -> None:
    settle(ctx, config={"reserved-host-memory-mb": 2048})
    conf = ini(host_of(ctx), NOVA_CONF)
    default = conf["DEFAULT"]
    assert default["host"] == HOSTNAME
    assert default["my_ip"] == "192.0.2.0"
    assert default["reserved_host_memory_mb"] == "2048"
    assert default["transport_url"] == (
        f"rabbit://{CHARM}:rabbit-password@rabbitmq-endpoints.openstack.svc.cluster.local:5672/openstack"
    )
    assert default["debug"] == "false"
    for section in ("keystone_authtoken", "service_user", "placement", "neutron"):
        account = conf[section]
        assert account["auth_url"] == "http://keystone.openstack.svc:5000/v3", section
        assert (account["username"], account["password"]) == (CHARM, "account-password"), section
        assert account["project_name"] == "services", section
        assert account["user_domain_name"] == account["project_domain_name"] == "service_domain", section
        assert "cafile" not in account, section
    assert conf["service_user"]["send_service_user_token"] == "true"
    for section in ("placement", "neutron", "glance"):
        assert conf[section]["valid_interfaces"] == "internal", section
        assert conf[section]["region_name"] == "RegionOne", section
    assert conf["neutron"]["ovs_bridge"] == "br-int"
    assert conf["os_vif_ovs"]["ovsdb_connection"] == "tcp:127.0.0.1:6640"
    assert conf["vnc"]["enabled"] == "false"
    spice = conf["spice"]
    assert spice["html5proxy_base_url"] == (
        "http://10.20.1.10/openstack-nova-spiceproxy/spice_auto.html?path=/openstack-nova-spiceproxy"
    )
    assert spice["server_listen"] == spice["server_proxyclient_address"] == "192.0.2.0"
    assert not conf.has_section("pci")


def test_nova_compute_conf_and_cpu_models(ctx: testing.Context[Any]) -> None:
    settle(ctx, config={"cpu-mode": "custom", "cpu-models": "Cascadelake-Server, Skylake-Server"})
    conf = ini(host_of(ctx), COMPUTE_CONF)
    assert conf["DEFAULT"]["compute_driver"] == "libvirt.LibvirtDriver"
    libvirt = conf["libvirt"]
    assert (libvirt["virt_type"], libvirt["cpu_mode"]) == ("kvm", "custom")
    assert libvirt["cpu_models"] == "Cascadelake-Server,Skylake-Server"


def test_the_hostname_option_is_novas_host_as_it_is_the_chassis(ctx: testing.Context[Any]) -> None:
    out = settle(ctx, config={"hostname": "compute-1.example.com"})
    assert out.unit_status.message == "compute-1.example.com (kvm)"
    assert ini(host_of(ctx), NOVA_CONF)["DEFAULT"]["host"] == "compute-1.example.com"


def test_novas_region_and_pci_aliases(ctx: testing.Context[Any]) -> None:
    aliases = '[{"name": "gpu", "vendor_id": "10de", "product_id": "1db4", "device_type": "type-PCI"}]'
    settle(ctx, fixtures=relations(**{"nova-service": nova(region="RegionTwo", pci_aliases=aliases)}))
    text = host_of(ctx).read_text(NOVA_CONF)
    alias = '{"device_type": "type-PCI", "name": "gpu", "product_id": "1db4", "vendor_id": "10de"}'
    assert f"[pci]\nalias = {alias}\n" in text
    conf = ini(host_of(ctx), NOVA_CONF)
    assert conf["placement"]["region_name"] == conf["neutron"]["region_name"] == "RegionTwo"


def test_received_cas_are_trusted_by_every_client(ctx: testing.Context[Any]) -> None:
    settle(ctx, fixtures=[*relations(), ca_fixture()])
    host = host_of(ctx)
    assert "BEGIN CERTIFICATE" in host.read_text("/etc/nova/ca-bundle.pem")
    conf = ini(host, NOVA_CONF)
    for section in ("keystone_authtoken", "service_user", "placement", "neutron", "glance"):
        assert conf[section]["cafile"] == "/etc/nova/ca-bundle.pem", section
    assert host.read_text("/etc/neutron/ca-bundle.pem") == host.read_text("/etc/nova/ca-bundle.pem")


def test_an_https_metadata_url_is_verified_against_the_received_cas(ctx: testing.Context[Any]) -> None:
    url = "https://internal.example.com/openstack-nova-metadata"
    settle(ctx, fixtures=[*relations(**{"nova-service": nova(url)}), ca_fixture()])
    text = host_of(ctx).read_text(BRIDGE_CFG)
    assert (
        "    server nova internal.example.com:443 ssl verify required ca-file /etc/neutron/ca-bundle.pem"
        " sni str(internal.example.com) verifyhost internal.example.com\n"
    ) in text
    assert "    http-request set-header Host internal.example.com\n" in text


def test_without_received_cas_the_bridge_trusts_the_machines(ctx: testing.Context[Any]) -> None:
    settle(ctx, fixtures=relations(**{"nova-service": nova("https://10.20.0.10:8443/metadata")}))
    host = host_of(ctx)
    text = host.read_text(BRIDGE_CFG)
    # an address is never checked against a certificate by HAProxy: the chain is
    assert (
        "    server nova 10.20.0.10:8443 ssl verify required ca-file /etc/ssl/certs/ca-certificates.crt\n"
    ) in text
    assert "    http-request set-header Host 10.20.0.10:8443\n" in text
    assert not host.path("/etc/neutron/ca-bundle.pem").exists()


# -- the metadata agent ------------------------------------------------------------------


def test_the_metadata_agent_reaches_nova_and_the_southbound_database(ctx: testing.Context[Any]) -> None:
    settle(ctx, config={"debug": True})
    host = host_of(ctx)
    agent = ini(host, AGENT_INI)
    default = agent["DEFAULT"]
    # the agent asks the local bridge, which asks nova's URL
    assert (
        default["nova_metadata_protocol"],
        default["nova_metadata_host"],
        default["nova_metadata_port"],
    ) == ("http", "127.0.0.1", "8775")
    bridge = host.read_text(BRIDGE_CFG)
    assert "    bind 127.0.0.1:8775\n" in bridge
    assert "    server nova 10.20.0.10:8775\n" in bridge
    assert "set-path" not in bridge and "ssl" not in bridge
    assert host.owner(BRIDGE_CFG) == host.ids("root", "neutron") and host.mode(BRIDGE_CFG) == 0o644
    assert default["metadata_proxy_shared_secret"] == SECRET
    assert default["debug"] == "true"
    assert agent["ovn"]["ovn_sb_connection"] == f"tcp:{LB}:6642"
    assert agent["ovs"]["ovsdb_connection"] == "tcp:127.0.0.1:6640"
    assert "ovn_sb_private_key" not in agent["ovn"]


def test_an_https_metadata_url_without_a_port_takes_443(ctx: testing.Context[Any]) -> None:
    settle(ctx, fixtures=relations(**{"nova-service": nova("https://metadata.example.com/")}))
    bridge = host_of(ctx).read_text(BRIDGE_CFG)
    assert "    server nova metadata.example.com:443 ssl " in bridge
    assert "set-path" not in bridge


def test_a_metadata_url_with_a_path_prefixes_every_guest_request(ctx: testing.Context[Any]) -> None:
    # sunbeam's nova (and ours behind traefik) routes its metadata API by path prefix
    out = settle(
        ctx, fixtures=relations(**{"nova-service": nova("http://10.20.0.10/openstack-nova-metadata/")})
    )
    assert out.unit_status == testing.ActiveStatus(f"{HOSTNAME} (kvm)")
    bridge = host_of(ctx).read_text(BRIDGE_CFG)
    assert "    http-request set-path /openstack-nova-metadata%[path]\n" in bridge
    assert "    server nova 10.20.0.10:80\n" in bridge
    assert "    http-request set-header Host 10.20.0.10\n" in bridge
    assert host_of(ctx).running_services == {"libvirtd", "nova-compute", *METADATA_SERVICES}


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        (
            nova("http://10.20.0.10/nova metadata"),
            "nova's metadata-url has characters outside a plain host and path",
        ),
        (nova("http://10.20.0.10/m?x=1"), "nova's metadata-url has a query"),
        (nova(""), "nova has sent no metadata-url yet"),
        (nova(shared_secret=None), "nova sent no metadata secret"),
        (nova("ftp://10.20.0.10"), "nova's metadata-url is not http(s)"),
        (nova("http://10.20.0.10:99999"), "nova's metadata-url is not a URL"),
    ],
)
def test_without_a_usable_metadata_url_the_agent_is_not_installed(
    ctx: testing.Context[Any], fixture: RelationFixture, reason: str
) -> None:
    out = settle(ctx, fixtures=relations(**{"nova-service": fixture}))
    assert out.unit_status.message.startswith(f"{HOSTNAME} (kvm); no guest metadata: ")
    assert reason in out.unit_status.message
    host = host_of(ctx)
    assert host.installed == COMPUTE_PACKAGES
    assert host.running_services == {"libvirtd", "nova-compute"}
    assert not host.path(AGENT_INI).exists() and not host.path(BRIDGE_CFG).exists()


def test_a_metadata_url_that_becomes_unusable_stops_the_agent(ctx: testing.Context[Any]) -> None:
    settle(ctx)
    host = host_of(ctx)
    host.calls.clear()
    fixtures = relations(**{"nova-service": nova("ftp://10.20.0.10/")})
    # the same machine (its manifest) in the next hook, nova's data changed
    off = ctx.run(ctx.on.config_changed(), state(fixtures))
    assert "no guest metadata" in off.unit_status.message
    assert ("stop", "neutron-ovn-metadata-agent") in host.calls
    assert ("stop", "nova-metadata-bridge") in host.calls
    assert ("remove", AGENT_INI) in host.calls
    assert ("remove", BRIDGE_UNIT) in host.calls
    assert not any(c[0] == "restart" for c in host.calls)


def test_the_secret_is_never_in_a_world_readable_file(ctx: testing.Context[Any]) -> None:
    settle(ctx, fixtures=[*relations(**{"ovsdb-cms": relay(protocol=None)}), certificates_fixture(app=CHARM)])
    host = host_of(ctx)
    secrets = (SECRET, "account-password", "rabbit-password", "PRIVATE KEY")
    holding: dict[str, str] = {}
    for directory, _, names in os.walk(host.root):
        for name in names:
            path = pathlib.Path(directory, name)
            text = path.read_text(errors="replace")
            for secret in secrets:
                if secret in text:
                    holding[str(path.relative_to(host.root))] = secret
                    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, f"{path} holds {secret}"
    assert set(holding) == {
        "etc/nova/nova.conf",
        "etc/neutron/neutron_ovn_metadata_agent.ini",
        "etc/neutron/ovn/key.pem",
    }
    assert host.owner("/etc/neutron/neutron_ovn_metadata_agent.ini") == host.ids("root", "neutron")
    assert host.owner("/etc/nova/nova.conf") == host.ids("root", "nova")
    assert host.owner("/etc/neutron/ovn/key.pem") == host.ids("root", "neutron")


def test_a_southbound_over_tls_needs_certificates_for_the_agent(ctx: testing.Context[Any]) -> None:
    out = ctx.run(ctx.on.config_changed(), state(relations(**{"ovsdb-cms": relay(protocol=None)})))
    assert out.unit_status == testing.BlockedStatus(
        "the OVN southbound database serves TLS: relate certificates"
    )
    settled = settle(
        ctx, fixtures=[*relations(**{"ovsdb-cms": relay(protocol=None)}), certificates_fixture(app=CHARM)]
    )
    assert settled.unit_status == testing.ActiveStatus(f"{HOSTNAME} (kvm)")
    host = host_of(ctx)
    ovn = ini(host, AGENT_INI)["ovn"]
    assert ovn["ovn_sb_connection"] == f"ssl:{LB}:6642"
    assert ovn["ovn_sb_private_key"] == "/etc/neutron/ovn/key.pem"
    assert host.read_text("/etc/neutron/ovn/cert.pem").startswith("-----BEGIN CERTIFICATE-----")
    assert host.read_text("/etc/neutron/ovn/ca.pem").count("BEGIN CERTIFICATE") == 1
    assert (host.mode("/etc/neutron/ovn/key.pem"), host.mode("/etc/neutron/ovn/cert.pem")) == (0o640, 0o644)


def test_a_southbound_over_tls_does_not_matter_without_the_agent(ctx: testing.Context[Any]) -> None:
    fixtures = relations(**{"ovsdb-cms": relay(protocol=None), "nova-service": nova("")})
    out = settle(ctx, fixtures=fixtures)
    assert "no guest metadata" in out.unit_status.message


# -- changes, idempotency and bad data -----------------------------------------------------


def test_a_steady_hook_touches_nothing_on_the_host(ctx: testing.Context[Any]) -> None:
    host = host_of(ctx)
    once = assert_idempotent(ctx, state(fixtures=[*relations(), ca_fixture()]), ctx.on.config_changed())
    assert once.unit_status.name == "active"
    host.calls.clear()
    for event in (ctx.on.config_changed(), ctx.on.update_status(), ctx.on.leader_elected()):
        ctx.run(event, once)
    assert host.calls == []


def test_debug_restarts_the_services_whose_files_changed_not_libvirt(ctx: testing.Context[Any]) -> None:
    settled = settle(ctx)
    host = host_of(ctx)
    host.calls.clear()
    ctx.run(ctx.on.config_changed(), dataclasses.replace(settled, config={"debug": True}))
    assert sorted(c for c in host.calls if c[0] == "restart") == [
        ("restart", "neutron-ovn-metadata-agent"),
        ("restart", "nova-compute"),
    ]
    assert not any(c[0] == "apt" for c in host.calls)


def test_a_new_console_url_restarts_nova_compute_only(ctx: testing.Context[Any]) -> None:
    settle(ctx)
    host = host_of(ctx)
    host.calls.clear()
    moved = nova(spice_proxy_url="https://console.example.com/spice_auto.html")
    ctx.run(ctx.on.config_changed(), state(relations(**{"nova-service": moved})))
    assert host.calls == [("write", NOVA_CONF), ("restart", "nova-compute")]


@pytest.mark.parametrize(
    ("replaced", "status"),
    [
        (
            {"nova-service": nova(pci_aliases="not json")},
            testing.WaitingStatus("waiting for nova-service (usable data (pci-aliases is not JSON))"),
        ),
        (
            {"nova-service": nova(spice_proxy_url="http://x/\n[DEFAULT]\ndebug = true")},
            testing.BlockedStatus("refusing to write /etc/nova/nova.conf: a value contains a line break"),
        ),
        (
            {"amqp": amqp_fixture(hostname="rabbit\nhost")},
            testing.BlockedStatus("refusing to write /etc/nova/nova.conf: a value contains a line break"),
        ),
        (
            {"nova-service": nova(shared_secret="a\nb")},
            testing.BlockedStatus(
                "refusing to write /etc/neutron/neutron_ovn_metadata_agent.ini: a value contains a line break"
            ),
        ),
        (
            {
                "ovsdb-cms": ovsdb_cms_fixture(
                    remote_app="ovn-relay", loadbalancer="relay.example", protocol="tcp"
                )
            },
            testing.WaitingStatus(
                "waiting for ovsdb-cms (usable data "
                "(loadbalancer-address 'relay.example' is not an IP address))"
            ),
        ),
    ],
)
def test_bad_relation_data_never_crashes_the_hook(
    ctx: testing.Context[Any], replaced: dict[str, RelationFixture], status: testing.StatusBase
) -> None:
    out = ctx.run(ctx.on.config_changed(), state(relations(**replaced)))
    assert out.unit_status == status


def test_a_non_leader_is_a_hypervisor_too(ctx: testing.Context[Any]) -> None:
    out = settle(ctx, leader=False)
    assert out.unit_status == testing.ActiveStatus(f"{HOSTNAME} (kvm)")
    for relation in out.relations:
        assert relation.local_app_data == {}, relation.endpoint
    assert host_of(ctx).running_services == {"libvirtd", "nova-compute", *METADATA_SERVICES}
