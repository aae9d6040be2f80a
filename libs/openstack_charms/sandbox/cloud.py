"""A bundle deployed on this machine: our charms in ops.testing, their workloads real.

:func:`read_bundle` turns a bundle and its overlays into a :class:`Layout`:
which applications are our charms, which are stood in for (and by what),
their scale, config and relations; a charm that is neither is refused.
:class:`Cloud` then does what Juju would: every unit gets a pod (a network
namespace and one mount namespace per container), its charm runs the first
hooks Juju gives a new unit (install, leader-elected, config-changed, start,
pebble-ready, then relation-created/joined/changed in a shuffled order), and
relation data and secrets pass between the units and the stand-ins until
every unit is active and nothing changes. What a charm asks of Pebble is done
for real (:mod:`.pebble`), and between hooks Pebble's own work goes on
(:meth:`Cloud.supervise`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ops import pebble, testing

from ..testing import REPO, container_storages, merged_charmcraft
from ..testing.bundle import deployed
from ..testing.model import SimulatedModel
from .containers import CheckChange, Machine, ServiceExited
from .kubernetes import LIMITS as KUBERNETES_LIMITS
from .kubernetes import Kubernetes, real_kubernetes
from .machines import MACHINE, SandboxHost, hostname_of, under_tmp
from .network import BRIDGE, GATEWAY, frontend_address, ip
from .packages import MACHINE_PACKAGES, UnknownImage, image_source
from .pebble import real_pebble
from .providers import CA, LIMITS, Ingress, Providers

#: what stands in for each charm we do not write, and the interfaces it answers
STAND_INS: Mapping[str, tuple[str, frozenset[str]]] = {
    "mysql-k8s": ("MariaDB on this machine", frozenset({"mysql_client"})),
    "rabbitmq-k8s": ("RabbitMQ on this machine", frozenset({"rabbitmq"})),
    "traefik-k8s": ("HAProxy", frozenset({"ingress", "certificates", "receive-ca-cert"})),
    "self-signed-certificates": ("the sandbox's CA", frozenset({"tls-certificates", "certificate_transfer"})),
}

#: what an image ships outside its venv that a charm relies on, by (charm, container): path in
#: the image -> in the release's venv (kolla copies a service's etc/ into /etc/<service>)
IMAGE_FILES: Mapping[tuple[str, str], Mapping[str, str]] = {
    ("glance-k8s", "glance"): {"/etc/glance/metadefs": "etc/glance/metadefs"},
}

#: the machine model deployed beside the default bundle, and what this machine needs of it: Open
#: vSwitch's userspace datapath (no kernel module here) and guests under QEMU's emulation (no usable KVM)
MACHINE_BUNDLE = REPO / "bundles" / "hypervisor.yaml"
MACHINE_OVERLAYS = tuple(
    REPO / "bundles" / "hypervisor-overlays" / name
    for name in ("userspace-datapath.yaml", "emulated-cpu.yaml")
)

#: interfaces whose provider answers again whenever the request changes (a CA signs each new
#: request; traefik routes to https once a unit serves it)
LIVE = ("tls-certificates", "ingress")


class BundleError(ValueError):
    """A bundle the sandbox cannot deploy; the message says what and why."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a bundle deploys, as the sandbox sees it."""

    #: our applications -> their charm (a directory of charms/)
    apps: dict[str, str]
    #: the other applications -> the charm they name (one of STAND_INS)
    stand_ins: dict[str, str]
    #: relations with at least one of our applications, as ``app:endpoint`` pairs
    relations: list[tuple[str, str]]
    scale: dict[str, int]
    config: dict[str, dict[str, Any]]
    #: ingress providers with a certificate (https frontends) / given the CA (verifying https units)
    tls_proxies: frozenset[str] = frozenset()
    verifying_proxies: frozenset[str] = frozenset()
    #: the Debian packages standing in for our charms' images (see :mod:`.packages`)
    debian: frozenset[str] = frozenset()
    #: our applications that are machine charms (from the machine bundle)
    machines: frozenset[str] = frozenset()
    #: a machine unit -> the bundle's machine it is placed on (``to:``); one of its own otherwise
    placement: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def packages(self) -> set[str]:
        """Every Debian package this layout needs here: its images', its machines', its stand-ins'."""
        machine = {p for m in MACHINE_PACKAGES.values() for p in m.debian} if self.machines else set()
        return (
            set(self.debian) | machine | ({"haproxy"} if "traefik-k8s" in self.stand_ins.values() else set())
        )

    def limits(self) -> list[str]:
        """What the stand-ins cannot do that the charms they stand in for do, one line each."""
        by_charm: dict[str, list[str]] = {}
        for app, charm in self.stand_ins.items():
            by_charm.setdefault(charm, []).append(app)
        lines = [f"{', '.join(apps)} ({charm}): {LIMITS[charm]}" for charm, apps in sorted(by_charm.items())]
        if any("k8s-api" in (merged_charmcraft(c).get("assumes") or []) for c in self.apps.values()):
            lines.append(f"the Kubernetes API (trusted charms): {KUBERNETES_LIMITS['kubernetes']}")
        if self.machines:
            lines.append(
                f"{', '.join(sorted(self.machines))} (machines): namespaces per machine, not a VM;"
                " Debian's packages for Ubuntu's (same names), OpenStack's from the release's venv;"
                " systemd units run without systemd (no Restart=, no socket activation, no D-Bus);"
                " no kernel modules; guests emulated (no KVM); offers consumed as direct relations"
            )
        return lines


