"""A tiny guest for nova to boot: Debian's cloud kernel and a busybox initramfs, as AMI-style images.

The functional tests need a server that really boots under QEMU (TCG: no
usable KVM here) through nova's libvirt driver, and that says so on its serial
console, which nova logs and ``openstack console log show`` returns. Nothing
may come from anywhere but Debian's archive, so the guest is made of two
pinned Debian 12 packages, downloaded (never installed) with ``apt-get
download`` and unpacked with ``dpkg-deb -x``:

* ``linux-image-<abi>-cloud-amd64``: its ``/boot/vmlinuz-*`` is the kernel
  image (glance's ``aki``), and a few of its virtio modules go into the
  initramfs, for the guest's NIC;
* ``busybox-static``: one static binary, the whole userland of the initramfs.

The ramdisk (glance's ``ari``) is a gzip'ed ``newc`` cpio written here in
Python (no ``cpio`` package needed), whose ``/init`` prints :data:`MARKER` on
the serial console and then stays up: a guest whose init exits panics, and one
that powers off turns its server SHUTOFF. The machine image (glance's ``ami``,
with properties ``kernel_id`` and ``ramdisk_id``) is a small raw file of zeros:
nova attaches it as the root disk (``root=/dev/vda`` on the kernel command line),
which the initramfs never mounts.

The kernel command line nova gives a server whose image has a kernel
(``LibvirtDriver._set_guest_for_inst_kernel``, nova 33) is ``root=/dev/vda
console=tty0 console=ttyS0 console=hvc0``, plus `` no_timer_check`` with
``[libvirt] virt_type = qemu``. The kernel's messages go to tty0 and ttyS0
alike, but ``/dev/console`` (init's output) would be the last ``console=``
that exists: hvc0 never does (the cloud kernel's ``virtio_console`` is a
module), so it is tty0, the VGA screen nobody logs. ``/init`` therefore writes
to ``/dev/ttyS0`` itself: the first serial port is the device whose output
nova's libvirt driver logs to the server's ``console.log``.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pathlib
import re
import selectors
import shutil
import subprocess
import tempfile
import time

#: printed by the guest's init on its serial console once it is up (before it looks for a network)
MARKER = "openstack-charm-collection guest up"
#: printed after the network attempt (and its ``guest ipv4:``/``guest hostname:`` lines), at most ~12 s later
NETWORK_DONE = "openstack-charm-collection guest network done"
#: where OpenStack's metadata service answers guests (the DHCP lease routes it to the metadata port)
METADATA_ADDRESS = "169.254.169.254"

#: Debian 12's cloud kernel, the one of the point release (in bookworm's main archive, which keeps
#: it until the next point release; bookworm-security replaces its own with every update)
KERNEL_ABI = "6.1.0-50-cloud-amd64"
KERNEL_PACKAGE = f"linux-image-{KERNEL_ABI}"
KERNEL_VERSION = "6.1.176-1"
#: Debian 12's statically linked busybox: the guest's shell, mount, insmod, udhcpc, ip
BUSYBOX_PACKAGE = "busybox-static"
BUSYBOX_VERSION = "1:1.35.0-4+deb12u1+b1"

#: where the downloaded packages are kept between runs (the archive is asked only for what is missing)
CACHE = pathlib.Path("/var/tmp/openstack-charm-collection/guest")
#: the modules the guest loads for its NIC (virtio-net on virtio-pci); their dependencies come along
MODULES = ("virtio_pci", "virtio_net")
#: the machine image: zeros, as small as a root disk nova attaches can reasonably be
DISK_SIZE = 1024 * 1024

#: /init: busybox's shell as PID 1; every line it prints goes to the first serial port
INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# nova's command line ends in console=hvc0, which never exists here: write to the serial port itself
[ -c /dev/ttyS0 ] && exec </dev/null >/dev/ttyS0 2>&1
echo "{MARKER}"
echo "guest kernel: $(uname -r)"
echo "guest cmdline: $(cat /proc/cmdline)"
for module in $(cat /lib/modules/order); do
    insmod "/lib/modules/$module.ko" || echo "guest: insmod $module failed"
done
ip link set lo up
tries=0
while [ ! -e /sys/class/net/eth0 ] && [ $tries -lt 20 ]; do
    sleep 0.1
    tries=$((tries + 1))
done
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    timeout 10 udhcpc -i eth0 -s /bin/lease -n -q -t 3 -T 2 -A 1 -S -O staticroutes \\
        || echo "guest: no DHCP lease on eth0"
else
    echo "guest: no NIC"
fi
echo "guest hostname: $(hostname)"
ip -4 -o addr show | while read -r _ dev _ address _; do echo "guest ipv4: $dev $address"; done
# what cloud-init would ask first; the metadata agent sets its side up once the port is bound
if ip -4 route show | grep -q "^{METADATA_ADDRESS} "; then
    tries=0
    # busybox's wget (static glibc) crashes looking the port up; nc needs no lookup
    request="GET /openstack/latest/meta_data.json HTTP/1.0\\r\\nHost: {METADATA_ADDRESS}\\r\\n\\r\\n"
    until printf "$request" | nc -w 5 {METADATA_ADDRESS} 80 >/tmp/meta_data.json 2>/dev/null \\
            && head -n 1 /tmp/meta_data.json | grep -q " 200 "; do
        tries=$((tries + 1))
        [ $tries -ge 30 ] && break
        sleep 2
    done
    if head -n 1 /tmp/meta_data.json | grep -q " 200 "; then
        echo "guest metadata: $(tr -d '\\n' </tmp/meta_data.json | grep -o '"uuid": *"[^"]*"')"
    else
        echo "guest: no answer from the metadata service"
    fi
elif [ -e /sys/class/net/eth0 ]; then
    echo "guest: no route to the metadata service"
fi
echo "{NETWORK_DONE}"
while :; do
    sleep 3600
done
"""

