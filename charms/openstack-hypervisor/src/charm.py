#!/usr/bin/env python3
"""OpenStack hypervisor: nova-compute with libvirt and QEMU/KVM, and the OVN metadata agent, on a machine.

Design, and why:

- **Packages from the Ubuntu Cloud Archive** (apt, ``noble-updates/gazpacho``: OpenStack 2026.1 on
  Ubuntu 24.04), not sunbeam's openstack-hypervisor snap. The snap brings its own Open vSwitch
  and ovn-controller, which would fight the ovn-chassis charm's on the same machine; it takes
  settings (``compute.*``, ``identity.*``) and renders nova's files itself, so the files this
  collection proves against real services would not be the ones that run. Packages give
  nova-compute, libvirtd and the metadata agent as systemd units the host applier starts, and
  files the charm writes. :data:`UCA_2026_1` is the one place that says where the software comes
  from: another release, a mirror, or a snap is a different :class:`PackageSource` (the host
  applier installs :class:`~openstack_charms.plan.Snap` packages as well).
- **Names**: nova's ``host`` is the ``hostname`` option, else ``socket.gethostname()``, the
  rule ovn-chassis follows for ``external_ids:hostname``, so that neutron binds ports here.
- **KVM**: with ``virt-type=kvm`` the unit is blocked while ``/dev/kvm`` is missing, not a
  device, or PVM's (stock guest kernels hang there); ``virt-type=qemu`` runs guests in TCG.
- **Guest metadata**: nova grants its metadata proxy shared secret to this application over
  ``nova-service``, so this charm runs neutron-ovn-metadata-agent, which signs guests' requests
  with it. The agent can only name a host, port and protocol for nova, and appends the guest's
  path to them, while nova's ``metadata-url`` behind traefik has a path prefix. So the agent
  talks plain HTTP to a local bridge, HAProxy (declared with the agent) on
  ``127.0.0.1:8775`` as the unit ``nova-metadata-bridge``, which puts the prefix in front of the
  path and reaches nova's URL, verifying TLS against the cloud's CA. One path for every URL,
  with or without a prefix, so the one the sandbox runs is the one a cloud behind traefik runs.
  Until nova sends a URL and the secret, neither is installed and the active status says why.
  The agent reaches OVN's southbound database through ``ovsdb-cms`` (ovn-relay's load balancer)
  and Open vSwitch on localhost; files holding the secret are ``root:neutron`` 0640.
- **Ceph later**: a ``ceph-access`` requirer (sunbeam's ``cinder-ceph-key``: a keyring as a
  granted secret, the monitors and a libvirt secret UUID) would add ``ceph-common``, the keyring,
  a ``virsh secret-define`` command once per UUID, and ``[libvirt] rbd_user``/``rbd_secret_uuid``
  in nova-compute.conf; no other part of the plan changes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import ops
from openstack_charms import (
    HOST,
    Apt,
    Blocked,
    Directory,
    File,
    InvalidOption,
    MachineCharm,
    Service,
    ServiceConfig,
    ServiceContext,
    Waiting,
    Wire,
    Workload,
    check_choice,
    check_range,
)
from openstack_charms.config import is_ip_address, shown
from openstack_charms.plan import AptRepository, Package

if TYPE_CHECKING:
    from openstack_charms.charm import OpenStackCharm
    from openstack_charms.relations.amqp import AMQPRequirer
    from openstack_charms.relations.nova_service import NovaServiceContext


@dataclasses.dataclass(frozen=True)
class PackageSource:
    """Where the hypervisor's software comes from: the apt sources to add, and what to install."""

    repositories: tuple[AptRepository, ...]
    compute: tuple[Package, ...]
    """nova-compute with libvirt and QEMU."""
    metadata_agent: tuple[Package, ...]
    """The OVN metadata agent, and the HAProxy its per-network proxies and the charm's bridge run."""


