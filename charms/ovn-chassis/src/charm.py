#!/usr/bin/env python3
"""OVN chassis: Open vSwitch and ovn-controller on a machine, wired to OVN's southbound database.

Design, and why:

- **A principal machine charm**, not a subordinate: network (gateway) nodes run it without a
  hypervisor, and it has config and relations of its own; on a hypervisor it shares the machine
  with nova-compute (``juju deploy --to``).
- **Packages** from Ubuntu 24.04, pinned: ``openvswitch-switch`` and ``ovn-host``, whose systemd
  units (``openvswitch-switch``, ``ovn-controller``) run the daemons. ovn-controller's TLS files
  are options in ``/etc/default/ovn-host``, which its unit reads.
- **Open vSwitch's settings are rows of its database**, not a file: the charm writes them in one
  idempotent ``ovs-vsctl`` transaction once the services run, only when they differ from what it
  last applied (kept in the unit's state directory): a steady hook runs nothing. The library has
  no per-unit "command per distinct inputs" (leader tasks are the leader's, kept in peer data).
- **Names**: ``hostname`` (the chassis' host in OVN) must be nova-compute's ``host`` for
  neutron to bind ports here; by default both are the machine's ``socket.gethostname()``, and
  the ``hostname`` option follows a nova configured otherwise. ``system-id`` (the chassis' name)
  is the same name: unique wherever nova works, readable, and needing no resolver (one that maps
  the host name to localhost would name every chassis alike). It is also written to
  ``/etc/openvswitch/system-id.conf``, which Open vSwitch applies again at every start instead
  of the random id its package made.
- **No metadata agent here**: neutron-ovn-metadata-agent serves the guests of a hypervisor, with
  nova's metadata address and shared secret, which nova grants to the hypervisor application
  over ``nova-service``; the hypervisor charm on the same machine runs it, beside nova-compute.
  A gateway node has no guests and needs none, and the secret is not shared with a second
  application.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import pathlib
import re
import socket
import tempfile
from collections.abc import Mapping, Sequence

import ops
from openstack_charms import (
    HOST,
    Apt,
    Blocked,
    Command,
    File,
    InvalidOption,
    MachineCharm,
    Service,
    ServiceConfig,
    ServiceContext,
    Waiting,
    Workload,
    check_choice,
)
from openstack_charms.config import shown

# The newest of Ubuntu 24.04's noble-updates we found. A pocket keeps only its newest version,
# so an update there takes a pin away: the unit then blocks naming it until a release moves it.
PACKAGES = (
    Apt("openvswitch-switch", "3.3.9-0ubuntu0.24.04.1"),
    Apt("ovn-host", "24.03.6-0ubuntu0.24.04.1"),
)
OVS = "openvswitch-switch"
CONTROLLER = "ovn-controller"
OVN_HOST_DEFAULTS = "/etc/default/ovn-host"
SYSTEM_ID_CONF = "/etc/openvswitch/system-id.conf"
SYS_NET = "/sys/class/net"
INTEGRATION_BRIDGE = "br-int"
#: Open vSwitch's database on localhost TCP, where the machine's other services find it by default
#: (nova-compute's os-vif, the OVN metadata agent): they run as their own users, and the database's
#: unix socket is root's alone
LOCAL_MANAGER = "ptcp:6640:127.0.0.1"
DATAPATH_TYPES = ("system", "netdev")
ENCAP_TYPES = ("geneve", "vxlan")
#: where the unit keeps the Open vSwitch settings it last applied (in its state directory)
OVS_RECORD = "ovs-settings.json"
#: the charm's log levels as Open vSwitch's vlog names them
VLOG_LEVELS = {"DEBUG": "dbg", "INFO": "info", "WARNING": "warn", "ERROR": "err", "CRITICAL": "emer"}
# a bridge or an interface is a kernel interface name: at most 15 characters
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_PHYSNET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _pairs(option: str, value: str, left: str, right: str) -> list[tuple[str, str]]:
    pairs = []
    for item in re.split(r"[\s,]+", value.strip()):
        if not item:
            continue
        first, _, second = item.partition(":")
        if not first or not second or ":" in second:
            raise InvalidOption(option, f"has {shown(item)}, must be <{left}>:<{right}> pairs")
        pairs.append((first, second))
    return pairs


def _name(option: str, kind: str, name: str, pattern: re.Pattern[str] = _IFNAME) -> str:
    if not pattern.fullmatch(name) or name in (".", ".."):
        raise InvalidOption(option, f"has {shown(name)}, not a valid {kind} name")
    if kind == "bridge" and name == INTEGRATION_BRIDGE:
        raise InvalidOption(option, f"names {INTEGRATION_BRIDGE}, the integration bridge OVN manages")
    return name


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChassisConfig(ServiceConfig):
    """The chassis' options on top of every charm's."""

    bridge_interface_mappings: str = ""
    ovn_bridge_mappings: str = ""
    enable_chassis_as_gw: bool = False
    datapath_type: str = "system"
    encap_type: str = "geneve"
    encap_ip: str = ""
    hostname: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ports  # noqa: B018 (validates)
        physnets = self.physnets
        if self.enable_chassis_as_gw and not physnets:
            raise InvalidOption(
                "enable-chassis-as-gw",
                "is true, but ovn-bridge-mappings names no physical network for external networks",
            )
        check_choice("datapath-type", self.datapath_type, DATAPATH_TYPES)
        check_choice("encap-type", self.encap_type, ENCAP_TYPES)
        if self.encap_ip:
            try:
                ipaddress.ip_address(self.encap_ip)
            except ValueError:
                raise InvalidOption("encap-ip", f"is {shown(self.encap_ip)}, not an IP address") from None
        labels = self.hostname.split(".")
        if self.hostname and (len(self.hostname) > 253 or not all(_DNS_LABEL.fullmatch(x) for x in labels)):
            raise InvalidOption("hostname", f"is {shown(self.hostname)}, not a host name")

    @property
    def ports(self) -> tuple[tuple[str, str], ...]:
        """``(bridge, interface)`` of every interface plugged into a provider bridge."""
        option = "bridge-interface-mappings"
        pairs = _pairs(option, self.bridge_interface_mappings, "bridge", "interface")
        seen: set[str] = set()
        for bridge, interface in pairs:
            _name(option, "bridge", bridge)
            if _name(option, "interface", interface) in seen:
                raise InvalidOption(option, f"names interface {interface} twice")
            seen.add(interface)
        return tuple(pairs)

    @property
    def physnets(self) -> tuple[tuple[str, str], ...]:
        """``(physical network, bridge)`` of every provider network this chassis reaches."""
        option = "ovn-bridge-mappings"
        pairs = _pairs(option, self.ovn_bridge_mappings, "physnet", "bridge")
        seen: set[str] = set()
        for physnet, bridge in pairs:
            _name(option, "bridge", bridge)
            if _name(option, "physical network", physnet, _PHYSNET) in seen:
                raise InvalidOption(option, f"names physical network {physnet} twice")
            seen.add(physnet)
        return tuple(pairs)

    @property
    def bridges(self) -> tuple[str, ...]:
        """Every provider bridge either option names, in the order named."""
        return tuple(dict.fromkeys([b for _, b in self.physnets] + [b for b, _ in self.ports]))


@dataclasses.dataclass(frozen=True)
class OVSSettings:
    """What the charm keeps in Open vSwitch's database; an empty external id is one it removes."""

    external_ids: Mapping[str, str]
    datapath_type: str
    bridges: tuple[str, ...]
    ports: tuple[tuple[str, str], ...]
    managers: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: pathlib.Path) -> OVSSettings | None:
        """What was last applied; ``None`` when nothing (or nothing readable) was."""
        try:
            data = json.loads(path.read_text())
            return cls(
                dict(data["external_ids"]),
                data["datapath_type"],
                tuple(data["bridges"]),
                tuple((bridge, port) for bridge, port in data["ports"]),
                tuple(data["managers"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: pathlib.Path) -> None:
        """Keep these settings as applied (atomically, readable by root only)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(dataclasses.asdict(self), handle, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def argv(self, before: OVSSettings | None) -> tuple[str, ...]:
        """One ``ovs-vsctl`` transaction from ``before`` (``None``: unknown) to these settings.

        Every command is idempotent (``--may-exist``, ``--if-exists``, ``set``); what ``before``
        had and these do not is removed first, so a port can move to another bridge.
        """
        commands: list[tuple[str, ...]] = []
        if before is not None:
            commands += [("--if-exists", "del-port", *p) for p in before.ports if p not in self.ports]
            commands += [("--if-exists", "del-br", b) for b in before.bridges if b not in self.bridges]
        # values as JSON strings: ovs-vsctl then takes them verbatim, whatever they hold
        ids = [f"external_ids:{key}={json.dumps(value)}" for key, value in self.external_ids.items() if value]
        if self.datapath_type == "netdev":
            # the userspace conntrack takes a guest's TCP with its checksum left to offload for
            # invalid, and security groups drop it, unless vswitchd reads the virtio-net header
            # that says so; it does from the ports opened after this is set (inert on "system")
            ids.append("other_config:userspace-tso-enable=true")
        commands.append(("set", "Open_vSwitch", ".", *ids))
        unset = [key for key, value in self.external_ids.items() if not value]
        if unset:
            commands.append(("remove", "Open_vSwitch", ".", "external_ids", *unset))
        datapath = f"datapath_type={self.datapath_type}"
        # as ovn-controller would make it, but with the configured datapath from the start
        commands += [
            ("--may-exist", "add-br", INTEGRATION_BRIDGE),
            (
                "set",
                "Bridge",
                INTEGRATION_BRIDGE,
                datapath,
                "fail_mode=secure",
                "other_config:disable-in-band=true",
            ),
        ]
        for bridge in self.bridges:
            commands += [("--may-exist", "add-br", bridge), ("set", "Bridge", bridge, datapath)]
        commands += [("--may-exist", "add-port", bridge, port) for bridge, port in self.ports]
        commands.append(("set-manager", *self.managers))
        # --no-wait: the database is the truth ovs-vswitchd follows; the hook need not wait for it
        return ("ovs-vsctl", "--no-wait", "--timeout=30", *(w for c in commands for w in ("--", *c)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChassisContext(ServiceContext[ChassisConfig]):
    """The chassis' names and tunnel endpoint besides the shared parts."""

    hostname: str
    """The chassis' host name, which also names it (``system-id``)."""
    encap_ip: str
    southbound: str
    """The southbound database's remotes as seen from outside the cluster (ovn-remote)."""


class OVNChassisCharm(MachineCharm[ChassisConfig, ChassisContext]):
    """Open vSwitch and ovn-controller, configured as an OVN chassis."""

    config_class = ChassisConfig
    context_class = ChassisContext
    service_name = "ovn"
    service_user = "root"

    # -- what is known before the plan ------------------------------------------------

    def reconcile(self) -> None:
        # a missing interface is the operator's to fix, as an invalid option is: it comes first too
        self.check_interfaces(self.typed_config)
        super().reconcile()

    def check_interfaces(self, config: ChassisConfig) -> None:
        """Blocked naming every interface of ``bridge-interface-mappings`` this machine lacks."""
        if not config.ports:
            return
        host = self.host()
        missing = [i for _, i in config.ports if host.stat(f"{SYS_NET}/{i}") is None]
        if missing:
            noun = "an interface" if len(missing) == 1 else "interfaces"
            raise Blocked(
                f"config option 'bridge-interface-mappings' names {noun} this machine lacks: "
                + ", ".join(missing)
            )

    def build_context(self) -> ChassisContext:
        fields = self.context_fields()
        ovsdb = fields.get("ovsdb")
        if ovsdb is None:
            raise Waiting("waiting for ovsdb-cms")
        # a southbound database over TLS accepts only clients with a certificate of its CA
        if ovsdb.protocol == "ssl" and fields.get("tls") is None:
            if not self.handlers["certificates"].related:
                raise Blocked("the OVN southbound database serves TLS: relate certificates")
            raise Waiting("waiting for this unit's certificate (certificates), to reach OVN over TLS")
        config = self.typed_config
        return ChassisContext(
            **fields,
            hostname=config.hostname or socket.gethostname(),
            encap_ip=config.encap_ip or self.data_address(),
            southbound=ovsdb.external_sb_connection,
        )

    def data_address(self) -> str:
        """The ``data`` binding's address on this machine (one network-get)."""
        binding = self.model.get_binding("data")
        address = binding.network.bind_address if binding else None
        if address is None:
            raise Waiting("waiting for an address on the data binding (or set encap-ip)")
        return str(address)

    # -- the plan ------------------------------------------------------------------------

    def workloads(self, ctx: ChassisContext) -> Sequence[Workload]:
        options = []
        if ctx.tls is not None:
            options += [
                f"--ovn-controller-ssl-key={ctx.tls.private_key_path}",
                f"--ovn-controller-ssl-cert={ctx.tls.certificate_path}",
                f"--ovn-controller-ssl-ca-cert={ctx.tls.ca_path}",
            ]
        level = "dbg" if ctx.config.debug else VLOG_LEVELS[ctx.config.log_level.upper()]
        if level != "info":
            # one word, as the unit splits $OVN_CTL_OPTS on spaces; it replaces ovn-ctl's defaults
            options.append(f"--ovn-controller-log=-vfile:{level}")
        defaults = self.render(
            "ovn-host.j2",
            OVN_HOST_DEFAULTS,
            ctx,
            values={"options": options},
            permissions=0o644,
            restarts=(CONTROLLER,),
            file_format="shell",
        )
        # read at Open vSwitch's next start; the running one gets the same id from ovs-vsctl
        system_id = File(SYSTEM_ID_CONF, f"{ctx.hostname}\n", permissions=0o644, restarts=())
        return [
            Workload(
                HOST,
                packages=PACKAGES,
                files=[defaults, system_id, *self.tls_files(ctx)],
                services=[Service(OVS), Service(CONTROLLER)],
            )
        ]

    def tls_files(self, ctx: ChassisContext) -> list[File]:
        """ovn-controller's certificate, key, and the CAs it trusts for the southbound database."""
        if ctx.tls is None:
            return []
        # the relay's certificate may come from another CA than this machine's: trust both
        bundle = ctx.tls.ca + (ctx.ca.bundle if ctx.ca else "")
        cas = "\n".join(dict.fromkeys(_CERTIFICATE.findall(bundle))) + "\n"
        restarts = (CONTROLLER,)
        return [
            File(ctx.tls.certificate_path, ctx.tls.server_chain, permissions=0o644, restarts=restarts),
            File(ctx.tls.private_key_path, ctx.tls.private_key, permissions=0o600, restarts=restarts),
            File(ctx.tls.ca_path, cas, permissions=0o644, restarts=restarts),
        ]

    def ovs_settings(self, ctx: ChassisContext) -> OVSSettings:
        """What Open vSwitch's database must hold for this chassis."""
        config = ctx.config
        external_ids = {
            "system-id": ctx.hostname,
            "hostname": ctx.hostname,
            "ovn-remote": ctx.southbound,
            "ovn-encap-type": config.encap_type,
            "ovn-encap-ip": ctx.encap_ip,
            "ovn-bridge-datapath-type": config.datapath_type,
            "ovn-bridge-mappings": ",".join(f"{physnet}:{bridge}" for physnet, bridge in config.physnets),
            "ovn-cms-options": "enable-chassis-as-gw" if config.enable_chassis_as_gw else "",
        }
        return OVSSettings(external_ids, config.datapath_type, config.bridges, config.ports, (LOCAL_MANAGER,))

    def after_start(self, ctx: ChassisContext) -> None:
        settings = self.ovs_settings(ctx)
        record = self.state_dir / OVS_RECORD
        before = OVSSettings.load(record)
        if settings == before:
            return
        # ovsdb-server runs now; a failure is Waiting and the next hook tries again
        self.applier(Workload(HOST)).run(Command(settings.argv(before), timeout=60))
        settings.save(record)

    def active_message(self, ctx: ChassisContext) -> str:
        notes = [f"chassis {ctx.hostname}" + (", gateway" if ctx.config.enable_chassis_as_gw else "")]
        if ctx.ovsdb is not None and ctx.ovsdb.protocol == "tcp":
            notes.append("southbound over plain TCP")
        return "; ".join(notes)


if __name__ == "__main__":  # pragma: nocover
    ops.main(OVNChassisCharm)
