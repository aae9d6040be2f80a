"""``python -m openstack_charms.sandbox``: deploy a bundle on this machine without Juju.

    up [BUNDLE] [--overlay FILE ...] [--seed N]   deploy (default bundles/openstack.yaml), wait until active
    status                                        every unit: workload status, message, address
    run UNIT ACTION [KEY=VALUE ...]               run a charm action, print its results
    exec UNIT CONTAINER -- COMMAND ...            run a command in a unit's container, as root
    add-unit APP                                  one more unit of APP (juju add-unit), then the statuses
    remove-unit UNIT                              remove a unit (juju remove-unit), then the statuses
    down                                          stop everything, remove every file, database, user, vhost

``--state DIR`` (default ``$SANDBOX_STATE`` or ``./.sandbox``) holds everything
the sandbox makes. Needs root, MariaDB (root, no password, on its socket) and
RabbitMQ (guest, 127.0.0.1:5672); it takes no port on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..testing import REPO
from . import controller
from .cloud import MACHINE_BUNDLE, MACHINE_OVERLAYS, BundleError, read_bundle
from .containers import MARKER
from .network import MARIADB_SOCKET, RABBITMQ

DEFAULT_VENV = "/var/tmp/openstack-charm-collection/openstack-2026.1"
MARIADB_START = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
RABBITMQ_START = "rabbitmq-server -detached"


class Refused(SystemExit):
    """The sandbox will not go on; the message says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(f"sandbox: {message}")


def _venv() -> pathlib.Path:
    return pathlib.Path(os.environ.get("OPENSTACK_VENV") or DEFAULT_VENV)


# -- up -----------------------------------------------------------------------------


def preflight(state: pathlib.Path, venv: pathlib.Path) -> None:
    """Refuse clearly what would fail later: not root, no MariaDB or RabbitMQ, no release, a sandbox up."""
    if os.geteuid() != 0:
        raise Refused(
            "needs root: each unit runs in namespaces of its own and its services as their own users"
        )
    pid = controller.controller_pid(state)
    if pid is not None:
        raise Refused(f"a sandbox is already up in {state} (controller {pid}): `down` first")
    if state.exists() and any(state.iterdir()):
        raise Refused(f"{state} holds what an earlier sandbox left: `down` removes it")
    done = subprocess.run(
        ["mariadb", f"--socket={MARIADB_SOCKET}", "-uroot", "-N", "-e", "SELECT 1"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise Refused(
            f"MariaDB is not reachable as root on {MARIADB_SOCKET} ({done.stderr.strip()}); start it with:"
            f" {MARIADB_START}"
        )
    try:
        socket.create_connection(RABBITMQ, timeout=5).close()
    except OSError as e:
        raise Refused(
            f"RabbitMQ is not reachable on {RABBITMQ[0]}:{RABBITMQ[1]} ({e}); start it with: {RABBITMQ_START}"
        ) from None
    if not (venv / "bin" / "keystone-manage").exists():
        raise Refused(
            f"no OpenStack release in {venv}: `tox -e sandbox` installs it"
            f" (or: python tests/functional/install_openstack.py {venv})"
        )


def up(
    state: pathlib.Path,
    bundle: pathlib.Path,
    overlays: Sequence[pathlib.Path],
    seed: int,
    timeout: float,
    machines: pathlib.Path | None = None,
    machine_overlays: Sequence[pathlib.Path] = (),
) -> int:
    """Start the controller, print its progress, then how to use the cloud."""
    venv = _venv()
    preflight(state, venv)
    try:
        layout = read_bundle(bundle, overlays, machines, machine_overlays)
    except BundleError as e:
        raise Refused(str(e)) from None
    from .packages import DEBIAN_PINS, ensure_debian

    ensure_debian(layout.packages())
    state.mkdir(parents=True, exist_ok=True)
    (state / "tmp").mkdir(exist_ok=True)
    units = sum(n for app, n in layout.scale.items() if app in layout.apps)
    deployed = [bundle, *overlays, *([machines] if machines else []), *machine_overlays]
    print(
        f"sandbox: deploying {' + '.join(p.name for p in deployed)}:"
        f" {len(layout.apps)} applications of ours ({units} units), {len(layout.stand_ins)} stood in"
    )
    for limit in layout.limits():
        print(f"  stand-in: {limit}")
    debian = ", ".join(f"{p} {DEBIAN_PINS[p]}" for p in sorted(layout.debian))
    print(
        f"  images: none pulled; the OpenStack services from {venv}"
        + (f", Debian {debian}" if debian else "")
    )
    argv = [
        sys.executable,
        "-m",
        "openstack_charms.sandbox",
        "--state",
        str(state),
        "controller",
        str(bundle),
    ]
    argv += [a for o in overlays for a in ("--overlay", str(o))] + ["--seed", str(seed)]
    argv += ["--machines", str(machines)] if machines else ["--no-machines"]
    argv += [a for o in machine_overlays for a in ("--machine-overlay", str(o))]
    # the charms' scratch files (ops.testing's charm roots) go into the state, which down removes
    env = dict(os.environ, TMPDIR=str(state / "tmp"), PYTHONPATH=os.pathsep.join(sys.path))
    with (state / "controller.log").open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    done = _follow(state / controller.EVENTS, process, timeout)
    if done is None:
        return 1
    return _report(state, done)


def _follow(events: pathlib.Path, process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any] | None:
    """Print the controller's progress until it says it is done (None: it died or took too long)."""
    deadline = time.monotonic() + timeout
    offset = 0
    while True:
        if events.exists():
            with events.open() as f:
                f.seek(offset)
                for line in f:
                    if not line.endswith("\n"):
                        break
                    offset += len(line.encode())
                    record = json.loads(line)
                    if record["kind"] == "done":
                        return record
                    print(f"  {record['text']}", flush=True)
        if process.poll() is not None:
            print(f"sandbox: the controller exited ({process.returncode}); its log:", file=sys.stderr)
            log = events.parent / "controller.log"
            print(log.read_text(errors="replace")[-4000:] if log.exists() else "(none)", file=sys.stderr)
            return None
        if time.monotonic() > deadline:
            print(f"sandbox: not done after {timeout:.0f} s; `status` shows where it is", file=sys.stderr)
            return None
        time.sleep(0.3)


def _report(state: pathlib.Path, done: dict[str, Any]) -> int:
    hooks = done.get("hooks") or {}
    if hooks:
        print("hooks run: " + ", ".join(f"{app} {n}" for app, n in sorted(hooks.items())))
    if not done["ok"]:
        print(f"sandbox: not every unit is active: {done['reason']}", file=sys.stderr)
        for details in (done.get("units") or {}).values():
            print(details, file=sys.stderr)
        if done.get("trace"):
            print(done["trace"], file=sys.stderr)
        print(f"the sandbox stays up for a look (`status`); `down` removes it ({state})", file=sys.stderr)
        return 1
    print(f"every unit is active: converged in {done['converged']:.1f} s")
    _print_status(state)
    access = done.get("access") or {}
    if access:
        print(f"\nclouds.yaml: {access['clouds_yaml']}\nopenrc:      {access['openrc']}")
        print("use the cloud (the client runs in the sandbox's network):")
        print(f"  {access['openstack']} --os-cloud {controller.CLOUD_NAME} token issue")
        print(f"  {access['openstack']} --os-cloud {controller.CLOUD_NAME} catalog list")
    print("take it down: tox -e sandbox -- down")
    return 0


# -- status, run, down ---------------------------------------------------------------


def _print_status(state: pathlib.Path) -> int:
    answer = controller.ask(state, {"command": "status"})
    if not answer.get("ok"):
        print(f"sandbox: {answer.get('error')}", file=sys.stderr)
        return 1
    _print_units(answer)
    return 0


def _print_units(answer: dict[str, Any]) -> None:
    rows = [("App", "Unit", "Workload", "Address", "Message")]
    rows += [(u["app"], u["unit"], u["status"], u["address"], u["message"]) for u in answer["units"]]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])