def _our_charm(name: str) -> str | None:
    stem = pathlib.PurePosixPath(name).name.removesuffix(".charm").split("_")[0]
    return stem if (REPO / "charms" / stem / "charmcraft.yaml").exists() else None


def read_bundle(
    bundle: pathlib.Path,
    overlays: Sequence[pathlib.Path] = (),
    machine_bundle: pathlib.Path | None = None,
    machine_overlays: Sequence[pathlib.Path] = (),
) -> Layout:
    """The layout of ``bundle`` with ``overlays`` merged as ``juju deploy --overlay`` does.

    ``machine_bundle`` (with ``machine_overlays``) is a machine model's bundle
    deployed beside it, whose ``saas`` consume ``bundle``'s offers.
    """
    for path in (bundle, *overlays, *([machine_bundle] if machine_bundle else []), *machine_overlays):
        if not path.is_file():
            raise BundleError(f"no such bundle or overlay: {path}")
    try:
        docs = deployed(bundle, overlays)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{bundle}: {e}") from None
    base = docs[0]
    apps: dict[str, str] = {}
    stand_ins: dict[str, str] = {}
    debian: set[str] = set()
    scale: dict[str, int] = {}
    config: dict[str, dict[str, Any]] = {}
    for app, spec in (base.get("applications") or {}).items():
        charm = str((spec or {}).get("charm", ""))
        ours = _our_charm(charm)
        if ours:
            apps[app] = ours
        elif charm in STAND_INS:
            stand_ins[app] = charm
        else:
            raise BundleError(
                f"application {app!r} is charm {charm!r}: neither one of ours (charms/) nor one the sandbox"
                f" stands in for ({', '.join(sorted(STAND_INS))})"
            )
        scale[app] = int(spec.get("scale") or spec.get("num_units") or 1)
        config[app] = dict(spec.get("options") or {})
        if ours:
            debian.update(_image_packages(app, ours, spec.get("resources") or {}))
    relations: list[tuple[str, str]] = []
    tls: set[str] = set()
    verifying: set[str] = set()
    for pair in base.get("relations") or []:
        a, b = (str(end) for end in pair)
        ends = {a.split(":")[0], b.split(":")[0]}
        unknown = ends - set(apps) - set(stand_ins)
        if unknown:
            raise BundleError(f"relation {a} - {b} names an application the bundle lacks: {sorted(unknown)}")
        if ends & set(apps):
            relations.append((a, b))
            continue
        # between two stand-ins: what it changes in how they serve
        for mine, theirs in ((a, b), (b, a)):
            app, endpoint = mine.split(":")
            if (
                stand_ins[app] != "traefik-k8s"
                or stand_ins.get(theirs.split(":")[0]) != "self-signed-certificates"
            ):
                continue
            if endpoint == "certificates":
                tls.add(app)
            elif endpoint == "receive-ca-cert":
                verifying.add(app)
    machines: set[str] = set()
    placement: dict[str, str] = {}
    if machine_bundle is not None:
        machines = _read_machine_bundle(
            machine_bundle, machine_overlays, _offers(docs[1:]), apps, scale, config, relations, placement
        )
    for a, b in relations:
        for end in (a, b):
            app, endpoint = end.split(":")
            if app in stand_ins:
                continue
            other = (b if end == a else a).split(":")[0]
            if other in stand_ins:
                _check_answered(apps[app], endpoint, other, stand_ins[other])
    return Layout(
        apps,
        stand_ins,
        relations,
        scale,
        config,
        frozenset(tls),
        frozenset(verifying),
        frozenset(debian),
        frozenset(machines),
        placement,
    )


