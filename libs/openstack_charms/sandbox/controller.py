"""The sandbox's controller: the process that keeps a deployed cloud, as Juju's controller and Pebble would.

``up`` starts it in a session of its own; it moves into the sandbox's private
network, deploys the bundle (:class:`~.cloud.Cloud`), writes each status change
and the outcome to ``events.jsonl`` (which ``up`` prints as it comes), then
stays: it answers ``status``, ``run``, ``exec``, ``add-unit``, ``remove-unit`` and
``down`` on ``control.sock`` (one JSON request, one JSON answer) and does
Pebble's work between them (services restarted, checks run, the charms told
of checks that fail or recover).

Everything it makes is in the state directory; ``down`` removes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from .cloud import Cloud, NotConverged, read_bundle
from .network import enter_private_network

PID = "controller.pid"
SOCKET = "control.sock"
EVENTS = "events.jsonl"
CLOUD_NAME = "sandbox"


class Events:
    """The controller's progress, one JSON object a line, for ``up`` to print."""

    def __init__(self, path: pathlib.Path, started: float) -> None:
        self.path = path
        self.started = started

    def write(self, kind: str, **fields: Any) -> None:
        record = {"kind": kind, "t": round(time.monotonic() - self.started, 1), **fields}
        with self.path.open("a") as out:
            out.write(json.dumps(record) + "\n")

    def line(self, text: str) -> None:
        self.write("line", text=text)


def admin_account(cloud: Cloud) -> dict[str, Any]:
    """The results of keystone's ``get-admin-account``; empty for a cloud without keystone."""
    keystone = next((app for app, charm in cloud.layout.apps.items() if charm == "keystone-k8s"), None)
    return cloud.run_action(keystone, "get-admin-account") if keystone else {}


def access_files(
    state: pathlib.Path, venv: pathlib.Path, cloud: Cloud, account: Mapping[str, Any]
) -> dict[str, str]:
    """clouds.yaml, openrc and an ``openstack`` that enters the sandbox's network, from ``account``."""
    if not account:
        return {}
    auth_url = str(account["public-endpoint"])
    cacert = str(cloud.ca.cert_path) if cloud.ca is not None and auth_url.startswith("https:") else ""
    lines = [
        "clouds:",
        f"  {CLOUD_NAME}:",
        "    auth:",
        f"      auth_url: {auth_url}",
        f"      username: {account['username']}",
        f"      password: {account['password']}",
        f"      user_domain_name: {account['user-domain-name']}",
        f"      project_name: {account['project-name']}",
        f"      project_domain_name: {account['project-domain-name']}",
        f"    region_name: {account['region']}",
        "    interface: public",
        "    identity_api_version: 3",
    ]
    if cacert:
        lines.append(f"    cacert: {cacert}")
    clouds_yaml = state / "clouds.yaml"
    clouds_yaml.touch(mode=0o600)
    clouds_yaml.write_text("\n".join(lines) + "\n")
    openrc = state / "openrc"
    openrc.touch(mode=0o600)
    openrc.write_text(str(account["openrc"]) + (f"export OS_CACERT={cacert}\n" if cacert else ""))
    client = state / "bin" / "openstack"
    client.parent.mkdir(exist_ok=True)
    # the cloud's addresses exist only in the sandbox's network namespace: the client runs there
    client.write_text(
        "#!/bin/sh\n"
        "# the OpenStack client of the sandbox's release, run in the sandbox's network\n"
        f'export OS_CLIENT_CONFIG_FILE="${{OS_CLIENT_CONFIG_FILE:-{clouds_yaml}}}"\n'
        f'exec nsenter --net=/proc/{os.getpid()}/ns/net -- {venv}/bin/openstack "$@"\n'
    )
    client.chmod(0o755)
    return {"clouds_yaml": str(clouds_yaml), "openrc": str(openrc), "openstack": str(client)}