def _running(state: pathlib.Path) -> None:
    if controller.controller_pid(state) is None:
        raise Refused(
            f"no sandbox is up in {state}"
            + (" (`down` removes what is left there)" if state.exists() else "")
        )


def status(state: pathlib.Path) -> int:
    """Print every unit's status, as ``juju status`` lists them."""
    _running(state)
    return _print_status(state)


def run_action(state: pathlib.Path, unit: str, action: str, params: Sequence[str]) -> int:
    """Run a charm action (``KEY=VALUE`` parameters, values read as JSON where they parse); its results."""
    _running(state)
    values: dict[str, Any] = {}
    for param in params:
        key, sep, value = param.partition("=")
        if not sep:
            raise Refused(f"action parameters are KEY=VALUE, not {param!r}")
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value
    answer = controller.ask(state, {"command": "run", "unit": unit, "action": action, "params": values})
    if not answer.get("ok"):
        print(f"sandbox: {answer.get('error')}", file=sys.stderr)
        return 1
    for key, value in sorted(answer["results"].items()):
        text = str(value)
        if "\n" in text:
            print(f"{key}: |")
            print("\n".join(f"  {line}" for line in text.rstrip("\n").splitlines()))
        else:
            print(f"{key}: {text}")
    return 0


def execute(state: pathlib.Path, unit: str, container: str, argv: Sequence[str]) -> int:
    """A command in a unit's container (``juju ssh --container``); its output, and its exit code."""
    _running(state)
    if not argv:
        raise Refused("exec needs a command: exec UNIT CONTAINER -- COMMAND ...")
    answer = controller.ask(
        state, {"command": "exec", "unit": unit, "container": container, "argv": list(argv)}
    )
    if not answer.get("ok"):
        print(f"sandbox: {answer.get('error')}", file=sys.stderr)
        return 1
    sys.stdout.write(answer["stdout"])
    sys.stderr.write(answer["stderr"])
    return int(answer["code"])