def _offers(overlay_docs: Sequence[dict[str, Any]]) -> dict[str, tuple[str, list[str]]]:
    """The offers of a bundle: offer name -> the offering application and its endpoints."""
    offers: dict[str, tuple[str, list[str]]] = {}
    for doc in overlay_docs:
        for app, spec in (doc.get("applications") or {}).items():
            for name, offer in ((spec or {}).get("offers") or {}).items():
                offers[name] = (app, [str(e) for e in (offer or {}).get("endpoints") or []])
    return offers


def _read_machine_bundle(
    path: pathlib.Path,
    overlays: Sequence[pathlib.Path],
    offers: Mapping[str, tuple[str, list[str]]],
    apps: dict[str, str],
    scale: dict[str, int],
    config: dict[str, dict[str, Any]],
    relations: list[tuple[str, str]],
    placement: dict[str, str],
) -> set[str]:
    """Add a machine bundle's applications, placements and relations (saas resolved to offers); its apps."""
    from ..machine import MachineCharm
    from ..testing import load_charm_class

    try:
        base = deployed(path, overlays)[0]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{path}: {e}") from None
    # a saas URL is [controller:][user/]model.offer: the sandbox has one controller, one k8s model
    saas = {
        name: str((spec or {}).get("url", "")).rsplit(".", 1)[-1]
        for name, spec in (base.get("saas") or {}).items()
    }
    for name, offer in saas.items():
        if offer not in offers:
            raise BundleError(f"{path.name}: saas {name!r} consumes offer {offer!r}, which no bundle offers")
    machines: set[str] = set()
    for app, spec in (base.get("applications") or {}).items():
        charm = str((spec or {}).get("charm", ""))
        ours = _our_charm(charm)
        if ours is None or not issubclass(load_charm_class(ours), MachineCharm):
            raise BundleError(f"{path.name}: application {app!r} is {charm!r}, not one of our machine charms")
        if app in apps:
            raise BundleError(f"{path.name}: application {app!r} is in both bundles")
        apps[app], scale[app], config[app] = (
            ours,
            int(spec.get("num_units") or 1),
            dict(spec.get("options") or {}),
        )
        machines.add(app)
        # the n-th unit goes to the n-th machine of `to:`; units beyond them each get a new machine
        to = [str(m) for m in spec.get("to") or []]
        declared = {str(m) for m in base.get("machines") or {}}
        if len(to) > scale[app] or not set(to) <= declared:
            raise BundleError(
                f"{path.name}: application {app!r}: 'to' must name at most num_units of the bundle's "
                f"machines {sorted(declared)}, not {to}"
            )
        placement.update({f"{app}/{n}": machine for n, machine in enumerate(to)})

    def resolve(end: str) -> str:
        app, _, endpoint = end.partition(":")
        if app not in saas:
            if app not in machines:
                raise BundleError(f"{path.name}: relation end {end} names neither an application nor a saas")
            return end
        offering, endpoints = offers[saas[app]]
        if not endpoint and len(endpoints) == 1:
            endpoint = endpoints[0]
        if endpoint not in endpoints:
            raise BundleError(f"{path.name}: {end}: offer {saas[app]!r} has the endpoints {endpoints}")
        return f"{offering}:{endpoint}"

    for a, b in base.get("relations") or []:
        relations.append((resolve(str(a)), resolve(str(b))))
    return machines


def _image_packages(app: str, charm: str, resources: dict[str, Any]) -> set[str]:
    """The Debian packages standing in for every image ``app`` runs (the bundle's, else the charm's)."""
    meta = merged_charmcraft(charm)
    packages: set[str] = set()
    for name, spec in (meta.get("resources") or {}).items():
        if spec.get("type") != "oci-image":
            continue
        image = str(resources.get(name) or spec.get("upstream-source") or "")
        try:
            packages.update(image_source(image).debian)
        except UnknownImage as e:
            raise BundleError(f"application {app!r} ({charm}), resource {name}: {e}") from None
    return packages


