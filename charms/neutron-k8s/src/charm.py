#!/usr/bin/env python3
"""Neutron: OpenStack Networking with the ML2/OVN driver, on Kubernetes.

Database, message bus, keystone registration, ingress, TLS and the OVN
databases (``ovsdb-cms``) come from the endpoints the charm declares; the
charm declares neutron's own parts: the API under uwsgi, the periodic workers
and the OVN maintenance worker, each in its own container over the same two
files, and the leader's schema migration.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

import ops
from openstack_charms import (
    APIConfig,
    Blocked,
    Check,
    Directory,
    File,
    InvalidOption,
    K8sCharm,
    LeaderTask,
    Service,
    ServiceContext,
    Waiting,
    Workload,
    check_choice,
    check_range,
)

if TYPE_CHECKING:
    from charms.keystone_k8s.v0.identity_service import ServiceEndpoint

CONF_DIR = "/etc/neutron"
CONF = f"{CONF_DIR}/neutron.conf"
ML2_NAME = "plugins/ml2/ml2_conf.ini"
ML2_CONF = f"{CONF_DIR}/{ML2_NAME}"
PASTE_INI = f"{CONF_DIR}/api-paste.ini"
STATE_PATH = "/var/lib/neutron"
LOCK_PATH = "/var/lock/neutron"
CONFIG_FILES = ("--config-file", CONF, "--config-file", ML2_CONF)
#: the worker processes beside the API: container, service and command are all named after them
WORKERS = ("neutron-periodic-workers", "neutron-ovn-maintenance-worker")
#: flat cannot be a project network type: ML2 hands out no flat segment to a project
PROJECT_NETWORK_TYPES = ("geneve", "vlan")
VLAN_IDS = (1, 4094)
#: the IPv6 minimum, up to jumbo frames
MTU_RANGE = (1280, 9216)
_PHYSNET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _items(value: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", value) if item]


def _physnet(option: str, name: str) -> str:
    if not _PHYSNET.fullmatch(name):
        raise InvalidOption(
            option, f"has {name!r}, not a physical network name (letters, digits, '_', '.', '-')"
        )
    return name


def _vlan_range(item: str) -> tuple[str, int | None]:
    """``physnet`` or ``physnet:first:last`` -> the physical network and the range's size (or None)."""
    name, *ids = item.split(":")
    _physnet("vlan-ranges", name)
    if not ids:
        return name, None
    low, high = VLAN_IDS
    try:
        first, last = (int(i) for i in ids)
    except ValueError:
        raise InvalidOption(
            "vlan-ranges", f"has {item!r}, must be <physnet> or <physnet>:<first vlan>:<last vlan>"
        ) from None
    if not low <= first <= last <= high:
        raise InvalidOption(
            "vlan-ranges", f"has {item!r}, VLAN ids must be {low} to {high}, the first not above the last"
        )
    return name, last - first + 1


