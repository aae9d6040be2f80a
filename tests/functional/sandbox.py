"""Run a command in a private network namespace that still reaches MariaDB and RabbitMQ.

    python tests/functional/sandbox.py COMMAND [ARG ...]

The services the functional tests start bind where the charms tell them to
(all interfaces, as in a pod). Inside a network namespace of their own every
port they open stays private to the test run, and nothing can clash with what
runs on the machine. The namespace has loopback and a bridge, BRIDGE, with
GATEWAY on NETWORK (198.18.0.0/15, reserved for benchmarks: never a real
network's), where the harness plugs each unit's own network namespace. The
namespace reaches the machine's MariaDB through its unix socket and RabbitMQ
through a unix-socket bridge this script keeps in the machine's namespace, so
that port 3306 and 5672 of 127.0.0.1 and of GATEWAY inside mean the real
servers. Commands that must run in the machine's namespace (rabbitmqctl,
apt-get) use ``nsenter`` with SANDBOX_HOST_PID.

Needs root (CI and the developers' machines run as root) and util-linux's
``unshare``; exits with the command's exit code.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable

LOCK = pathlib.Path("/var/tmp/openstack-charm-collection/functional.lock")
MARIADB_SOCKET = os.environ.get("MARIADB_SOCKET", "/run/mysqld/mysqld.sock")
RABBITMQ = ("127.0.0.1", 5672)
#: the units' network: the sandbox's side of the bridge is the gateway, the units and
#: the ingress frontends take the addresses after it (the harness hands them out)
NETWORK = "198.18.0.0/15"
GATEWAY = "198.18.0.1"
BRIDGE = "units0"

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


def _serve_forever(servers: list[Callable[[], Awaitable[asyncio.Server]]]) -> threading.Event:
    """Start the servers on an event loop in a daemon thread; return once they listen."""
    ready = threading.Event()

    async def main() -> None:
        for start in servers:
            await start()
        ready.set()
        await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    if not ready.wait(10):
        sys.exit("sandbox: the forwarders did not start")
    return ready


def host_side(command: list[str]) -> int:
    """Bridge RabbitMQ to a unix socket, then run ourselves again in a new network namespace."""
    if os.geteuid() != 0:
        sys.exit("sandbox: the functional tests run services as their own users and need root")
    # the databases and broker users have fixed names on the machine's MariaDB and RabbitMQ: one run at a time
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    lock = LOCK.open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("sandbox: another functional run holds the machine; waiting for it", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    with tempfile.TemporaryDirectory(prefix="openstack-sandbox-") as tmp:
        bridge = str(pathlib.Path(tmp) / "amqp.sock")
        _serve_forever(
            [
                lambda: asyncio.start_unix_server(
                    _forwarder(lambda: asyncio.open_connection(*RABBITMQ)), path=bridge
                )
            ]
        )
        env = dict(
            os.environ, OPENSTACK_SANDBOX="1", SANDBOX_AMQP_SOCKET=bridge, SANDBOX_HOST_PID=str(os.getpid())
        )
        return subprocess.call(["unshare", "--net", sys.executable, __file__, *command], env=env)


def inside(command: list[str]) -> int:
    """Bring up loopback and the units' bridge, forward 3306 and 5672 to the real servers, run the command."""
    prefix = NETWORK.split("/")[1]
    for argv in (
        ("link", "set", "lo", "up"),
        ("link", "add", BRIDGE, "type", "bridge"),
        ("addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE),
        ("link", "set", BRIDGE, "up"),
    ):
        subprocess.run(["ip", *argv], check=True)
    bridge = os.environ["SANDBOX_AMQP_SOCKET"]
    # loopback for the tests' own clients, the gateway for the units
    hosts = ["127.0.0.1", GATEWAY]
    _serve_forever(
        [
            lambda: asyncio.start_server(
                _forwarder(lambda: asyncio.open_unix_connection(MARIADB_SOCKET)), hosts, 3306
            ),
            lambda: asyncio.start_server(
                _forwarder(lambda: asyncio.open_unix_connection(bridge)), hosts, 5672
            ),
        ]
    )
    return subprocess.call(command)


def main() -> None:
    """Entry point."""
    command = sys.argv[1:]
    if not command:
        sys.exit(__doc__)
    sys.exit(inside(command) if os.environ.get("OPENSTACK_SANDBOX") == "1" else host_side(command))


if __name__ == "__main__":
    main()