def run(
    state: pathlib.Path,
    venv: pathlib.Path,
    bundle: pathlib.Path,
    overlays: Sequence[pathlib.Path],
    seed: int,
    machines: pathlib.Path | None = None,
    machine_overlays: Sequence[pathlib.Path] = (),
) -> None:
    """Deploy, report, then serve until ``down``."""
    started = time.monotonic()
    (state / PID).write_text(str(os.getpid()))
    events = Events(state / EVENTS, started)
    try:
        enter_private_network()
        layout = read_bundle(bundle, overlays, machines, machine_overlays)
        cloud = Cloud(state, venv, layout, report=events.line, seed=seed)
    except Exception as e:
        events.write(
            "done", ok=False, reason=f"{type(e).__name__}: {e}", units={}, trace=traceback.format_exc()
        )
        raise
    try:
        cloud.up()
        converged = cloud.elapsed()
        access = access_files(state, venv, cloud, admin_account(cloud))
        events.write(
            "done", ok=True, converged=round(converged, 1), hooks=cloud.hooks_per_app(), access=access
        )
    except NotConverged as e:
        events.write("done", ok=False, reason=e.reason, units=e.units, hooks=cloud.hooks_per_app())
    except Exception as e:
        events.write(
            "done", ok=False, reason=f"{type(e).__name__}: {e}", units={}, trace=traceback.format_exc()
        )
    serve(state, cloud)


def serve(state: pathlib.Path, cloud: Cloud) -> None:
    """Answer the CLI on the control socket; do Pebble's work in between."""
    path = state / SOCKET
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(8)
    server.settimeout(1.0)
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            conn = None
        if conn is not None:
            with conn:
                request = _receive(conn)
                if request.get("command") == "down":
                    answer = _down(cloud)
                    _send(conn, answer)
                    server.close()
                    shutil.rmtree(state, ignore_errors=True)
                    sys.exit(0 if answer["ok"] else 1)
                _send(conn, _answer(cloud, request))
        try:
            cloud.supervise()
        except Exception:
            traceback.print_exc()


def _answer(cloud: Cloud, request: Mapping[str, Any]) -> dict[str, Any]:
    command = request.get("command")
    try:
        if command == "status":
            return {"ok": True, "units": [dataclasses.asdict(row) for row in cloud.statuses()]}
        if command == "run":
            results = cloud.run_action(
                str(request["unit"]), str(request["action"]), request.get("params") or {}
            )
            return {"ok": True, "results": results}
        if command == "add-unit":
            unit = cloud.add_unit(str(request["app"]))
            return {"ok": True, "unit": unit, "units": [dataclasses.asdict(row) for row in cloud.statuses()]}
        if command == "remove-unit":
            cloud.remove_unit(str(request["unit"]))
            return {"ok": True, "units": [dataclasses.asdict(row) for row in cloud.statuses()]}
        if command == "exec":
            code, out, err = cloud.execute(
                str(request["unit"]), str(request["container"]), [str(a) for a in request["argv"]]
            )
            return {"ok": True, "code": code, "stdout": out, "stderr": err}
    except NotConverged as e:
        return {
            "ok": False,
            "error": f"not every unit is active: {e.reason}",
            "units": [dataclasses.asdict(row) for row in cloud.statuses()],
            "details": e.units,
        }
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {"ok": False, "error": f"unknown command {command!r}"}


def _down(cloud: Cloud) -> dict[str, Any]:
    try:
        cloud.down()
    except Exception as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True}


def _receive(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    try:
        request = json.loads(data or b"{}")
    except ValueError:
        return {}
    return request if isinstance(request, dict) else {}


def _send(conn: socket.socket, answer: Mapping[str, Any]) -> None:
    conn.sendall(json.dumps(answer, default=str).encode() + b"\n")


def ask(state: pathlib.Path, request: Mapping[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Send a request to the controller of ``state`` and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(state / SOCKET))
        conn.sendall(json.dumps(request).encode() + b"\n")
        answer = _receive(conn)
    return answer


def controller_pid(state: pathlib.Path) -> int | None:
    """The controller's pid, if one is running for ``state``."""
    try:
        pid = int((state / PID).read_text())
    except (OSError, ValueError):
        return None
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"openstack_charms.sandbox" in cmdline and b"controller" in cmdline else None
