"""What stands in for the software of the charms' images: one declared map, and its installation.

A k8s charm's container runs the OCI image its resource names. The sandbox
does not pull images: each image is stood in by software on this machine,
either the pinned OpenStack release in the venv (the services and their
clients) or Debian packages at a pinned version. An image the map does not
know is an error naming it, never skipped. Debian packages are installed once
and stay, as the venv does.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterable, Mapping

from .network import host_command

#: Debian bookworm's versions (main and security archives); an update replacing one moves its pin
DEBIAN_PINS: Mapping[str, str] = {
    "haproxy": "2.6.12-1+deb12u4",
    "libvirt-clients": "9.0.0-4+deb12u2",
    "libvirt-daemon": "9.0.0-4+deb12u2",
    "libvirt-daemon-driver-qemu": "9.0.0-4+deb12u2",
    "libvirt-daemon-system": "9.0.0-4+deb12u2",
    "libvirt-dev": "9.0.0-4+deb12u2",
    "pkg-config": "1.8.1-1",
    "ovn-central": "23.03.1-1~deb12u2",
    "ovn-common": "23.03.1-1~deb12u2",
    "ovn-host": "23.03.1-1~deb12u2",
    "openvswitch-common": "3.1.0-2+deb12u1",
    "openvswitch-switch": "3.1.0-2+deb12u1",
    "qemu-system-x86": "1:7.2+dfsg-7+deb12u18+b3",
    "qemu-utils": "1:7.2+dfsg-7+deb12u18+b3",
    "spice-html5": "0.3.0-2",
    "sudo": "1.9.13p3-1+deb12u4",
}


@dataclasses.dataclass(frozen=True)
class Source:
    """What stands in for one image: the release's venv, or Debian packages (with what they need pinned)."""

    debian: tuple[str, ...] = ()

    @property
    def describe(self) -> str:
        return f"Debian {', '.join(self.debian)}" if self.debian else "the OpenStack release's venv"


VENV = Source()
OVN_CENTRAL = Source(("ovn-central", "ovn-common", "openvswitch-common"))
# ovsdb-server and ovsdb-client are openvswitch-common's in Debian 12; a relay gets its schema from its source
OVN_RELAY = Source(("openvswitch-common",))
SPICE_PROXY = Source(("spice-html5",))

#: image (without its tag) -> what stands in for it here
IMAGES: Mapping[str, Source] = {
    "quay.io/openstack.kolla/keystone": VENV,
    "quay.io/openstack.kolla/glance-api": VENV,
    "quay.io/openstack.kolla/placement-api": VENV,
    "quay.io/openstack.kolla/neutron-server": VENV,
    "quay.io/openstack.kolla/nova-api": VENV,
    "quay.io/openstack.kolla/nova-scheduler": VENV,
    "quay.io/openstack.kolla/nova-conductor": VENV,
    # the proxy serves the SPICE HTML5 client kolla's image carries at /usr/share/spice-html5
    "quay.io/openstack.kolla/nova-spicehtml5proxy": SPICE_PROXY,
    "quay.io/openstack.kolla/ovn-nb-db-server": OVN_CENTRAL,
    "quay.io/openstack.kolla/ovn-sb-db-server": OVN_CENTRAL,
    "quay.io/openstack.kolla/ovn-northd": OVN_CENTRAL,
    "quay.io/openstack.kolla/ovn-sb-db-relay": OVN_RELAY,
}


@dataclasses.dataclass(frozen=True)
class Account:
    """A system user a package's maintainer scripts make (with a group of its name), and groups it joins."""

    name: str
    home: str
    shell: str = "/usr/sbin/nologin"
    groups: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Shipped:
    """A file a package ships: its text, owner and mode, or the file ``from_venv`` of the release's venv."""

    path: str
    text: str = ""
    owner: str = "root"
    group: str = "root"
    mode: int = 0o644
    from_venv: str = ""


@dataclasses.dataclass(frozen=True)
class MachinePackage:
    """What stands in for one of Ubuntu's packages on a machine.

    Debian's packages at their pins, for what Debian has (Open vSwitch, libvirt,
    QEMU); for OpenStack's own packages, the release's venv, laid out as Ubuntu's
    package lays out its own: its programs in /usr/bin (the venv's, linked; a
    machine's /usr is its own), its systemd unit in /usr/lib/systemd/system
    running them as Ubuntu's does, its system users, directories, sudoers and
    rootwrap files.
    """

    debian: tuple[str, ...] = ()
    accounts: tuple[Account, ...] = ()
    directories: tuple[tuple[str, str, str, int], ...] = ()
    """(path, owner, group, mode)."""
    files: tuple[Shipped, ...] = ()
    programs: tuple[str, ...] = ()
    """The venv's programs the package puts in /usr/bin."""

    def __add__(self, other: MachinePackage) -> MachinePackage:
        """Both packages (one of Ubuntu's that depends on another)."""
        return MachinePackage(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self))
        )


