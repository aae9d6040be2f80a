"""The sandbox's networks: a private network namespace for the cloud, one more per unit.

:func:`enter_private_network` moves the calling process (its main thread and
everything it starts afterwards) into a network namespace of its own, where a
bridge, BRIDGE, has GATEWAY on NETWORK (198.18.0.0/15, reserved for
benchmarks: never a real network's). Every port the cloud opens stays there:
nothing is bound on the machine. Inside, 3306 and 5672 of 127.0.0.1 and of
GATEWAY reach the machine's MariaDB (through its unix socket) and RabbitMQ
(through a thread left in the machine's namespace). Commands that must run in
the machine's namespace (rabbitmqctl, apt-get) go through :func:`host_command`.

Each unit has a :class:`UnitNetwork`: a namespace kept by a holder process (a
pod's pause container), its ``eth0`` at the unit's own address on the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import itertools
import os
import pathlib
import shlex
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator

NETWORK = "198.18.0.0/15"
GATEWAY = "198.18.0.1"
BRIDGE = "units0"
MARIADB_SOCKET = os.environ.get("MARIADB_SOCKET", "/run/mysqld/mysqld.sock")
RABBITMQ = ("127.0.0.1", 5672)

_NETWORK = ipaddress.ip_network(NETWORK)
#: units take 198.18.1.1 on, the ingress frontends 198.18.0.2 on; counted per process, so
#: that a test's own units never take the addresses of the cloud it runs beside
_UNIT_NUMBERS = itertools.count(1)
_FRONTEND_NUMBERS = itertools.count(2)
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

#: the machine's network namespace, as a path any process can enter (set by enter_private_network)
_host_namespace: str | None = None


def _check(result: int) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, _CLONE_NEWNET))


def processes_in(kind: str, inode: int) -> list[int]:
    """The processes any of whose threads are in the namespace of ``kind`` (net, mnt) with ``inode``."""
    found = set()
    for ns in pathlib.Path("/proc").glob(f"[0-9]*/task/*/ns/{kind}"):
        with contextlib.suppress(OSError):
            if os.stat(ns).st_ino == inode:
                found.add(int(ns.parts[2]))
    return sorted(found)


def host_command(*argv: str) -> list[str]:
    """``argv`` run in the machine's network namespace (where rabbitmqctl reaches its node)."""
    return ["nsenter", f"--net={_host_namespace}", "--", *argv] if _host_namespace else list(argv)


def frontend_address() -> str:
    """A new address on the bridge for an ingress frontend (not yet added to it)."""
    return str(_NETWORK.network_address + next(_FRONTEND_NUMBERS))


# -- the private namespace ------------------------------------------------------------

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def _forwarder(
    open_upstream: Opener,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await open_upstream()
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


def _listener(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def enter_private_network() -> None:
    """Move this process into a new network namespace with the bridge and the forwarders.

    The forwarders' event loop runs in a thread started first, so the
    connections it opens to RabbitMQ are made from the machine's namespace; its
    listening sockets are made after the move, so they are the private ones.
    """
    global _host_namespace
    if os.geteuid() != 0:
        raise PermissionError(
            "the sandbox makes network namespaces and runs services as their users: run as root"
        )
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="sandbox-forwarders", daemon=True).start()
    host_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    _check(_libc.unshare(_CLONE_NEWNET))
    _host_namespace = f"/proc/{os.getpid()}/fd/{host_fd}"
    prefix = NETWORK.split("/")[1]
    for argv in (
        ("link", "set", "lo", "up"),
        ("link", "add", BRIDGE, "type", "bridge"),
        ("addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE),
        ("link", "set", BRIDGE, "up"),
    ):
        ip(*argv)
    upstreams: dict[int, Opener] = {
        3306: lambda: asyncio.open_unix_connection(MARIADB_SOCKET),
        5672: lambda: asyncio.open_connection(*RABBITMQ),
    }
    for port, opener in upstreams.items():
        # loopback for the operator's own clients, the gateway for the units
        for host in ("127.0.0.1", GATEWAY):
            sock = _listener(host, port)
            start = asyncio.start_server(_forwarder(opener), sock=sock)
            asyncio.run_coroutine_threadsafe(start, loop).result(10)


def ip(*argv: str, netns_of: int | None = None, netns: str | None = None) -> None:
    """Run ``ip`` (in ``netns_of``'s network namespace, or the namespace file ``netns``); raise its error."""
    where = netns or (f"/proc/{netns_of}/ns/net" if netns_of else None)
    prefix = ["nsenter", f"--net={where}"] if where else []
    done = subprocess.run([*prefix, "ip", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {shlex.join(argv)}: {done.stderr.strip()}")


def has_link(name: str) -> bool:
    """Whether this namespace has a network interface ``name``."""
    # /sys/class/net is the machine's (sysfs was mounted there): ask the kernel in this namespace
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def network_of(pid: int) -> Iterator[None]:
    """Run the calling thread in ``pid``'s network namespace: its sockets are that namespace's.

    A network namespace is a thread's own (unlike a mount namespace), so the
    sandbox can make a request as a unit's pod would, ``localhost`` included,
    and come back.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


class UnitNetwork:
    """A unit's network namespace, shared by its containers as a pod's: its own address on the bridge.

    A holder process (``unshare --net``, then sleep) keeps the namespace, as a
    pod's pause container does; one end of a veth pair is the unit's ``eth0``,
    the other is plugged into the bridge, where the gateway (MariaDB,
    RabbitMQ) and the ingress frontends are.
    """

    def __init__(self, unit: str) -> None:
        self.unit = unit
        number = next(_UNIT_NUMBERS)
        self.address = str(_NETWORK.network_address + 256 + number)
        self.link = f"unit{number}"
        self.holder = subprocess.Popen(
            [
                "setpriv",
                "--pdeathsig",
                "KILL",
                "unshare",
                "--net",
                "sh",
                "-c",
                "echo ready; exec sleep infinity",
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.holder.stdout is not None
        try:
            if self.holder.stdout.readline() != b"ready\n":
                raise RuntimeError(f"network of {unit}: its holder did not start")
            pid = self.holder.pid
            self.inode = os.stat(self.namespace).st_ino
            ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", str(pid))
            ip("link", "set", self.link, "master", BRIDGE, "up")
            ip("link", "set", "lo", "up", netns_of=pid)
            ip("addr", "add", f"{self.address}/{_NETWORK.prefixlen}", "dev", "eth0", netns_of=pid)
            ip("link", "set", "eth0", "up", netns_of=pid)
        except BaseException:
            self.close()
            raise

    @property
    def namespace(self) -> str:
        """The namespace's path, for ``nsenter --net=``."""
        return f"/proc/{self.holder.pid}/ns/net"

    def entered(self) -> contextlib.AbstractContextManager[None]:
        """The calling thread in this unit's network (see :func:`network_of`)."""
        return network_of(self.holder.pid)

    def processes(self) -> list[int]:
        """The processes (any of their threads) still in this unit's network namespace."""
        return processes_in("net", self.inode)

    def close(self) -> None:
        """Unplug the unit and kill its holder: the namespace goes once nothing holds it."""
        # the veth is deleted, not left to the namespace's end: the closed connections of the
        # unit's killed services (TCP sockets without a process) hold the namespace until they time out
        with contextlib.suppress(RuntimeError):
            ip("link", "del", self.link)
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(10)
        if self.holder.stdout is not None:
            self.holder.stdout.close()
