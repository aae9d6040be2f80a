"""Measure what one hook costs each charm: hook-tool calls, Pebble calls, Python time.

    python tools/bench_hooks.py [charm ...]

For each charm, a complete state (every relation ready, leader) is run through
config-changed twice in ops.testing: the first run bootstraps, the second is
the steady state a cloud spends most hooks in. Calls are counted where ops.testing
stands in for Juju's hook tools and for Pebble, so each count is a process
(hook tool) or an HTTP round trip (Pebble) in a real deployment. Python cost is
measured in a fresh interpreter: the cold import of the charm module, plus the
time spent in the charm's own code (construction, event handlers, collect-status).
For keystone, a steady hook is also measured with 100 applications related on
identity-service: it should cost what it costs with one. Calls to the Kubernetes
API (ovn-relay's LoadBalancer service) go to the sandbox's stand-in and are
counted too ("kubernetes API" in the detail, when there are any).
"""

from __future__ import annotations

import collections
import contextlib
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "libs"))

HOOK_TOOLS = {
    "relation_get": "relation-get",
    "relation_set": "relation-set",
    "relation_ids": "relation-ids",
    "relation_list": "relation-list",
    "relation_remote_app_name": "relation-list --app",
    "config_get": "config-get",
    "is_leader": "is-leader",
    "status_get": "status-get",
    "status_set": "status-set",
    "juju_log": "juju-log",
    "network_get": "network-get",
    "secret_add": "secret-add",
    "secret_get": "secret-get",
    "secret_info_get": "secret-info-get",
    "secret_set": "secret-set",
    "secret_grant": "secret-grant",
    "secret_revoke": "secret-revoke",
    "secret_remove": "secret-remove",
    "application_version_set": "application-version-set",
    "action_get": "action-get",
    "action_set": "action-set",
    "storage_list": "storage-list",
    "storage_get": "storage-get",
    "planned_units": "goal-state",
    "resource_get": "resource-get",
    "open_port": "open-port",
    "close_port": "close-port",
    "opened_ports": "opened-ports",
}
#: ops.testing's own warning about reusing a container filesystem: not the charm's
SCENARIO_NOISE = "has a non-empty filesystem"
PEBBLE = (
    "get_system_info",
    "get_plan",
    "add_layer",
    "replan_services",
    "start_services",
    "stop_services",
    "restart_services",
    "get_services",
    "get_checks",
    "push",
    "pull",
    "list_files",
    "make_dir",
    "remove_path",
    "exec",
)


COUNTS: collections.Counter[str] = collections.Counter()
#: the Kubernetes API the charms reach (ovn-relay's LoadBalancer service): the sandbox's stand-in
KUBERNETES: Any = None
#: what keeps it in place for the whole run (a context manager left open)
_KUBERNETES_SEAM = contextlib.ExitStack()


def install_counters() -> None:
    """Count, from now on, every hook-tool and Pebble call ops.testing stands in for."""
    from scenario import mocking

    if getattr(mocking, "_bench_counting", False):
        return
    mocking._bench_counting = True  # type: ignore[attr-defined]
    depth = [0]

    def wrap(cls: type, name: str, label: str) -> None:
        original = getattr(cls, name)

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            # only the outermost call is a process: ops.testing's stand-ins call each other
            if depth[0] == 0 and not (name == "juju_log" and SCENARIO_NOISE in str(args[1:2])):
                COUNTS[label] += 1
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        setattr(cls, name, counted)

    for method, tool in HOOK_TOOLS.items():
        if hasattr(mocking._MockModelBackend, method) and method != "is_leader":
            wrap(mocking._MockModelBackend, method, f"tool:{tool}")
    # ops caches is-leader for 30 s (a lease); ops.testing does not, so count it as ops would
    original_is_leader = mocking._MockModelBackend.is_leader

    def is_leader(self: Any) -> bool:
        if "tool:is-leader" not in COUNTS:
            COUNTS["tool:is-leader"] += 1
        return original_is_leader(self)

    mocking._MockModelBackend.is_leader = is_leader  # type: ignore[method-assign]
    for method in PEBBLE:
        if hasattr(mocking._MockPebbleClient, method):
            wrap(mocking._MockPebbleClient, method, f"pebble:{method}")


