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
    "ovn-central": "23.03.1-1~deb12u2",
    "ovn-common": "23.03.1-1~deb12u2",
    "ovn-host": "23.03.1-1~deb12u2",
    "openvswitch-common": "3.1.0-2+deb12u1",
    "openvswitch-switch": "3.1.0-2+deb12u1",
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

#: image (without its tag) -> what stands in for it here
IMAGES: Mapping[str, Source] = {
    "quay.io/openstack.kolla/keystone": VENV,
    "quay.io/openstack.kolla/glance-api": VENV,
    "quay.io/openstack.kolla/placement-api": VENV,
    "quay.io/openstack.kolla/neutron-server": VENV,
    "quay.io/openstack.kolla/ovn-nb-db-server": OVN_CENTRAL,
    "quay.io/openstack.kolla/ovn-sb-db-server": OVN_CENTRAL,
    "quay.io/openstack.kolla/ovn-northd": OVN_CENTRAL,
    "quay.io/openstack.kolla/ovn-sb-db-relay": OVN_RELAY,
}


#: what a machine charm's apt package is stood in by here: Ubuntu's package -> Debian's, at their
#: pins above (whatever version the charm pinned: Ubuntu's versions are not in Debian's archive)
MACHINE_PACKAGES: Mapping[str, tuple[str, ...]] = {
    "openvswitch-switch": ("openvswitch-switch", "openvswitch-common"),
    "ovn-host": ("ovn-host", "ovn-common"),
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
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=600"]
    pins = [f"{p}={DEBIAN_PINS[p]}" for p in missing]
    for package in missing:
        madison = subprocess.run(
            ["apt-cache", "madison", package], capture_output=True, text=True, check=False
        )
        if f" {DEBIAN_PINS[package]} " not in madison.stdout:
            subprocess.run(
                host_command(*apt, "update"), env=env, capture_output=True, check=True, timeout=600
            )
            break
    done = subprocess.run(
        host_command(*apt, "install", "--no-install-recommends", "--allow-downgrades", *pins),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"apt-get install {' '.join(pins)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    for script in ("haproxy", "openvswitch-switch", "ovn-central", "ovn-host"):
        if script in fresh and os.path.exists(f"/etc/init.d/{script}"):
            subprocess.run([f"/etc/init.d/{script}", "stop"], capture_output=True, check=False, timeout=60)