def _unit(description: str, user: str, exec_start: str, after: str = "") -> Shipped:
    """A systemd unit as Ubuntu's OpenStack packages ship one: the daemon as its user, in its state dir."""
    lines = ["[Unit]", f"Description={description}"]
    lines += [f"After={after}"] if after else []
    lines += ["", "[Service]", f"User={user}", f"Group={user}", "Type=simple"]
    lines += [f"WorkingDirectory=/var/lib/{user}", f"ExecStart={exec_start}", "", "[Install]"]
    lines += ["WantedBy=multi-user.target", ""]
    name = exec_start.split()[0].rsplit("/", 1)[-1]
    return Shipped(f"/usr/lib/systemd/system/{name}.service", "\n".join(lines))


def _sudoers(user: str, *commands: str) -> Shipped:
    """The package's sudoers file: its user runs its rootwrap (and through it, privsep's helper) as root."""
    lines = [f"Defaults:{user} !requiretty", ""]
    lines += [f"{user} ALL = (root) NOPASSWD: {command}" for command in commands]
    return Shipped(f"/etc/sudoers.d/{user}_sudoers", "\n".join(lines) + "\n", mode=0o440)


def _common(service: str, shell: str, filters: str) -> MachinePackage:
    """Ubuntu's ``<service>-common``: the user, /etc/<service> with its rootwrap, state and log dirs."""
    rootwrap = f"/usr/bin/{service}-rootwrap /etc/{service}/rootwrap.conf"
    return MachinePackage(
        debian=("sudo",),
        accounts=(Account(service, f"/var/lib/{service}", shell),),
        directories=(
            (f"/etc/{service}", "root", service, 0o750),
            (f"/var/lib/{service}", service, service, 0o755),
            (f"/var/log/{service}", service, "adm", 0o750),
            (f"/var/lock/{service}", service, service, 0o750),
        ),
        files=(
            _sudoers(
                service, f"{rootwrap} *", f"/usr/bin/{service}-rootwrap-daemon /etc/{service}/rootwrap.conf"
            ),
            Shipped(f"/etc/{service}/rootwrap.conf", from_venv=f"etc/{service}/rootwrap.conf"),
            Shipped(f"/etc/{service}/rootwrap.d/{filters}", from_venv=f"etc/{service}/rootwrap.d/{filters}"),
        ),
        programs=(f"{service}-rootwrap", f"{service}-rootwrap-daemon", "privsep-helper"),
    )


#: Ubuntu's nova-compute (with nova-common): nova-compute.service, reading nova.conf and nova-compute.conf
NOVA_COMPUTE = _common("nova", "/bin/sh", "compute.filters") + MachinePackage(
    directories=(("/var/lib/nova/instances", "nova", "nova", 0o755),),
    files=(
        _unit(
            "OpenStack Compute",
            "nova",
            "/usr/bin/nova-compute --config-file=/etc/nova/nova.conf "
            "--config-file=/etc/nova/nova-compute.conf --log-file=/var/log/nova/nova-compute.log",
            after="libvirtd.service",
        ),
    ),
    programs=("nova-compute", "nova-manage"),
)
#: Ubuntu's nova-compute-kvm (through nova-compute-libvirt): libvirt and QEMU, nova in their groups
NOVA_COMPUTE_KVM = MachinePackage(
    debian=(
        "libvirt-daemon-system",
        "libvirt-daemon",
        "libvirt-daemon-driver-qemu",
        "libvirt-clients",
        "qemu-system-x86",
        "qemu-utils",
    ),
    accounts=(Account("nova", "/var/lib/nova", "/bin/sh", groups=("libvirt", "kvm")),),
)
#: Ubuntu's neutron-ovn-metadata-agent (with neutron-common): the agent, and the haproxy it runs per network
NEUTRON_OVN_METADATA_AGENT = _common("neutron", "/usr/sbin/nologin", "rootwrap.filters") + MachinePackage(
    debian=("haproxy",),
    # neutron-common's neutron.conf, which the agent reads first: nothing this machine needs is in it
    files=(
        Shipped("/etc/neutron/neutron.conf", "[DEFAULT]\n", group="neutron", mode=0o640),
        _unit(
            "OpenStack Neutron OVN Metadata Agent",
            "neutron",
            "/usr/bin/neutron-ovn-metadata-agent --config-file=/etc/neutron/neutron.conf "
            "--config-file=/etc/neutron/neutron_ovn_metadata_agent.ini "
            "--log-file=/var/log/neutron/neutron-ovn-metadata-agent.log",
        ),
    ),
    programs=("neutron-ovn-metadata-agent",),
)