def _check_answered(charm: str, endpoint: str, other: str, other_charm: str) -> None:
    meta = merged_charmcraft(charm)
    for role in ("requires", "provides"):
        spec = (meta.get(role) or {}).get(endpoint)
        if spec is not None:
            if spec["interface"] not in STAND_INS[other_charm][1]:
                raise BundleError(
                    f"{other} ({other_charm}) is related on {charm}'s {endpoint} ({spec['interface']}),"
                    f" which its stand-in, {STAND_INS[other_charm][0]}, does not answer"
                )
            return
    raise BundleError(f"{charm} has no endpoint {endpoint}")


@dataclasses.dataclass(frozen=True)
class UnitStatus:
    """One row of ``status``."""

    app: str
    unit: str
    status: str
    message: str
    address: str
    charm: str


class NotConverged(RuntimeError):
    """Units that did not reach active: each with its last hook, status and its services' last lines."""

    def __init__(self, reason: str, units: Mapping[str, str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.units = dict(units)


class Cloud:
    """A deployed bundle: the model of our charms, the machine running their pods, the stand-ins."""

    def __init__(
        self,
        state: pathlib.Path,
        venv: pathlib.Path,
        layout: Layout,
        *,
        extra_relations: Iterable[tuple[str, str]] = (),
        report: Callable[[str], None] = lambda line: None,
        seed: int = 0,
    ) -> None:
        self.state = state
        self.venv = venv
        self.layout = layout
        self.report = report
        self.seed = seed
        self.started = time.monotonic()
        self._stack = contextlib.ExitStack()
        self._seen: dict[str, tuple[str, str]] = {}
        logs = state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.logs = logs
        self.machine = Machine(venv, logs, state / "units")
        self.ca = CA(state / "ca") if "self-signed-certificates" in layout.stand_ins.values() else None
        self.ingress = None
        if "traefik-k8s" in layout.stand_ins.values():
            ingress_state = state / "ingress"
            ingress_state.mkdir(exist_ok=True)
            self.ingress = Ingress(
                self.machine,
                ingress_state,
                logs,
                ca=self.ca,
                tls=layout.tls_proxies,
                verifying=layout.verifying_proxies,
            )
        self.providers = Providers(state, layout.stand_ins, self.ingress, self.ca)
        #: the Kubernetes API the trusted charms call (LoadBalancer services: HAProxy on the bridge)
        self.lb_addresses: list[str] = []
        # the namespace of the bridge, which a hook's thread (in its pod's network) is not in
        self._home_network = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self.kubernetes = Kubernetes(
            self._lb_address,
            lambda app: [self.machine.address(u) for u in self.machine.units(app)],
            state=state / "k8s",
            logs=logs,
        )
        #: a machine unit -> its machine, as its charm's host applier works on it
        self.hosts: dict[str, SandboxHost] = {}
        self.model = SimulatedModel(
            layout.apps,
            [*layout.relations, *extra_relations],
            self.providers,
            state / "model",
            config=layout.config,
            scale={app: n for app, n in layout.scale.items() if app in layout.apps},
            live=LIVE,
            charm_runs_in=self.machine.charm_runs_in,
            observer=self._observe,
            machine_of=self._machine_of,
        )
        self.providers.requests = self.model.requests

    # -- bringing it up ------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds since the cloud was made."""
        return time.monotonic() - self.started

    def _observe(self, unit: str, hook: str, state: testing.State) -> None:
        status = (state.unit_status.name, state.unit_status.message)
        if self._seen.get(unit) != status:
            self._seen[unit] = status
            self.report(f"{self.elapsed():7.1f}s  {unit:<22} {status[0]:<11} {status[1]}  [{hook}]")

    def up(self, max_rounds: int = 12) -> None:
        """Make every pod, run Juju's first hooks on every unit, then settle until all are active.

        Raises :class:`NotConverged` naming each unit that is not active.
        """
        self._stack.enter_context(real_pebble(self.machine))
        self._stack.enter_context(real_kubernetes(self.kubernetes))
        for app in self.layout.apps:
            for unit in self.model.units[app]:
                self._make_pod(unit)
        self._write_cluster_dns()
        try:
            self.first_hooks()
            self.model.settle(max_rounds, between_rounds=self._between_rounds, until_active=True)
            if self.ingress is not None:
                self.ingress.wait_until_up()
        except ServiceExited as e:
            raise NotConverged(str(e), {e.unit: self.describe(e.unit)}) from None
        except (AssertionError, TimeoutError) as e:
            units = {u: self.describe(u) for u, s in self.model.unit_statuses().items() if s.name != "active"}
            raise NotConverged(str(e).splitlines()[0], units) from None

    @property
    def _home(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self._home_network}"

    def _lb_address(self) -> str:
        """A new address on the bridge for a LoadBalancer service (called from a charm's hook)."""
        address = frontend_address()
        ip("addr", "add", f"{address}/32", "dev", BRIDGE, netns=self._home)
        self.lb_addresses.append(address)
        return address

    def _make_pod(self, unit: str) -> None:
        """A unit's machine or containers (with storage and image files), its endpoints bound."""
        app = unit.split("/")[0]
        charm = self.layout.apps[app]
        if app in self.layout.machines:
            self._add_machine(unit)
        for name, spec in (merged_charmcraft(charm).get("containers") or {}).items():
            self.machine.add_container(unit, name, container_storages(spec))
            for path, source in IMAGE_FILES.get((charm, name), {}).items():
                self.machine.provide_image_files(unit, name, {path: self.venv / source})
        self._bind(unit, charm)

    def _add_machine(self, unit: str) -> None:
        """A machine unit's machine: the bundle's it is placed on, made by its first unit; else its own."""
        placed = self.layout.placement.get(unit)
        sharing = next((u for u in self.hosts if placed and self.layout.placement.get(u) == placed), None)
        if sharing is not None:
            container = self.machine.share_machine(unit, sharing)
        else:
            hostname = hostname_of(unit, placed)
            container = self.machine.add_container(unit, MACHINE, hostname=hostname, keep=under_tmp())
        self.hosts[unit] = SandboxHost(container, self.machine.state, self.venv)

    def _machine_of(self, unit: str) -> tuple[SandboxHost, pathlib.Path]:
        """A machine unit's host, and where its agent keeps the charm's state (as /var/lib/juju does)."""
        return self.hosts[unit], self.machine.state / unit.replace("/", "-") / "agent"

    def pod_name(self, unit: str) -> str:
        """A unit's name under its application's headless service, as Kubernetes' DNS answers it."""
        from ..relations.ingress import unit_host

        return unit_host(unit, unit.split("/")[0], self.model.model_name)

    def _bind(self, unit: str, charm: str) -> None:
        """Every endpoint of the unit bound to its pod's address, as ``network-get`` answers in a pod."""
        meta = merged_charmcraft(charm)
        address = self.machine.address(unit)
        endpoints = [
            e for kind in ("requires", "provides", "peers", "extra-bindings") for e in meta.get(kind) or {}
        ]
        networks = {
            testing.Network(
                endpoint,
                [testing.BindAddress([testing.Address(address)], interface_name="eth0")],
                ingress_addresses=[address],
                egress_subnets=[f"{address}/32"],
            )
            for endpoint in endpoints
        }
        state = self.model.unit_states[unit]
        self.model.unit_states[unit] = dataclasses.replace(state, networks=frozenset(networks))

    def _between_rounds(self) -> None:
        # time passes between hooks: the services started come up, Pebble's checks see them
        self.machine.wait_for_checks()

    def first_hooks(self) -> None:
        """What Juju runs on a new unit, units and relations in a shuffled (seeded) order."""
        shuffle = random.Random(self.seed)
        units = [u for app in self.layout.apps for u in self.model.units[app]]
        shuffle.shuffle(units)
        for unit in units:
            state = self.model.unit_states[unit]
            on = self.model.contexts[unit].on
            self._fire(unit, on.install())
            if state.leader:
                self._fire(unit, on.leader_elected())
            self._fire(unit, on.config_changed())
            self._fire(unit, on.start())
            for container in state.containers:
                self._fire(unit, on.pebble_ready(self._container(unit, container.name)))
        pairs = [
            (unit, relation.id)
            for unit in units
            for relation in self.model.input_state(unit).relations
            if self.model.remote_units(relation)
        ]
        shuffle.shuffle(pairs)
        for unit, relation_id in pairs:
            on = self.model.contexts[unit].on
            relation = self.model.input_state(unit).get_relation(relation_id)
            remotes = self.model.remote_units(relation)
            self._fire(unit, on.relation_created(relation))
            for remote in remotes:
                relation = self.model.input_state(unit).get_relation(relation_id)
                self._fire(unit, on.relation_joined(relation, remote_unit=remote))
            relation = self.model.input_state(unit).get_relation(relation_id)
            self._fire(unit, on.relation_changed(relation, remote_unit=remotes[0]))

    def _fire(self, unit: str, event: Any) -> None:
        """Run one event, made from what the unit sees now, on the unit's charm."""
        self.model.run(unit, lambda _ctx: event)

    def _container(self, unit: str, name: str) -> testing.Container:
        return next(c for c in self.model.input_state(unit).containers if c.name == name)

    # -- Pebble between hooks ----------------------------------------------------------

    def supervise(self) -> list[CheckChange]:
        """Pebble's work since the last call; a check that went down or up runs the charm's event."""
        changes = self.machine.supervise()
        for change in changes:
            unit, name = change.key
            self._set_check_infos(unit)
            container = self._container(unit, name)
            info = next(i for i in container.check_infos if i.name == change.check)
            on = self.model.contexts[unit].on
            if change.status == "down":
                self._fire(unit, on.pebble_check_failed(container, info))
            else:
                self._fire(unit, on.pebble_check_recovered(container, info))
        return changes

    def _set_check_infos(self, unit: str) -> None:
        """The unit's containers as Pebble would report their checks now."""
        state = self.model.unit_states[unit]
        containers = []
        for c in state.containers:
            infos = []
            for (key, name), check in self.machine.checks.items():
                if key == (unit, c.name):
                    infos.append(
                        testing.CheckInfo(
                            name,
                            level=check.spec.get("level"),
                            status=pebble.CheckStatus.DOWN if check.down else pebble.CheckStatus.UP,
                            failures=check.failures,
                            threshold=check.threshold,
                        )
                    )
            containers.append(dataclasses.replace(c, check_infos=frozenset(infos)))
        self.model.unit_states[unit] = dataclasses.replace(state, containers=containers)

    # -- what users ask --------------------------------------------------------------

    def run_action(self, unit: str, action: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run a charm action on a unit (an application: its leader); its results."""
        return self.model.run_action(unit, action, **dict(params or {}))

    def execute(
        self, unit: str, container: str, argv: list[str], timeout: float = 300
    ) -> tuple[int, str, str]:
        """A command in a unit's container, as root (``juju ssh --container``): exit code, stdout, stderr."""
        if (unit, container) not in self.machine.containers:
            raise LookupError(f"{unit} has no container {container!r}")
        return self.machine.run(
            (unit, container),
            argv,
            environment=None,
            user=None,
            group=None,
            timeout=timeout,
            working_dir=None,
        )

    def statuses(self) -> list[UnitStatus]:
        """Every unit's status and address, then the stand-ins."""
        rows = []
        for app, units in self.model.units.items():
            for unit in units:
                status = self.model.unit_states[unit].unit_status
                address = self.machine.address(unit) if unit in self.machine.networks else ""
                rows.append(
                    UnitStatus(app, unit, status.name, status.message, address, self.layout.apps[app])
                )
        for app, charm in self.layout.stand_ins.items():
            address = GATEWAY
            if charm == "traefik-k8s" and self.ingress is not None:
                address = self.ingress.addresses.get(app, "")
            elif charm == "self-signed-certificates":
                address = ""
            rows.append(
                UnitStatus(app, f"{app}/0", "active", f"stood in by {STAND_INS[charm][0]}", address, charm)
            )
        return rows

    def hooks_per_app(self) -> dict[str, int]:
        """Hooks run so far, by application."""
        counts: dict[str, int] = {}
        for unit, n in self.model.hooks.items():
            app = unit.split("/")[0]
            counts[app] = counts.get(app, 0) + n
        return counts

    def describe(self, unit: str, lines: int = 15) -> str:
        """What went wrong on a unit: its last hook, its status, the last lines of its services' logs."""
        state = self.model.unit_states[unit]
        text = [
            f"{unit}: {state.unit_status.name}: {state.unit_status.message or '(no message)'}"
            f" after {self.model.last_hook.get(unit, 'no hook')}"
        ]
        for key, name in sorted({k for k in self.machine.processes if k[0][0] == unit} | self._logged(unit)):
            tail = self.machine.tail(key, name, lines)
            if tail:
                text += [f"--- {key[1]}: {name} (last {lines} lines)", tail]
        host = self.hosts.get(unit)
        if host is not None:
            for name in host.logs():
                tail = "\n".join(host.log(name).read_text(errors="replace").splitlines()[-lines:])
                if tail:
                    text += [f"--- machine: service {name} (last {lines} lines)", tail]
        return "\n".join(text)

    def _logged(self, unit: str) -> set[tuple[tuple[str, str], str]]:
        prefix = unit.replace("/", "-") + "-"
        found = set()
        for container, name in self.machine.containers:
            if container != unit:
                continue
            for log in self.logs.glob(f"{prefix}{name}-*.log"):
                found.add(((unit, name), log.stem.removeprefix(f"{prefix}{name}-")))
        return found

    # -- taking it down ---------------------------------------------------------------

    def down(self) -> None:
        """Stop every process, remove every file, database, user and vhost this cloud made."""
        errors = []
        for step in (
            self._stack.close,
            self.kubernetes.close,
            self._release_lb_addresses,
            self.ingress.close if self.ingress else None,
            self.machine.cleanup,
            self.providers.cleanup,
        ):
            if step is None:
                continue
            try:
                step()
            except Exception as e:
                errors.append(f"{getattr(step, '__qualname__', step)}: {e}")
        if errors:
            raise RuntimeError("; ".join(errors))

    # -- scaling (juju add-unit, remove-unit) -------------------------------------------

    def add_unit(self, app: str, max_rounds: int = 12) -> str:
        """A new unit of ``app`` with a pod of its own, settled until every unit is active; its name.

        Raises :class:`NotConverged` naming each unit that is not active.
        """
        if app not in self.layout.apps:
            raise LookupError(f"{app} is not one of our applications: {', '.join(self.layout.apps)}")

        def pod(unit: str) -> None:
            self._make_pod(unit)
            self._write_cluster_dns()

        unit = self.model.add_unit(app, prepare=pod)
        self._settle_scaled(max_rounds)
        self._reroute(app)
        return unit

    def remove_unit(self, unit: str, max_rounds: int = 12) -> None:
        """Remove a unit: its departing hooks, then its pod, then the others settle until all are active.

        Raises :class:`NotConverged` naming each unit that is not active.
        """
        if unit not in self.model.unit_states:
            raise LookupError(f"no unit {unit}")

        def gone(unit: str) -> None:
            self.machine.remove_unit(unit)
            self.hosts.pop(unit, None)
            self._seen.pop(unit, None)
            self._write_cluster_dns()
            self._reroute(unit.split("/")[0])

        self.model.remove_unit(unit, gone=gone)
        self._settle_scaled(max_rounds)

    def _release_lb_addresses(self) -> None:
        for address in self.lb_addresses:
            ip("addr", "del", f"{address}/32", "dev", BRIDGE, netns=self._home)
        self.lb_addresses.clear()
        os.close(self._home_network)

    def _write_cluster_dns(self) -> None:
        """Every container's /etc/hosts naming every pod and machine there is now, as DNS answers."""
        self.machine.write_hosts(
            {
                self.machine.address(u): [
                    self.hosts[u].container.hostname or "" if u in self.hosts else self.pod_name(u)
                ]
                for u in self.machine.networks
            }
        )

    def _reroute(self, app: str) -> None:
        """HAProxy's backends of ``app``'s routes: its units now (HAProxy renders them from the pods)."""
        if self.ingress is None or not any(r.app == app for r in self.ingress.routes.values()):
            return
        self.ingress.restart()
        self.ingress.wait_until_up()

    def _settle_scaled(self, max_rounds: int) -> None:
        try:
            self.model.settle(max_rounds, between_rounds=self._between_rounds, until_active=True)
        except ServiceExited as e:
            raise NotConverged(str(e), {e.unit: self.describe(e.unit)}) from None
        except (AssertionError, TimeoutError) as e:
            units = {u: self.describe(u) for u, s in self.model.unit_statuses().items() if s.name != "active"}
            raise NotConverged(str(e).splitlines()[0], units) from None