#: udhcpc's script: configure the lease it got (busybox gives ``$mask`` as a prefix length) and print it
LEASE = """#!/bin/busybox sh
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        if [ -n "$staticroutes" ]; then
            # classless routes (option 121) replace the router option (RFC 3442)
            set -- $staticroutes
            while [ $# -ge 2 ]; do
                ip route add "$1" via "$2" dev "$interface"
                echo "guest route: $1 via $2"
                shift 2
            done
        else
            for gateway in $router; do
                ip route add default via "$gateway" dev "$interface" && break
            done
        fi
        [ -n "$hostname" ] && hostname "$hostname"
        echo "guest lease: $interface $ip/${mask:-24} router=${router:-none} hostname=${hostname:-none}"
        ;;
esac
exit 0
"""


@dataclasses.dataclass(frozen=True)
class Guest:
    """The three images of the guest: glance's aki, ari and ami."""

    kernel: pathlib.Path
    ramdisk: pathlib.Path
    disk: pathlib.Path


# -- downloading --------------------------------------------------------------------


def _deb_version(path: pathlib.Path) -> tuple[str, str]:
    done = subprocess.run(
        ["dpkg-deb", "--showformat=${Package}\\n${Version}", "--show", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    package, version = done.stdout.splitlines()
    return package, version


def _cached(cache: pathlib.Path, package: str, version: str) -> pathlib.Path | None:
    """The cache's .deb of exactly ``package`` at ``version``, if it has it."""
    for path in sorted(cache.glob(f"{package}_*.deb")):
        if _deb_version(path) == (package, version):
            return path
    return None


def download(cache: pathlib.Path = CACHE) -> tuple[pathlib.Path, pathlib.Path]:
    """The kernel's and busybox's .deb files at their pins, downloaded into ``cache`` unless there.

    ``apt-get download`` fetches a package without installing it (or anything
    it depends on). The package lists are refreshed once if they do not know
    a pin, as the sandbox's own Debian installs do. A download goes to a
    temporary directory first: an interrupted one leaves no partial .deb to
    be taken for a good one next time.
    """
    cache.mkdir(parents=True, exist_ok=True)
    pins = {KERNEL_PACKAGE: KERNEL_VERSION, BUSYBOX_PACKAGE: BUSYBOX_VERSION}
    missing = [name for name, version in pins.items() if _cached(cache, name, version) is None]
    if missing:
        from openstack_charms.sandbox.network import host_command
        from openstack_charms.sandbox.packages import APT, apt_environment, know_pins

        know_pins({name: pins[name] for name in missing})
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as partial:
            done = subprocess.run(
                host_command(*APT, "download", *(f"{name}={pins[name]}" for name in missing)),
                cwd=partial,
                env=apt_environment(),
                capture_output=True,
                text=True,
                check=False,
                timeout=900,
                stdin=subprocess.DEVNULL,
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"apt-get download {' '.join(missing)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
                )
            for path in pathlib.Path(partial).glob("*.deb"):
                path.rename(cache / path.name)
    found = [_cached(cache, name, version) for name, version in pins.items()]
    kernel, busybox = found
    if kernel is None or busybox is None:
        raise RuntimeError(f"apt-get download left no .deb of {pins} in {cache}")
    return kernel, busybox


# -- the initramfs --------------------------------------------------------------------


class _Cpio:
    """A ``newc`` cpio archive, the format the kernel unpacks an initramfs from.

    Each entry is a 110-byte ASCII header (``070701`` and 13 fields of 8 hex
    digits), its NUL-terminated name, and its data, both padded to 4 bytes;
    ``TRAILER!!!`` ends the archive. Owners are root and times 0 whoever builds
    it, so the same packages always give the same bytes.
    """

    def __init__(self) -> None:
        self.data = io.BytesIO()
        self.inode = 0

    def _entry(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.inode += 1
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self.data.write(header + encoded)
        self.data.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self.data.write(body)
        self.data.write(b"\0" * (-len(body) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, body: bytes, permissions: int = 0o644) -> None:
        self._entry(name, 0o100000 | permissions, body)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        # the kernel reads a compressed initramfs whole; 512-byte blocks as cpio(1) writes them
        self.data.write(b"\0" * (-self.data.tell() % 512))
        return self.data.getvalue()


def _module_order(modules: pathlib.Path, wanted: tuple[str, ...]) -> list[pathlib.Path]:
    """``wanted`` and what they depend on, dependencies first, as insmod must load them.

    The package ships no modules.dep (depmod makes it at install time), so each
    module's ``depends=`` is read from its own ``.modinfo`` section.
    """
    by_name = {path.name.removesuffix(".ko").replace("-", "_"): path for path in modules.rglob("*.ko")}
    order: list[pathlib.Path] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        path = by_name.get(name)
        if path is None:
            raise FileNotFoundError(f"kernel module {name} (needed by {' <- '.join(chain) or 'the guest'})")
        if path in order:
            return
        found = re.search(rb"(?:^|\0)depends=([^\0]*)\0", path.read_bytes())
        for dependency in filter(None, (found.group(1).decode() if found else "").split(",")):
            visit(dependency, (name, *chain))
        order.append(path)

    for name in wanted:
        visit(name, ())
    return order


def _initramfs(root: pathlib.Path) -> bytes:
    """The gzip'ed cpio: busybox, /init, the lease script, /dev/console and the NIC's modules."""
    archive = _Cpio()
    for name in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "run", "sys", "tmp"):
        archive.directory(name)
    # the kernel opens /dev/console for init's stdin/stdout before any devtmpfs is mounted
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", (root / "bin/busybox").read_bytes(), 0o755)
    archive.symlink("bin/sh", "busybox")
    archive.file("init", INIT.encode(), 0o755)
    archive.file("bin/lease", LEASE.encode(), 0o755)
    (modules,) = (root / "lib/modules").iterdir()
    order = _module_order(modules, MODULES)
    for path in order:
        archive.file(f"lib/modules/{path.name}", path.read_bytes())
    archive.file("lib/modules/order", "".join(f"{path.stem}\n" for path in order).encode())
    return gzip.compress(archive.finish(), compresslevel=9, mtime=0)


def build(directory: pathlib.Path, cache: pathlib.Path = CACHE) -> Guest:
    """The guest's kernel, ramdisk and disk, written in ``directory`` (made if missing).

    The packages are unpacked with ``dpkg-deb -x`` in a temporary directory
    under ``directory`` (about 110 MB, gone on return): nothing is installed.
    """
    kernel_deb, busybox_deb = download(cache)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".unpacked-") as unpacked:
        root = pathlib.Path(unpacked)
        for deb in (kernel_deb, busybox_deb):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)
        guest = Guest(directory / "vmlinuz", directory / "initrd.img", directory / "disk.raw")
        shutil.copyfile(root / "boot" / f"vmlinuz-{KERNEL_ABI}", guest.kernel)
        guest.ramdisk.write_bytes(_initramfs(root))
    with guest.disk.open("wb") as disk:
        disk.truncate(DISK_SIZE)
    return guest


# -- booting it here --------------------------------------------------------------------


def _qemu() -> str:
    """QEMU's x86 system emulator, Debian's at the sandbox's pin, installed if it is not."""
    found = shutil.which("qemu-system-x86_64")
    if found is None:
        from openstack_charms.sandbox.packages import ensure_debian

        ensure_debian(["qemu-system-x86"])
        found = shutil.which("qemu-system-x86_64")
    if found is None:
        raise FileNotFoundError("qemu-system-x86_64, even after installing qemu-system-x86")
    return found


def boot_check(
    guest: Guest,
    timeout: float = 60,
    *,
    until: str = MARKER,
    nic: bool = False,
    append: str = "console=ttyS0",
) -> str:
    """The serial console's output of ``guest`` booted directly by QEMU, up to and with ``until``.

    This is the guest as nova boots it (direct kernel boot, the disk as a
    virtio disk), without nova: it proves the images before a test hands them
    to glance. TCG only: /dev/kvm here is a hypervisor that stock kernels hang
    in. ``nic`` adds a virtio NIC on QEMU's user network, whose built-in DHCP
    server lets ``until=NETWORK_DONE`` see a lease. QEMU is killed on return;
    TimeoutError (with the output so far) if ``until`` is not printed in time.
    """
    argv = [_qemu(), "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot"]
    argv += ["-kernel", str(guest.kernel), "-initrd", str(guest.ramdisk), "-append", append]
    argv += ["-drive", f"file={guest.disk},format=raw,if=virtio"]
    # no option ROM: the NIC's (iPXE's, a package of its own) is for network boot, not needed here
    if nic:
        argv += ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,romfile="]
    else:
        argv += ["-nic", "none"]
    output = bytearray()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while until.encode() not in output:
                left = deadline - time.monotonic()
                if left <= 0:
                    text = output.decode(errors="replace")
                    raise TimeoutError(
                        f"{until!r} not on the guest's console after {timeout} s:\n{text[-3000:]}"
                    )
                if not selector.select(left):
                    continue
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    text = output.decode(errors="replace")
                    raise RuntimeError(f"QEMU exited ({process.wait()}) before {until!r}:\n{text[-3000:]}")
                output += chunk
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    return output.decode(errors="replace")