def _check_mtu(option: str, value: int) -> None:
    check_range(option, value, *MTU_RANGE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NeutronConfig(APIConfig):
    """Neutron's options on top of every API charm's."""

    flat_network_providers: str = "physnet1"
    vlan_ranges: str = ""
    tenant_network_type: str = "geneve"
    global_mtu: int = 1500
    path_mtu: int = 0
    dns_domain: str = "openstack.internal."
    dns_servers: str = ""
    enable_igmp_snooping: bool = False
    ovn_metadata_enabled: bool = True
    enable_distributed_floating_ip: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.flat_networks  # noqa: B018 (validates)
        ranges = [_vlan_range(item) for item in _items(self.vlan_ranges)]
        check_choice("tenant-network-type", self.tenant_network_type, PROJECT_NETWORK_TYPES)
        if self.tenant_network_type == "vlan" and not any(size for _, size in ranges):
            raise InvalidOption(
                "tenant-network-type", "is vlan, but vlan-ranges gives no VLAN id range to hand out"
            )
        _check_mtu("global-mtu", self.global_mtu)
        if self.path_mtu:
            _check_mtu("path-mtu", self.path_mtu)
        self._check_dns_domain()
        self.dns_server_list  # noqa: B018 (validates)

    def _check_dns_domain(self) -> None:
        domain = self.dns_domain
        labels = domain.split(".")
        if not domain.endswith(".") or len(domain) > 254 or not labels[0]:
            raise InvalidOption("dns-domain", f"is {domain!r}, must be a domain name ending with a dot")
        bad = [label for label in labels[:-1] if not _DNS_LABEL.fullmatch(label)]
        if bad:
            raise InvalidOption("dns-domain", f"has an invalid label {bad[0]!r}")

    @property
    def flat_networks(self) -> tuple[str, ...]:
        """Physical networks of flat networks (``*``: any)."""
        names = _items(self.flat_network_providers)
        if "*" in names:
            if len(names) > 1:
                raise InvalidOption("flat-network-providers", "has '*' and names: '*' alone allows any")
            return ("*",)
        return tuple(_physnet("flat-network-providers", name) for name in names)

    @property
    def vlan_range_list(self) -> tuple[str, ...]:
        """``network_vlan_ranges`` entries."""
        return tuple(_items(self.vlan_ranges))

    @property
    def dns_server_list(self) -> tuple[str, ...]:
        """The resolvers OVN's DHCP hands out, as IP addresses."""
        servers = []
        for item in _items(self.dns_servers):
            try:
                servers.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise InvalidOption("dns-servers", f"has {item!r}, not an IP address") from None
        return tuple(servers)


class NeutronCharm(K8sCharm[NeutronConfig, ServiceContext[NeutronConfig]]):
    """OpenStack Networking API and its workers, over OVN."""

    config_class = NeutronConfig
    context_class = ServiceContext
    service_name = "neutron"
    service_user = "neutron"
    api_port = 9696

    def catalog(self) -> Sequence[ServiceEndpoint]:
        return [self.catalog_entry("network", "OpenStack Networking")]

    def build_context(self) -> ServiceContext[NeutronConfig]:
        ctx = super().build_context()
        # an OVN database over TLS accepts only clients with a certificate of its CA
        if ctx.ovsdb is not None and ctx.ovsdb.protocol == "ssl" and ctx.tls is None:
            certificates = self.handlers.get("certificates")
            if certificates is None or not certificates.related:
                raise Blocked("the OVN databases serve TLS: relate certificates")
            raise Waiting("waiting for this unit's certificate (certificates), to reach OVN over TLS")
        return ctx

    def workloads(self, ctx: ServiceContext[NeutronConfig]) -> Sequence[Workload]:
        user = self.service_user
        # every process reads both files: the API, the workers and the db sync alike
        common = [
            self.render("neutron.conf.j2", CONF, ctx, values={"state_path": STATE_PATH}),
            self.render("ml2_conf.ini.j2", ML2_CONF, ctx),
            self.logging_config(ctx),
        ]
        directories = [Directory(STATE_PATH, user, user, 0o750), Directory(LOCK_PATH, user, user, 0o750)]
        return [
            self.api_server(ctx, common, directories),
            *(self.worker(ctx, n, common, directories) for n in WORKERS),
        ]

    def api_server(
        self, ctx: ServiceContext[NeutronConfig], files: Sequence[File], directories: Sequence[Directory]
    ) -> Workload:
        """The API under uwsgi, with its paste pipeline."""
        api = self.uwsgi_api(
            ctx,
            container="neutron-server",
            name="neutron-api",
            wsgi_app="neutron.wsgi.api:application",
            workers=ctx.config.workers,
        )
        # where the WSGI app finds its files (it takes no --config-file); neutron's defaults name the
        # same two, said here so that no change of default can move them
        environment = {
            "OS_NEUTRON_CONFIG_DIR": CONF_DIR,
            "OS_NEUTRON_CONFIG_FILES": f"neutron.conf;{ML2_NAME}",
        }
        # the WSGI loader looks for api-paste.ini beside neutron.conf
        paste = self.render(
            "api-paste.ini.j2", PASTE_INI, ctx, values={"state_path": STATE_PATH}, permissions=0o644
        )
        return Workload(
            api.target,
            services=[dataclasses.replace(s, environment=environment) for s in api.services],
            checks=api.checks,
            files=[*api.files, *files, paste],
            directories=directories,
        )

    def worker(
        self,
        ctx: ServiceContext[NeutronConfig],
        name: str,
        files: Sequence[File],
        directories: Sequence[Directory],
    ) -> Workload:
        """A neutron worker process in a container of its own name, with its OVN client files."""
        user = self.service_user
        service = Service(name, shlex.join((name, *CONFIG_FILES)), user=user, group=user, summary=name)
        # Neither worker answers anything a check could ask (no port, no status command), and
        # Pebble already restarts one that exits: the check only reports a process that is gone.
        check = Check.exec(f"{name}-running", shlex.join(("pgrep", "-f", name)))
        return Workload(
            name,
            services=[service],
            checks=[check],
            files=[*files, *self.trust_files(ctx)],
            directories=directories,
        )

    def leader_work(self, ctx: ServiceContext[NeutronConfig]) -> Sequence[LeaderTask]:
        return [self.db_sync(ctx, "neutron-server", "neutron-db-manage", *CONFIG_FILES, "upgrade", "heads")]

    def active_message(self, ctx: ServiceContext[NeutronConfig]) -> str:
        if ctx.ovsdb is not None and ctx.ovsdb.protocol == "tcp":
            return "OVN databases over plain TCP"
        return ""


if __name__ == "__main__":  # pragma: nocover
    ops.main(NeutronCharm)