#: what a machine charm's apt package is stood in by here: Ubuntu's package -> what stands in for
#: it (Debian's at their pins above, whatever version the charm pinned: Ubuntu's versions are not
#: in Debian's archive; the release's venv for OpenStack's own)
MACHINE_PACKAGES: Mapping[str, MachinePackage] = {
    "openvswitch-switch": MachinePackage(("openvswitch-switch", "openvswitch-common")),
    "ovn-host": MachinePackage(("ovn-host", "ovn-common")),
    # the archive's key: nothing to trust here, the map stands in for every archive
    "ubuntu-cloud-keyring": MachinePackage(),
    "nova-compute": NOVA_COMPUTE,
    "nova-compute-kvm": NOVA_COMPUTE_KVM,
    "neutron-ovn-metadata-agent": NEUTRON_OVN_METADATA_AGENT,
    "haproxy": MachinePackage(("haproxy",)),
}


class UnknownImage(LookupError):
    """An image the sandbox has nothing to stand in for."""


def image_source(image: str) -> Source:
    """What stands in for ``image`` (``name:tag`` or ``name``); :class:`UnknownImage` naming it otherwise."""
    name = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    source = IMAGES.get(name)
    if source is None:
        raise UnknownImage(
            f"image {image!r} is not one the sandbox stands in for ({', '.join(sorted(IMAGES))})"
        )
    return source


def dpkg_version(package: str) -> str | None:
    """The installed version of ``package``, or ``None``."""
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status} ${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    status, _, version = done.stdout.rpartition(" ")
    return version if status.endswith(" installed") else None


#: apt-get as the sandbox runs it: unattended, waiting for another apt's lock
APT = ("apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=600")


def apt_environment() -> dict[str, str]:
    """This process's environment, with apt's questions answered by their defaults."""
    return dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def know_pins(pins: Mapping[str, str]) -> None:
    """Refresh the package lists once (in the machine's network namespace) if they lack a pinned version."""
    for package, version in pins.items():
        madison = subprocess.run(
            ["apt-cache", "madison", package], capture_output=True, text=True, check=False
        )
        if f" {version} " not in madison.stdout:
            subprocess.run(
                host_command(*APT, "update"),
                env=apt_environment(),
                capture_output=True,
                check=True,
                timeout=600,
            )
            return


def ensure_debian(packages: Iterable[str]) -> None:
    """Install Debian's ``packages`` at their pins, those that are not, in one apt-get run.

    apt-get runs in the machine's network namespace (the archive is not
    reachable from the sandbox's), refreshing the package lists once if they do
    not know a pin. Without systemd, a package's postinst may start its own
    daemon through its init script: those are stopped, the sandbox runs its own.
    """
    wanted = sorted(set(packages))
    unknown = [p for p in wanted if p not in DEBIAN_PINS]
    if unknown:
        raise LookupError(f"no pinned version for the Debian packages {unknown}")
    missing = [p for p in wanted if dpkg_version(p) != DEBIAN_PINS[p]]
    if not missing:
        return
    fresh = {p for p in missing if dpkg_version(p) is None}
    pins = [f"{p}={DEBIAN_PINS[p]}" for p in missing]
    know_pins({p: DEBIAN_PINS[p] for p in missing})
    done = subprocess.run(
        host_command(*APT, "install", "--no-install-recommends", "--allow-downgrades", *pins),
        env=apt_environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"apt-get install {' '.join(pins)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    for script in (
        "haproxy",
        "openvswitch-switch",
        "ovn-central",
        "ovn-host",
        "libvirtd",
        "virtlogd",
        "virtlockd",
    ):
        if script in fresh and os.path.exists(f"/etc/init.d/{script}"):
            subprocess.run([f"/etc/init.d/{script}", "stop"], capture_output=True, check=False, timeout=60)