# 2026.1 is "gazpacho": its rocks (ubuntu-openstack-rocks, version 2026.1, base ubuntu@24.04)
# take `cloud: gazpacho`; the suite and the keyring path are those other noble builds use.
# The Ubuntu versions could NOT be checked from here (neither Ubuntu's archive nor the cloud
# archive is reachable): the upstream releases are the newest 2026.1 ones on PyPI (nova 33.0.2,
# neutron 28.0.2), the epochs Ubuntu's (nova 3, neutron 2), the revision a guess. A wrong pin
# blocks the unit naming the package. libvirt and QEMU come with nova-compute-kvm at the cloud
# archive's candidate: their gazpacho versions were not found at all.
UCA_2026_1 = PackageSource(
    repositories=(
        AptRepository(
            "cloud-archive-gazpacho",
            "http://ubuntu-cloud.archive.canonical.com/ubuntu",
            "noble-updates/gazpacho",
            signed_by="/usr/share/keyrings/ubuntu-cloud-keyring.gpg",
            keyring_package=Apt("ubuntu-cloud-keyring"),
        ),
    ),
    compute=(
        Apt("nova-compute", "3:33.0.2-0ubuntu1~cloud0"),
        Apt("nova-compute-kvm", "3:33.0.2-0ubuntu1~cloud0"),
    ),
    # the bridge runs haproxy itself: declared, not left to the agent package's dependency
    metadata_agent=(Apt("neutron-ovn-metadata-agent", "2:28.0.2-0ubuntu1~cloud0"), Apt("haproxy")),
)
COMPUTE = "nova-compute"
LIBVIRT = "libvirtd"
AGENT = "neutron-ovn-metadata-agent"
BRIDGE = "nova-metadata-bridge"
BRIDGE_CFG = "/etc/neutron/nova-metadata-bridge.cfg"
#: where the agent reaches nova's metadata API: the bridge (nova-api-metadata's own port)
BRIDGE_PORT = 8775
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"
NOVA_CONF = "/etc/nova/nova.conf"
COMPUTE_CONF = "/etc/nova/nova-compute.conf"
LIBVIRTD_CONF = "/etc/libvirt/libvirtd.conf"
LIBVIRTD_DEFAULTS = "/etc/default/libvirtd"
AGENT_INI = "/etc/neutron/neutron_ovn_metadata_agent.ini"
AGENT_TLS = "/etc/neutron/ovn"
KVM = "/dev/kvm"
PVM = "/sys/module/kvm_pvm"
VIRT_TYPES = ("kvm", "qemu")
CPU_MODES = ("host-model", "host-passthrough", "custom", "none")
_CPU_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# what HAProxy's configuration may hold of nova's URL without quoting: a host name or address,
# and a path of unreserved characters
_URL_HOST = re.compile(r"[A-Za-z0-9.:-]+")
_URL_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")
_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HypervisorConfig(ServiceConfig):
    """The hypervisor's options on top of every charm's."""

    virt_type: str = "kvm"
    cpu_mode: str = "host-model"
    cpu_models: str = ""
    reserved_host_memory_mb: int = 512
    hostname: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("virt-type", self.virt_type, VIRT_TYPES)
        check_choice("cpu-mode", self.cpu_mode, CPU_MODES)
        if self.virt_type == "qemu" and self.cpu_mode == "host-passthrough":
            raise InvalidOption(
                "cpu-mode", "is host-passthrough, which QEMU's emulation (virt-type qemu) lacks"
            )
        bad = [m for m in self.models if not _CPU_MODEL.fullmatch(m)]
        if bad:
            raise InvalidOption("cpu-models", f"has {shown(bad[0])}, not a CPU model name")
        if self.cpu_mode == "custom" and not self.models:
            raise InvalidOption("cpu-mode", "is custom, but cpu-models names no model")
        if self.models and self.cpu_mode != "custom":
            raise InvalidOption("cpu-models", f"names models, but cpu-mode is {self.cpu_mode}, not custom")
        check_range("reserved-host-memory-mb", self.reserved_host_memory_mb, 0)
        labels = self.hostname.split(".")
        if self.hostname and (len(self.hostname) > 253 or not all(_DNS_LABEL.fullmatch(x) for x in labels)):
            raise InvalidOption("hostname", f"is {shown(self.hostname)}, not a host name")

    @property
    def models(self) -> tuple[str, ...]:
        """The CPU models of ``cpu-models``, in order."""
        return tuple(m for m in re.split(r"[\s,]+", self.cpu_models) if m)