def measure(run: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    """The calls one hook makes, and its output state (which ``run`` returns)."""
    install_counters()
    _fake_kubernetes()
    COUNTS.clear()
    before = len(KUBERNETES.calls)
    state = run()
    tools = {k[5:]: v for k, v in COUNTS.items() if k.startswith("tool:")}
    pebble = {k[7:]: v for k, v in COUNTS.items() if k.startswith("pebble:")}
    kubernetes = len(KUBERNETES.calls) - before
    counted = {
        "status": str(state.unit_status),
        "hook_tools": sum(tools.values()),
        "pebble": sum(pebble.values()),
        "detail": dict(sorted(tools.items()))
        | {f"pebble {k}": v for k, v in sorted(pebble.items())}
        | ({"kubernetes API": kubernetes} if kubernetes else {}),
    }
    return counted, state


def count_calls(charm: str) -> dict[str, Any]:
    """Hook-tool and Pebble calls of a bootstrap run and of a steady-state run, the charm alone."""
    from openstack_charms.testing import charm_context, complete_state
    from ops import testing

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as root:
        ctx = charm_context(charm)
        state = complete_state(charm, pathlib.Path(root), execs=[testing.Exec([], stdout="")])
        for run in ("bootstrap", "steady"):
            results[run], state = measure(lambda state=state: ctx.run(ctx.on.config_changed(), state))
    return results


def _fake_kubernetes() -> None:
    # Kubernetes' API goes to the sandbox's stand-in (no HAProxy), which counts the calls: a
    # charm's steady hook should make none
    global KUBERNETES
    if KUBERNETES is not None:
        return
    from openstack_charms.sandbox.kubernetes import Kubernetes, real_kubernetes

    KUBERNETES = Kubernetes(lambda: "10.27.5.1", lambda app: [])
    _KUBERNETES_SEAM.enter_context(real_kubernetes(KUBERNETES))


def _fake_keystone() -> None:
    # keystone's REST calls go to the unit tests' in-memory keystone
    for path in (REPO / "charms" / "keystone-k8s" / "src", REPO / "tests" / "unit" / "keystone"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    import keystone_api
    from fake_keystone import FakeKeystone

    keystone_api.KeystoneAPI = FakeKeystone()  # type: ignore[misc,assignment]


def glance_like_request(app: str) -> Any:
    """An identity-service relation holding the request glance-k8s publishes, from application ``app``."""
    from charms.keystone_k8s.v0 import identity_service as ids
    from ops import testing

    internal = f"http://{app}.openstack.svc:9292"
    request = ids.IdentityServiceRequest(
        service_endpoints=(
            ids.ServiceEndpoint(
                service_name=app,
                type="image",
                description="OpenStack Image",
                admin_url=internal,
                internal_url=internal,
                public_url=f"http://10.20.1.10/openstack-{app}",
            ),
        ),
        region="RegionOne",
    )
    data = {k: v for k, v in request.to_databag().items() if v is not None}
    return testing.Relation(
        "identity-service", interface="keystone", remote_app_name=app, remote_app_data=data
    )


def count_keystone_with_related(apps: int) -> dict[str, Any]:
    """Steady config-changed of a keystone leader answering ``apps`` identity-service requirers.

    Every request is answered first (the state settles), so the measured hook is one
    where no related application changed anything.
    """
    import dataclasses

    from openstack_charms.testing import charm_context, complete_state
    from ops import testing

    _fake_keystone()
    with tempfile.TemporaryDirectory() as root:
        ctx = charm_context("keystone-k8s")
        state = complete_state("keystone-k8s", pathlib.Path(root), execs=[testing.Exec([], stdout="")])
        related = [glance_like_request(f"glance{i}") for i in range(apps)]
        state = dataclasses.replace(state, relations=[*state.relations, *related])
        for _ in range(2):
            state = ctx.run(ctx.on.config_changed(), state)
        return measure(lambda: ctx.run(ctx.on.config_changed(), state))[0]


def count_in_cloud() -> dict[str, Any]:
    """Steady-state calls of each charm of bundles/openstack.yaml once the cloud has settled.

    Keystone here also serves its identity-service requirers (glance, placement),
    its REST calls going to the unit tests' in-memory keystone.
    """
    import yaml
    from openstack_charms.testing import fixture_for
    from openstack_charms.testing.model import SimulatedModel

    _fake_keystone()
    bundle = next(yaml.safe_load_all((REPO / "bundles" / "openstack.yaml").read_text()))
    apps = {
        a: pathlib.Path(s["charm"]).stem
        for a, s in bundle["applications"].items()
        if s["charm"].endswith(".charm")
    }
    with tempfile.TemporaryDirectory() as root:
        model = SimulatedModel(
            apps,
            [tuple(r) for r in bundle["relations"]],
            lambda link, _a, _u: fixture_for(link.ours.endpoint, link.interface, link.ours.app),
            pathlib.Path(root),
        )
        model.settle()
        return {app: measure(lambda app=app: model.run(app))[0] for app in apps}


def python_cost(charm: str) -> dict[str, float]:
    """Cold import and in-charm time of one steady-state config-changed, in a fresh interpreter.

    The bootstrapped state is prepared here and handed over pickled, so the
    fresh interpreter pays what a real hook pays: importing the charm module,
    then constructing the charm and handling the event (lazy imports included).
    """
    import pickle

    from openstack_charms.testing import charm_context, complete_state
    from ops import testing

    _fake_kubernetes()
    best: dict[str, float] | None = None
    with tempfile.TemporaryDirectory() as root:
        ctx = charm_context(charm)
        state = complete_state(charm, pathlib.Path(root), execs=[testing.Exec([], stdout="")])
        state = ctx.run(ctx.on.config_changed(), state)
        pickled = pathlib.Path(root) / "state.pickle"
        pickled.write_bytes(pickle.dumps(state))
        code = f"""
import json, pickle, sys, time
sys.path.insert(0, {str(REPO / "libs")!r})
sys.path.insert(0, {str(REPO / "charms" / charm / "src")!r})
t0 = time.perf_counter()
import charm as module
t_import = time.perf_counter() - t0
from openstack_charms import testing as t
cls = t.load_charm_class({charm!r})
spent = [0.0]
def timed(fn):
    def inner(*a, **k):
        s = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[0] += time.perf_counter() - s
    inner.__name__ = fn.__name__
    return inner
for name in ("__init__", "_on_event", "_on_collect_unit_status", "_on_collect_app_status"):
    setattr(cls, name, timed(getattr(cls, name)))
ctx = t.charm_context({charm!r})
state = pickle.loads(open({str(pickled)!r}, "rb").read())
out = ctx.run(ctx.on.config_changed(), state)
assert out.unit_status.name == "active", out.unit_status
print(json.dumps({{"import": t_import, "hook": spent[0]}}))
"""
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            sample = json.loads(out.stdout.strip().splitlines()[-1])
            sample["total"] = sample["import"] + sample["hook"]
            if best is None or sample["total"] < best["total"]:
                best = sample
    assert best is not None
    return best


def main() -> None:
    """Measure every charm named on the command line, or all of them (machine charms on a fake host)."""
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        return
    charms = sys.argv[1:] or sorted(p.parent.name for p in (REPO / "charms").glob("*/charmcraft.yaml"))
    start = time.perf_counter()
    ops_import = min(
        float(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import time; t=time.perf_counter(); import ops; print(time.perf_counter()-t)",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(3)
    )
    print(f"python -c 'import ops' alone: {ops_import:.3f} s")
    for charm in charms:
        calls = count_calls(charm)
        cost = python_cost(charm)
        print(f"\n{charm}")
        for run in ("bootstrap", "steady"):
            r = calls[run]
            counts = f"{r['hook_tools']:3} hook-tool calls, {r['pebble']:3} Pebble calls"
            print(f"  {run:9} {counts} -> {r['status']}")
            print(f"            {r['detail']}")
        print(f"  python: import {cost['import']:.3f} s + hook {cost['hook']:.3f} s = {cost['total']:.3f} s")
    if "keystone-k8s" in charms:
        one, r = count_keystone_with_related(1), count_keystone_with_related(100)
        print(
            "\nkeystone with 100 related applications on identity-service: steady config-changed "
            f"{r['hook_tools']} hook-tool calls ({one['hook_tools']} with 1), "
            f"{r['pebble']} Pebble calls -> {r['status']}"
        )
        print(f"            {r['detail']}")
    print("\nin a settled cloud (bundles/openstack.yaml; keystone also serving identity-service)")
    for app, r in count_in_cloud().items():
        print(f"  {app:9} {r['hook_tools']:3} hook-tool calls, {r['pebble']:3} Pebble calls -> {r['status']}")
        print(f"            {r['detail']}")
    print(f"\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