def scale(state: pathlib.Path, request: dict[str, Any]) -> int:
    """Add or remove a unit (``juju add-unit`` / ``remove-unit``); every unit's status once settled."""
    _running(state)
    answer = controller.ask(state, request)
    if answer.get("unit"):
        print(f"added {answer['unit']}")
    if answer.get("units"):
        _print_units(answer)
    if not answer.get("ok"):
        print(f"sandbox: {answer.get('error')}", file=sys.stderr)
        for details in (answer.get("details") or {}).values():
            print(details, file=sys.stderr)
        return 1
    return 0


def _leftover_processes(state: pathlib.Path) -> list[int]:
    """Processes of this sandbox (they carry its marker), in case its controller died."""
    marker = f"{MARKER}={state / 'units'}".encode()
    found = []
    for environ in pathlib.Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def down(state: pathlib.Path) -> int:
    """Ask the controller to remove everything; then make sure, also when it had died."""
    if not state.exists():
        print(f"sandbox: nothing to remove in {state}")
        return 0
    ok = True
    pid = controller.controller_pid(state)
    if pid is not None:
        answer = controller.ask(state, {"command": "down"})
        if not answer.get("ok"):
            print(f"sandbox: {answer.get('error')}", file=sys.stderr)
            ok = False
        deadline = time.monotonic() + 30
        while pathlib.Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    for leftover in _leftover_processes(state):
        print(f"sandbox: stopping process {leftover}, left by a controller that died")
        os.kill(leftover, signal.SIGKILL)
    if (state / "made.json").exists():
        from .providers import remove

        remove(state / "made.json")
    shutil.rmtree(state, ignore_errors=True)
    if state.exists():
        print(f"sandbox: could not remove {state}", file=sys.stderr)
        ok = False
    if ok:
        print(f"sandbox: down; nothing left in {state}")
    return 0 if ok else 1


# -- the command line ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m openstack_charms.sandbox", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--state", type=pathlib.Path, default=pathlib.Path(os.environ.get("SANDBOX_STATE", ".sandbox"))
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "controller"):
        command = commands.add_parser(name, help="deploy a bundle" if name == "up" else argparse.SUPPRESS)
        command.add_argument(
            "bundle", nargs="?", type=pathlib.Path, default=REPO / "bundles" / "openstack.yaml"
        )
        command.add_argument("--overlay", type=pathlib.Path, action="append", default=[])
        command.add_argument(
            "--machines",
            type=pathlib.Path,
            default=MACHINE_BUNDLE,
            help="the machine model's bundle, consuming the bundle's offers",
        )
        command.add_argument("--no-machines", action="store_true", help="deploy no machine model")
        command.add_argument(
            "--machine-overlay",
            type=pathlib.Path,
            action="append",
            default=None,
            help="overlays of the machine bundle (default: "
            + ", ".join(str(o.relative_to(REPO)) for o in MACHINE_OVERLAYS)
            + ")",
        )
        command.add_argument("--seed", type=int, default=0, help="the order of the first hooks")
        command.add_argument("--timeout", type=float, default=1200)
    commands.add_parser("status", help="every unit's status")
    commands.add_parser("down", help="remove everything the sandbox made")
    run = commands.add_parser("run", help="run a charm action")
    run.add_argument("unit")
    run.add_argument("action")
    run.add_argument("params", nargs="*")
    execute_ = commands.add_parser("exec", help="run a command in a unit's container")
    execute_.add_argument("unit")
    execute_.add_argument("container")
    execute_.add_argument("argv", nargs=argparse.REMAINDER)
    add_unit = commands.add_parser("add-unit", help="add a unit to an application")
    add_unit.add_argument("app")
    remove_unit = commands.add_parser("remove-unit", help="remove a unit")
    remove_unit.add_argument("unit")
    args = parser.parse_args(argv)
    state = args.state.absolute()
    machines: pathlib.Path | None = None
    machine_overlays: list[pathlib.Path] = []
    if args.command in ("up", "controller") and not args.no_machines:
        machines = args.machines.absolute()
        given = args.machine_overlay
        machine_overlays = [o.absolute() for o in (given if given is not None else MACHINE_OVERLAYS)]
    if args.command == "up":
        return up(
            state,
            args.bundle.absolute(),
            [o.absolute() for o in args.overlay],
            args.seed,
            args.timeout,
            machines,
            machine_overlays,
        )
    if args.command == "controller":
        controller.run(state, _venv(), args.bundle, args.overlay, args.seed, machines, machine_overlays)
        return 0
    if args.command == "status":
        return status(state)
    if args.command == "run":
        return run_action(state, args.unit, args.action, args.params)
    if args.command == "add-unit":
        return scale(state, {"command": "add-unit", "app": args.app})
    if args.command == "remove-unit":
        return scale(state, {"command": "remove-unit", "unit": args.unit})
    if args.command == "exec":
        return execute(
            state, args.unit, args.container, args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        )
    return down(state)


if __name__ == "__main__":
    sys.exit(main())