@dataclasses.dataclass(frozen=True)
class Metadata:
    """Nova's metadata API, where the bridge sends guests' requests, and the secret they are signed with."""

    protocol: str
    host: str
    port: int
    prefix: str
    """The URL's path (``""`` or ``/a/b``), put in front of every guest's path."""
    secret: str = dataclasses.field(repr=False)

    def bridge(self, cafile: str) -> str:
        """HAProxy's configuration: 127.0.0.1:8775 in plain HTTP to nova's URL, prefix added."""
        address = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.protocol == "https" else 80
        server = f"    server nova {address}:{self.port}"
        if self.protocol == "https":
            server += f" ssl verify required ca-file {cafile}"
            if not is_ip_address(self.host):
                # HAProxy checks a name against the certificate, never an address: the chain it does
                server += f" sni str({self.host}) verifyhost {self.host}"
        lines = [
            "# Nova's metadata API for this machine's OVN metadata agent: written by the",
            "# openstack-hypervisor charm, which overwrites any change made here.",
            "global",
            "    log stdout format raw daemon",
            "    maxconn 1024",
            "",
            "defaults",
            "    mode http",
            "    log global",
            "    option httplog",
            "    timeout connect 10s",
            "    timeout client 60s",
            "    timeout server 60s",
            "",
            "frontend nova-metadata",
            f"    bind 127.0.0.1:{BRIDGE_PORT}",
            "    default_backend nova-metadata",
            "",
            "backend nova-metadata",
            *([f"    http-request set-path {self.prefix}%[path]"] if self.prefix else []),
            # an ingress routes on the host it is asked for, not on this bridge's
            f"    http-request set-header Host {address}{'' if self.port == default else f':{self.port}'}",
            server,
            "",
        ]
        return "\n".join(lines)


def metadata_of(nova: NovaServiceContext) -> Metadata | str:
    """Nova's metadata API as the agent reaches it, or why it cannot (for the status)."""
    if not nova.metadata_url:
        return "nova has sent no metadata-url yet"
    if nova.metadata_proxy_shared_secret is None:
        return "nova sent no metadata secret"
    try:
        url = urlsplit(nova.metadata_url)
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return "nova's metadata-url is not a URL"
    if url.scheme not in ("http", "https") or not url.hostname:
        return "nova's metadata-url is not http(s)"
    prefix = url.path.rstrip("/")
    if not _URL_HOST.fullmatch(url.hostname) or (prefix and not _URL_PATH.fullmatch(prefix)):
        return "nova's metadata-url has characters outside a plain host and path"
    if url.query or url.fragment:
        return "nova's metadata-url has a query, which a guest's request cannot keep"
    return Metadata(url.scheme, url.hostname, port, prefix, nova.metadata_proxy_shared_secret)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HypervisorContext(ServiceContext[HypervisorConfig]):
    """The hypervisor's name and address, nova's offer, and where guests' metadata comes from."""

    nova_service: NovaServiceContext | None = None
    hostname: str
    """nova's ``host``: the OVN chassis' host name too."""
    address: str
    """This machine's address on the ``migration`` binding (``my_ip``, where consoles listen)."""
    metadata: Metadata | None
    metadata_off: str
    """Why the metadata agent does not run (``""`` while it does)."""

    @property
    def region(self) -> str:
        """The region of nova, else of keystone: where the clients look endpoints up."""
        nova = self.nova_service.region if self.nova_service else ""
        return nova or (self.credentials.region if self.credentials else "")

    @property
    def pci_aliases(self) -> list[str]:
        """One JSON object per ``[pci] alias`` line."""
        aliases = self.nova_service.pci_aliases if self.nova_service else ()
        return [json.dumps(alias, sort_keys=True) for alias in aliases]


