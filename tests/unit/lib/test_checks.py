"""Pebble health checks: the API's check restarts its service, and a failing check is the unit's status."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import ops
import pytest
from openstack_charms.pebble import layer
from openstack_charms.plan import Check, Service, Workload
from openstack_charms.status import MAX_MESSAGE
from openstack_charms.testing import assert_idempotent, charm_context, complete_state
from ops import testing
from ops.pebble import CheckLevel, CheckStatus

PLACEMENT = "placement-k8s"
CHECK = "placement-api-up"
FAILING = "placement-api-up failing in container placement; Pebble restarts placement-api"
MULTI = "demo-multi-k8s"


@pytest.fixture
def ctx() -> testing.Context[Any]:
    return charm_context(PLACEMENT)


def settle(ctx: testing.Context[Any], root: pathlib.Path, charm: str = PLACEMENT) -> testing.State:
    """A unit that has started everything: active, its checks in Pebble and up."""
    execs = [testing.Exec(["placement-manage", "db", "sync"]), testing.Exec(["demo-manage", "db", "sync"])]
    out = ctx.run(ctx.on.config_changed(), complete_state(charm, root, execs=execs))
    assert isinstance(out.unit_status, ops.ActiveStatus), out.unit_status
    return out


def with_check(state: testing.State, container: str, name: str, status: CheckStatus) -> testing.State:
    """``state`` where Pebble in ``container`` reports check ``name`` as ``status``."""
    level = CheckLevel(state.get_container(container).plan.checks[name].level)
    failures = 3 if status == CheckStatus.DOWN else 0
    info = testing.CheckInfo(name, level=level, status=status, failures=failures, threshold=3)
    containers = [
        dataclasses.replace(c, check_infos={info, *(i for i in c.check_infos if i.name != name)})
        if c.name == container
        else c
        for c in state.containers
    ]
    return dataclasses.replace(state, containers=containers)


def report(
    ctx: testing.Context[Any],
    state: testing.State,
    status: CheckStatus,
    container: str = "placement",
    name: str = CHECK,
) -> testing.State:
    """Pebble in ``container`` reports ``name`` down (or up again) and Juju runs the matching hook."""
    state = with_check(state, container, name, status)
    target = state.get_container(container)
    on = ctx.on.pebble_check_failed if status == CheckStatus.DOWN else ctx.on.pebble_check_recovered
    return ctx.run(on(target, target.get_check_info(name)), state)


def fail(
    ctx: testing.Context[Any], state: testing.State, container: str = "placement", name: str = CHECK
) -> testing.State:
    """Pebble in ``container`` reports ``name`` down and Juju runs its check-failed hook."""
    return report(ctx, state, CheckStatus.DOWN, container, name)


def recover(
    ctx: testing.Context[Any], state: testing.State, container: str = "placement", name: str = CHECK
) -> testing.State:
    """Pebble in ``container`` reports ``name`` up again and Juju runs its check-recovered hook."""
    return report(ctx, state, CheckStatus.UP, container, name)


# -- the layer ------------------------------------------------------------------------


def test_the_uwsgi_check_restarts_its_service(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = settle(ctx, tmp_path)
    charm_layer = out.get_container("placement").layers["charm"].to_dict()
    assert charm_layer["services"]["placement-api"]["on-check-failure"] == {CHECK: "restart"}
    assert CHECK in charm_layer["checks"]
    plan = out.get_container("placement").plan
    assert plan.services["placement-api"].on_check_failure == {CHECK: "restart"}


def test_a_check_restarts_only_the_services_it_names() -> None:
    wl = Workload(
        "app",
        services=[Service("api", "app-api"), Service("worker", "app-worker")],
        checks=[
            Check.http("api-up", "http://localhost:80/", restarts=("api",)),
            Check.exec("both", "app-status", restarts=("api", "worker")),
            Check.tcp("port", 80),
        ],
    )
    services: Any = layer(wl)["services"]
    assert services["api"]["on-check-failure"] == {"api-up": "restart", "both": "restart"}
    assert services["worker"]["on-check-failure"] == {"both": "restart"}
    reported_only: Any = layer(Workload("app", services=wl.services, checks=wl.checks[2:]))["services"]
    assert "on-check-failure" not in reported_only["api"]


def test_a_check_restarting_an_undeclared_service_is_a_charm_bug(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    state = complete_state(PLACEMENT, tmp_path)
    bad = Workload("placement", checks=[Check.http("x-up", "http://localhost/", restarts=("x",))])
    with ctx(ctx.on.update_status(), state) as manager, pytest.raises(RuntimeError, match="x-up restarts"):
        manager.charm.check_plan([bad])  # type: ignore[attr-defined]


def test_checks_without_restarts_stay_reported_only(tmp_path: pathlib.Path) -> None:
    ctx = charm_context(MULTI)
    out = settle(ctx, tmp_path, MULTI)
    assert out.get_container("demo-api").plan.services["demo-api"].on_check_failure == {
        "demo-api-up": "restart"
    }
    assert out.get_container("demo-scheduler").plan.services["demo-scheduler"].on_check_failure == {}
    assert out.get_container("demo-conductor").plan.services["demo-conductor"].on_check_failure == {}


# -- the status -----------------------------------------------------------------------


def test_a_failing_check_is_named_in_the_status(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    out = fail(ctx, settle(ctx, tmp_path))
    assert out.unit_status == testing.WaitingStatus(FAILING)
    assert len(out.unit_status.message) <= MAX_MESSAGE
    # the reconcile ran and found nothing to do: the application is as it was
    assert out.app_status == testing.ActiveStatus()


def test_a_recovered_check_gives_back_the_reconciled_status(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    settled = settle(ctx, tmp_path)
    out = recover(ctx, fail(ctx, settled))
    assert out.unit_status == settled.unit_status


def test_a_steady_hook_keeps_the_failing_check(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    failing = fail(ctx, settle(ctx, tmp_path))
    for event in (ctx.on.config_changed(), ctx.on.update_status()):
        out = ctx.run(event, failing)
        assert out.unit_status == testing.WaitingStatus(FAILING)


def test_a_blocked_config_beats_a_failing_check(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    failing = fail(ctx, settle(ctx, tmp_path))
    blocked = ctx.run(ctx.on.config_changed(), dataclasses.replace(failing, config={"workers": 0}))
    assert isinstance(blocked.unit_status, ops.BlockedStatus), blocked.unit_status
    assert "workers" in blocked.unit_status.message
    # the check is still remembered: fixing the config brings it back, not Active
    fixed = ctx.run(ctx.on.config_changed(), dataclasses.replace(blocked, config={}))
    assert fixed.unit_status == testing.WaitingStatus(FAILING)


def test_a_missing_relation_beats_a_failing_check(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    failing = fail(ctx, settle(ctx, tmp_path))
    without_db = dataclasses.replace(
        failing, relations=[r for r in failing.relations if r.endpoint != "database"]
    )
    out = ctx.run(ctx.on.config_changed(), without_db)
    assert out.unit_status == testing.BlockedStatus("missing relation: database")


def test_check_events_twice_change_nothing(ctx: testing.Context[Any], tmp_path: pathlib.Path) -> None:
    settled = settle(ctx, tmp_path)
    down = with_check(settled, "placement", CHECK, CheckStatus.DOWN)
    info = down.get_container("placement").get_check_info(CHECK)
    once = assert_idempotent(ctx, down, ctx.on.pebble_check_failed(down.get_container("placement"), info))
    assert once.unit_status == testing.WaitingStatus(FAILING)
    up = with_check(once, "placement", CHECK, CheckStatus.UP)
    info = up.get_container("placement").get_check_info(CHECK)
    again = assert_idempotent(ctx, up, ctx.on.pebble_check_recovered(up.get_container("placement"), info))
    assert again.unit_status == settled.unit_status
    # neither event changed the layer or ran the leader's work again
    assert again.get_container("placement").layers == settled.get_container("placement").layers
    assert [e.command for e in ctx.exec_history["placement"]] == [["placement-manage", "db", "sync"]]


def test_failing_checks_of_several_containers(tmp_path: pathlib.Path) -> None:
    ctx = charm_context(MULTI)
    settled = settle(ctx, tmp_path, MULTI)
    out = fail(ctx, fail(ctx, settled, "demo-scheduler", "demo-scheduler-alive"), "demo-api", "demo-api-up")
    assert out.unit_status == testing.WaitingStatus(
        "demo-api-up failing in container demo-api; Pebble restarts demo-api; 1 more check failing"
    )
    out = recover(ctx, out, "demo-api", "demo-api-up")
    # a check that restarts nothing is named alone
    assert out.unit_status == testing.WaitingStatus(
        "demo-scheduler-alive failing in container demo-scheduler"
    )
    out = recover(ctx, out, "demo-scheduler", "demo-scheduler-alive")
    assert out.unit_status == settled.unit_status


def test_a_long_status_is_one_line_of_at_most_120_characters(tmp_path: pathlib.Path) -> None:
    ctx = charm_context(MULTI)
    out = settle(ctx, tmp_path, MULTI)
    for container, name in (
        ("demo-api", "demo-api-up"),
        ("demo-conductor", "demo-conductor-up"),
        ("demo-scheduler", "demo-scheduler-alive"),
    ):
        out = fail(ctx, out, container, name)
    status = out.unit_status
    assert isinstance(status, ops.WaitingStatus)
    assert status.message.startswith("demo-api-up failing in container demo-api")
    assert "\n" not in status.message and len(status.message) <= MAX_MESSAGE


# -- what Pebble says wins over what was noted ------------------------------------------


def test_pebble_ready_forgets_a_failure_a_new_pebble_does_not_have(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    # the container restarted while its check was failing: the new Pebble's check is up and
    # will never send the recovery of the old one's failure
    failing = fail(ctx, settle(ctx, tmp_path))
    restarted = with_check(failing, "placement", CHECK, CheckStatus.UP)
    out = ctx.run(ctx.on.pebble_ready(restarted.get_container("placement")), restarted)
    assert out.unit_status == testing.ActiveStatus()


def test_pebble_ready_notes_a_failure_it_did_not_hear_of(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    down = with_check(settle(ctx, tmp_path), "placement", CHECK, CheckStatus.DOWN)
    out = ctx.run(ctx.on.pebble_ready(down.get_container("placement")), down)
    assert out.unit_status == testing.WaitingStatus(FAILING)


def test_a_check_the_plan_no_longer_declares_is_forgotten(
    ctx: testing.Context[Any], tmp_path: pathlib.Path
) -> None:
    failing = fail(ctx, settle(ctx, tmp_path))
    (stored,) = [s for s in failing.stored_states if s.name == "_pebble_checks"]
    renamed = dataclasses.replace(stored, content={"failing": {"placement": ["placement-old-up"]}})
    state = dataclasses.replace(
        failing, stored_states=[*(s for s in failing.stored_states if s is not stored), renamed]
    )
    state = with_check(state, "placement", CHECK, CheckStatus.UP)
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == testing.ActiveStatus()
    (after,) = [s for s in out.stored_states if s.name == "_pebble_checks"]
    assert after.content["failing"] == {}
