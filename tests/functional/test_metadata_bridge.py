"""The hypervisor's metadata bridge under real HAProxy: nova's path prefix reaches nova, headers intact.

Behind traefik nova's metadata URL has a path (``http://host/<model>-nova-metadata``),
which the OVN metadata agent cannot name. The openstack-hypervisor charm's
:meth:`Metadata.bridge` configuration is run here by Debian's haproxy (the
same binary the agent depends on) against a small HTTP server standing in for
nova's ingress; what that server receives is what nova would. The cloud's own
guests exercise the bridge without a prefix (test_nova.py).
"""

from __future__ import annotations

import http.server
import importlib.util
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from openstack_charms.testing import REPO


def hypervisor_charm() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "hypervisor_charm", REPO / "charms" / "openstack-hypervisor" / "src" / "charm.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # its dataclasses look their module up while being defined
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nova(http.server.BaseHTTPRequestHandler):
    """Answers every GET, noting what it was asked: the path and the headers (names in lower case)."""

    seen: list[tuple[str, dict[str, str]]] = []

    def do_GET(self) -> None:
        Nova.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        body = b'{"uuid": "from-nova"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def nova() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Nova)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Nova.seen.clear()
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.usefixtures("haproxy")
def test_the_bridge_puts_novas_prefix_before_a_guests_path(tmp_path: pathlib.Path, nova: int) -> None:
    charm = hypervisor_charm()

    class Context:
        metadata_url = f"http://127.0.0.1:{nova}/openstack-nova-metadata/"
        metadata_proxy_shared_secret = "s"

    metadata = charm.metadata_of(Context())
    assert isinstance(metadata, charm.Metadata), metadata
    port = free_port()
    text = metadata.bridge(charm.SYSTEM_CAS)
    config = tmp_path / "bridge.cfg"
    # the charm's config, on a free port instead of 8775
    config.write_text(text.replace(f"bind 127.0.0.1:{charm.BRIDGE_PORT}\n", f"bind 127.0.0.1:{port}\n"))
    checked = subprocess.run(["/usr/sbin/haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    proxy = subprocess.Popen(["/usr/sbin/haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the bridge never listened"
                time.sleep(0.05)
        # what the OVN metadata agent sends: the guest's path, and headers nova checks the signature of
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/openstack/latest/meta_data.json?x=1",
            headers={"X-Instance-ID": "i-1", "X-Instance-ID-Signature": "sig", "X-Forwarded-For": "10.0.0.5"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.read() == b'{"uuid": "from-nova"}'
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
    ((path, headers),) = Nova.seen
    assert path == "/openstack-nova-metadata/openstack/latest/meta_data.json?x=1"
    # header names are case-insensitive (HAProxy sends them in lower case)
    assert headers["host"] == f"127.0.0.1:{nova}"
    assert (headers["x-instance-id"], headers["x-instance-id-signature"]) == ("i-1", "sig")
    assert headers["x-forwarded-for"] == "10.0.0.5"
