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
  with it and passes them to nova's metadata API at the host, port and protocol of nova's
  ``metadata-url``. The agent appends the guest's path to that host and port, so a URL with a
  path (an ingress routing by path prefix) cannot be used: then, and until nova sends a URL and
  the secret, the agent is not installed and the active status says why. It reaches OVN's
  southbound database through ``ovsdb-cms`` (ovn-relay's load balancer) and Open vSwitch
  through its local socket; files holding the secret are ``root:neutron`` 0640.
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
from openstack_charms.config import shown
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
    metadata_agent=(Apt("neutron-ovn-metadata-agent", "2:28.0.2-0ubuntu1~cloud0"),),
)
COMPUTE = "nova-compute"
LIBVIRT = "libvirtd"
AGENT = "neutron-ovn-metadata-agent"
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
    """Where the OVN metadata agent sends guests' requests, and the secret it signs them with."""

    protocol: str
    host: str
    port: int
    secret: str = dataclasses.field(repr=False)


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
    if url.path.strip("/") or url.query:
        return "nova's metadata-url has a path, which the OVN metadata agent cannot keep"
    return Metadata(url.scheme, url.hostname, port, nova.metadata_proxy_shared_secret)


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
            files += self.agent_files(ctx)
            services.append(Service(AGENT))
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

    def agent_files(self, ctx: HypervisorContext) -> list[File]:
        """The metadata agent's config (it holds the shared secret), logging, CAs and OVN certificate."""

        def agent_file(path: str, content: str, permissions: int) -> File:
            return File(path, content, "root", "neutron", permissions, (AGENT,))

        def rendered(template: str, path: str, permissions: int) -> File:
            return self.render(
                template,
                path,
                ctx,
                values={"service_name": AGENT},
                user="root",
                group="neutron",
                permissions=permissions,
                restarts=(AGENT,),
            )

        files = [
            rendered("neutron_ovn_metadata_agent.ini.j2", AGENT_INI, 0o640),
            rendered("logging.conf.j2", "/etc/neutron/logging.conf", 0o644),
        ]
        if ctx.ca is not None:
            files.append(agent_file("/etc/neutron/ca-bundle.pem", ctx.ca.bundle, 0o644))
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