def _amqp(charm: OpenStackCharm[Any, Any], endpoint: str) -> AMQPRequirer:
    from openstack_charms.relations.amqp import AMQPRequirer

    # its own RabbitMQ user (nova's is "nova"), and the broker's address outside the cluster
    return AMQPRequirer(
        charm, endpoint, username=charm.app.name, vhost="openstack", external_connectivity=True
    )


class OpenStackHypervisorCharm(MachineCharm[HypervisorConfig, HypervisorContext]):
    """nova-compute, libvirtd and the OVN metadata agent, configured from nova's relations."""

    config_class = HypervisorConfig
    context_class = HypervisorContext
    service_name = "nova"
    service_user = "nova"
    own_wiring: ClassVar = {"amqp": Wire(_amqp, ("openstack_charms.relations.amqp",), field="amqp")}
    source: ClassVar[PackageSource] = UCA_2026_1

    # -- what is known before the plan ------------------------------------------------

    def reconcile(self) -> None:
        # a machine that cannot run the configured guests is the operator's to fix first
        self.check_kvm(self.typed_config)
        super().reconcile()

    def check_kvm(self, config: HypervisorConfig) -> None:
        """Blocked naming the problem and the option when KVM is asked for and unusable here."""
        if config.virt_type != "kvm":
            return
        host = self.host()
        kvm = host.stat(KVM)
        if kvm is None or not stat.S_ISCHR(kvm.mode):
            problem = "this machine has no /dev/kvm" if kvm is None else "/dev/kvm here is no device"
            raise Blocked(
                f"config option 'virt-type' is kvm, but {problem}: set virt-type=qemu or enable KVM"
            )
        if host.stat(PVM) is not None:
            raise Blocked(
                "config option 'virt-type' is kvm, but /dev/kvm here is PVM's, where stock guest "
                "kernels hang: set virt-type=qemu"
            )

    def build_context(self) -> HypervisorContext:
        fields = self.context_fields()
        config = self.typed_config
        nova: NovaServiceContext | None = fields.get("nova_service")
        metadata = metadata_of(nova) if nova is not None else "nova-service is not ready"
        ovsdb = fields.get("ovsdb")
        over_tls = ovsdb is not None and ovsdb.protocol == "ssl"
        # the agent reaches a southbound database over TLS only with a certificate of its CA
        if isinstance(metadata, Metadata) and over_tls and fields.get("tls") is None:
            if not self.handlers["certificates"].related:
                raise Blocked("the OVN southbound database serves TLS: relate certificates")
            raise Waiting("waiting for this unit's certificate (certificates), to reach OVN over TLS")
        return HypervisorContext(
            **fields,
            hostname=config.hostname or socket.gethostname(),
            address=self.binding_address(),
            metadata=metadata if isinstance(metadata, Metadata) else None,
            metadata_off="" if isinstance(metadata, Metadata) else metadata,
        )

    def binding_address(self) -> str:
        """The ``migration`` binding's address on this machine (one network-get)."""
        binding = self.model.get_binding("migration")
        address = binding.network.bind_address if binding else None
        if address is None:
            raise Waiting("waiting for an address on the migration binding")
        return str(address)

    # -- the plan ------------------------------------------------------------------------

    def workloads(self, ctx: HypervisorContext) -> Sequence[Workload]:
        files = [
            self.nova_file("nova.conf.j2", NOVA_CONF, ctx),
            self.nova_file("nova-compute.conf.j2", COMPUTE_CONF, ctx),
            self.nova_file("logging.conf.j2", "/etc/nova/logging.conf", ctx, permissions=0o644),
            self.render(
                "libvirtd.conf.j2",
                LIBVIRTD_CONF,
                ctx,
                user="root",
                group="root",
                permissions=0o644,
                restarts=(LIBVIRT,),
            ),
            # libvirtd stays up while idle: it reports guests' lifecycle to nova-compute, and
            # without socket activation nothing would start it again
            File(LIBVIRTD_DEFAULTS, 'LIBVIRTD_ARGS=""\n', "root", "root", 0o644, (LIBVIRT,)),
        ]
        if ctx.ca is not None:
            files.append(File(ctx.ca.path, ctx.ca.bundle, "root", "nova", 0o644, (COMPUTE,)))
        packages: list[Package] = list(self.source.compute)
        services = [Service(LIBVIRT), Service(COMPUTE)]
        if ctx.metadata is not None:
            packages += self.source.metadata_agent
            files += self.agent_files(ctx, ctx.metadata)
            services += [
                Service(
                    BRIDGE,
                    f"/usr/sbin/haproxy -db -f {BRIDGE_CFG}",
                    user="neutron",
                    group="neutron",
                    summary="nova's metadata API for the OVN metadata agent",
                ),
                Service(AGENT),
            ]
        return [
            Workload(
                HOST,
                repositories=self.source.repositories,
                packages=packages,
                # where guests' disks live: the package makes it, this keeps it nova's
                directories=[Directory("/var/lib/nova/instances", "nova", "nova", 0o755)],
                files=files,
                services=services,
            )
        ]

    def nova_file(self, template: str, path: str, ctx: HypervisorContext, permissions: int = 0o640) -> File:
        """A file of nova-compute's, ``root:nova``: the service reads it, and only root changes it."""
        return self.render(
            template, path, ctx, user="root", group="nova", permissions=permissions, restarts=(COMPUTE,)
        )

    def agent_files(self, ctx: HypervisorContext, metadata: Metadata) -> list[File]:
        """The agent's config (it holds the shared secret), logging and OVN certificate; the bridge's."""

        def agent_file(path: str, content: str, permissions: int, restarts: str = AGENT) -> File:
            return File(path, content, "root", "neutron", permissions, (restarts,))

        def rendered(template: str, path: str, permissions: int) -> File:
            return self.render(
                template,
                path,
                ctx,
                values={"service_name": AGENT, "bridge_port": BRIDGE_PORT},
                user="root",
                group="neutron",
                permissions=permissions,
                restarts=(AGENT,),
            )

        files = [
            rendered("neutron_ovn_metadata_agent.ini.j2", AGENT_INI, 0o640),
            rendered("logging.conf.j2", "/etc/neutron/logging.conf", 0o644),
        ]
        cafile = SYSTEM_CAS
        if ctx.ca is not None:
            cafile = "/etc/neutron/ca-bundle.pem"
            files.append(agent_file(cafile, ctx.ca.bundle, 0o644, BRIDGE))
        files.append(agent_file(BRIDGE_CFG, metadata.bridge(cafile), 0o644, BRIDGE))
        if ctx.tls is not None:
            # the relay's certificate may come from another CA than this machine's: trust both
            bundle = ctx.tls.ca + (ctx.ca.bundle if ctx.ca else "")
            cas = "\n".join(dict.fromkeys(_CERTIFICATE.findall(bundle))) + "\n"
            files += [
                agent_file(f"{AGENT_TLS}/cert.pem", ctx.tls.server_chain, 0o644),
                agent_file(f"{AGENT_TLS}/key.pem", ctx.tls.private_key, 0o640),
                agent_file(f"{AGENT_TLS}/ca.pem", cas, 0o644),
            ]
        return files

    def active_message(self, ctx: HypervisorContext) -> str:
        notes = [f"{ctx.hostname} ({ctx.config.virt_type})"]
        if ctx.metadata_off:
            notes.append(f"no guest metadata: {ctx.metadata_off}")
        return "; ".join(notes)


if __name__ == "__main__":  # pragma: nocover
    ops.main(OpenStackHypervisorCharm)
