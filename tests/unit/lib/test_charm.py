"""The base charm: one reconcile, one status path, typed config, leader work, app secrets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import ops
import pytest
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import InvalidOption, ServiceConfig, check_range
from openstack_charms.context import ServiceContext
from openstack_charms.k8s import K8sCharm
from openstack_charms.plan import Command, File, LeaderTask, Service, Workload
from openstack_charms.relations.base import Incomplete, RelationDataError, RelationHandler, load_json
from openstack_charms.relations.wiring import Wire
from openstack_charms.testing import container
from ops import testing

META = {
    "name": "demo",
    "requires": {
        "db": {"interface": "demo-db"},
        "queue": {"interface": "demo-queue"},
        "extra": {"interface": "demo-extra", "optional": True},
    },
    "peers": {"peers": {"interface": "demo-peers"}},
}
CONFIG = {
    "options": {
        "debug": {"type": "boolean", "default": False},
        "log-level": {"type": "string", "default": "INFO"},
        "size": {"type": "int", "default": 3},
    }
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig(ServiceConfig):
    size: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("size", self.size, 1, 10)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    url: str


class UrlHandler(RelationHandler[Endpoint]):
    """Reads a JSON ``endpoint`` object from the remote app, publishes ``want``."""

    def app_request(self) -> dict[str, str | None]:
        return {"want": self.endpoint}

    def get_context(self) -> Endpoint:
        relation = self.relation
        assert relation is not None and relation.app is not None
        data = load_json(relation.data[relation.app], "endpoint")
        if data is None:
            raise Incomplete("'endpoint'")
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            raise RelationDataError("'endpoint' has no url")
        return Endpoint(url=data["url"])


URL_WIRE = Wire(UrlHandler, ())


class DemoCharm(OpenStackCharm[DemoConfig, ServiceContext[DemoConfig]]):
    config_class = DemoConfig
    context_class = ServiceContext
    service_name = "demo"
    own_wiring: ClassVar[dict[str, Wire]] = {"db": URL_WIRE, "queue": URL_WIRE, "extra": URL_WIRE}
    task_runs: ClassVar[list[str]] = []

    def workloads(self, ctx: ServiceContext[DemoConfig]) -> Sequence[Workload]:
        return []

    def after_start(self, ctx: ServiceContext[DemoConfig]) -> None:
        assert self.peers is not None
        self.peers.secret("demo-keys", lambda: {"key": "generated"}, what="the demo keys")
        self.leader_task("sync", "inputs-1", lambda: self.task_runs.append(self.unit.name), what="demo sync")

    def active_message(self, ctx: ServiceContext[DemoConfig]) -> str:
        return "ready"


def ctx() -> testing.Context[DemoCharm]:
    return testing.Context(DemoCharm, meta=META, config=CONFIG)


def rel(endpoint: str, data: dict[str, str] | None = None) -> testing.Relation:
    return testing.Relation(
        endpoint,
        remote_app_data=data if data is not None else {"endpoint": json.dumps({"url": f"http://{endpoint}"})},
    )


@pytest.fixture(autouse=True)
def _reset() -> None:
    DemoCharm.task_runs = []


def complete(leader: bool = True, peer_data: dict[str, str] | None = None, **kw: Any) -> testing.State:
    return testing.State(
        leader=leader,
        relations={rel("db"), rel("queue"), testing.PeerRelation("peers", local_app_data=peer_data or {})},
        **kw,
    )


def test_active_with_every_relation() -> None:
    out = ctx().run(ctx().on.config_changed(), complete())
    assert out.unit_status == testing.ActiveStatus("ready")
    assert out.app_status == testing.ActiveStatus("ready")
    assert DemoCharm.task_runs == ["demo/0"]


def test_blocked_names_the_missing_relation() -> None:
    state = testing.State(leader=True, relations={rel("queue"), testing.PeerRelation("peers")})
    out = ctx().run(ctx().on.config_changed(), state)
    assert out.unit_status == testing.BlockedStatus("missing relation: db")


def test_blocked_names_every_missing_relation_and_not_the_optional_one() -> None:
    out = ctx().run(ctx().on.config_changed(), testing.State(leader=True))
    assert out.unit_status == testing.BlockedStatus("missing relations: db, queue")


def test_waiting_names_the_incomplete_relation_and_field() -> None:
    state = complete()
    state = dataclasses.replace(
        state, relations={*[r for r in state.relations if r.endpoint != "queue"], rel("queue", {})}
    )
    out = ctx().run(ctx().on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for queue ('endpoint')")


def test_related_optional_relation_that_is_incomplete_holds_back() -> None:
    state = dataclasses.replace(complete(), relations={*complete().relations, rel("extra", {})})
    out = ctx().run(ctx().on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for extra ('endpoint')")


def test_malformed_relation_data_is_waiting_not_a_crash() -> None:
    state = dataclasses.replace(
        complete(),
        relations={rel("db"), rel("queue", {"endpoint": '{"no-url": 1}'}), testing.PeerRelation("peers")},
    )
    out = ctx().run(ctx().on.config_changed(), state)
    assert out.unit_status == testing.WaitingStatus("waiting for queue (usable data ('endpoint' has no url))")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"size": 11}, "config option 'size' is 11, must be between 1 and 10"),
        ({"log-level": "LOUD"}, "config option 'log-level' is 'LOUD', must be one of DEBUG, INFO, WARNING"),
    ],
)
def test_invalid_config_is_blocked_naming_the_option(config: dict[str, Any], message: str) -> None:
    out = ctx().run(ctx().on.config_changed(), complete(config=config))
    assert isinstance(out.unit_status, ops.BlockedStatus)
    assert out.unit_status.message.startswith(message)
    assert DemoCharm.task_runs == []


def test_invalid_option_message() -> None:
    assert str(InvalidOption("region", "must not be empty")) == "config option 'region' must not be empty"


def test_requests_are_published_by_the_leader_only() -> None:
    out = ctx().run(ctx().on.config_changed(), complete(leader=True))
    assert out.get_relations("db")[0].local_app_data == {"want": "db"}
    out = ctx().run(ctx().on.config_changed(), complete(leader=False))
    assert out.get_relations("db")[0].local_app_data == {}


def test_leader_task_runs_once_and_a_new_leader_does_not_rerun_it() -> None:
    c = ctx()
    out = c.run(c.on.config_changed(), complete())
    again = c.run(c.on.config_changed(), out)
    assert DemoCharm.task_runs == ["demo/0"]
    peers = again.get_relations("peers")[0]
    new_leader = dataclasses.replace(again, leader=True, relations={rel("db"), rel("queue"), peers})
    c.run(c.on.leader_elected(), new_leader)
    assert DemoCharm.task_runs == ["demo/0"]


def test_upgrade_reruns_the_leader_task() -> None:
    c = ctx()
    out = c.run(c.on.config_changed(), complete())
    c.run(c.on.upgrade_charm(), out)
    assert DemoCharm.task_runs == ["demo/0", "demo/0"]


def test_non_leader_waits_for_the_leader_task_then_follows() -> None:
    c = ctx()
    leader_out = c.run(c.on.config_changed(), complete())
    peer_data = dict(leader_out.get_relations("peers")[0].local_app_data)
    waiting = c.run(c.on.config_changed(), complete(leader=False))
    assert waiting.unit_status == testing.WaitingStatus("waiting for the leader to create the demo keys")
    secret = next(iter(leader_out.secrets))
    follower = dataclasses.replace(complete(leader=False, peer_data=peer_data), secrets={secret})
    out = c.run(c.on.config_changed(), follower)
    assert out.unit_status == testing.ActiveStatus("ready")
    assert DemoCharm.task_runs == ["demo/0"]


def test_app_secret_is_created_once_and_survives_leader_change() -> None:
    c = ctx()
    out = c.run(c.on.config_changed(), complete())
    (secret,) = out.secrets
    assert secret.owner == "app"
    assert secret.tracked_content == {"key": "generated"}
    again = c.run(c.on.leader_elected(), out)
    assert [s.id for s in again.secrets] == [secret.id]


def test_a_unit_moves_to_the_leaders_new_secret_revision_only_when_it_changed() -> None:
    c = ctx()
    leader = c.run(c.on.config_changed(), complete())
    (secret,) = leader.secrets
    peer_data = dict(leader.get_relations("peers")[0].local_app_data)
    assert peer_data["demo-keys-digest"]

    # the leader rotated the content: a new revision, and its digest in peer data
    new = {"key": "rotated"}
    rotated = dataclasses.replace(secret, tracked_content={"key": "generated"}, latest_content=new)
    digest = hashlib.sha256(json.dumps(new, sort_keys=True).encode()).hexdigest()[:32]
    follower = dataclasses.replace(
        complete(leader=False, peer_data={**peer_data, "demo-keys-digest": digest}), secrets={rotated}
    )
    out = c.run(c.on.config_changed(), follower)
    (seen,) = out.secrets
    assert seen.tracked_content == new, "the follower still tracks the old revision"

    # while the digest names the revision it tracks, the unit does not refresh (one secret-get)
    same = dataclasses.replace(complete(leader=False, peer_data=peer_data), secrets={rotated})
    out = c.run(c.on.config_changed(), same)
    assert next(iter(out.secrets)).tracked_content == {"key": "generated"}


# -- the wiring table's order ------------------------------------------------------------


class TableCharm(OpenStackCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "demo"

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        return []


def test_missing_relations_are_named_in_the_tables_order_not_charmcraft_yaml_s() -> None:
    meta = {
        "name": "demo",
        "requires": {
            "messaging": {"interface": "rabbitmq"},
            "identity-service": {"interface": "keystone"},
            "database": {"interface": "mysql_client"},
            "unknown": {"interface": "no-handler-for-this"},
        },
    }
    context = testing.Context(TableCharm, meta=meta)
    with context(context.on.config_changed(), testing.State(leader=True)) as manager:
        out = manager.run()
        assert list(manager.charm.handlers) == ["database", "messaging", "identity-service"]
    assert out.unit_status == testing.BlockedStatus(
        "missing relations: database, messaging, identity-service"
    )


# -- declared leader tasks ----------------------------------------------------------------

K8S_META = {"name": "demo", "containers": {"demo": {}}, "peers": {"peers": {"interface": "demo-peers"}}}


class TaskCharm(K8sCharm[ServiceConfig, ServiceContext[ServiceConfig]]):
    config_class = ServiceConfig
    context_class = ServiceContext
    service_name = "demo"
    service_user = "demo"
    inputs: ClassVar[str] = "db:3306/demo"
    conf: ClassVar[str] = "[DEFAULT]\n"

    def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
        conf = File("/etc/demo/demo.conf", self.conf, "demo")
        return [Workload("demo", services=[Service("demo", "demo-api", user="demo")], files=[conf])]

    def leader_work(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[LeaderTask]:
        command = Command(("demo-manage", "db_sync", "--verbose"), user="demo")
        return [LeaderTask("db-sync", "demo", command, inputs=self.inputs)]


@pytest.fixture
def _inputs() -> Iterator[None]:
    yield
    TaskCharm.inputs = "db:3306/demo"


def task_state(root: pathlib.Path, *, leader: bool = True, code: int = 0, **kw: Any) -> testing.State:
    execs = {testing.Exec(["demo-manage"], return_code=code, stderr="boom" if code else "")}
    return testing.State(
        leader=leader,
        containers={container("demo", root, execs=execs)},
        relations={testing.PeerRelation("peers", local_app_data=kw.pop("peer_data", {}))},
        **kw,
    )


def syncs(context: testing.Context[Any]) -> list[list[str]]:
    return [e.command for e in context.exec_history.get("demo", [])]


def with_container(state: testing.State, root: pathlib.Path, code: int = 0) -> testing.State:
    execs = {testing.Exec(["demo-manage"], return_code=code)}
    # the same pod: its filesystem (under root), layers and running services stay
    previous = next((c for c in state.containers if c.name == "demo"), None)
    if previous is None:
        return dataclasses.replace(state, containers={container("demo", root, execs=execs)})
    return dataclasses.replace(state, containers={dataclasses.replace(previous, execs=execs)})


@pytest.mark.usefixtures("_inputs")
def test_a_declared_task_runs_once_per_distinct_inputs_before_the_services_start(
    tmp_path: pathlib.Path,
) -> None:
    context = testing.Context(TaskCharm, meta=K8S_META)
    out = context.run(context.on.config_changed(), task_state(tmp_path))
    assert out.unit_status == testing.ActiveStatus()
    assert syncs(context) == [["demo-manage", "db_sync", "--verbose"]]
    assert out.get_container("demo").service_statuses == {"demo": ops.pebble.ServiceStatus.ACTIVE}
    # the marker is the digest of the generation and of argv and inputs, one per line
    inputs = "\n".join(("demo-manage", "db_sync", "--verbose", "db:3306/demo"))
    expected = hashlib.sha256(f"0\n{inputs}".encode()).hexdigest()[:32]
    assert out.get_relations("peers")[0].local_app_data["db-sync-done"] == expected

    again = testing.Context(TaskCharm, meta=K8S_META)
    again.run(again.on.config_changed(), with_container(out, tmp_path))
    assert syncs(again) == [], "the same inputs ran the task again"

    TaskCharm.inputs = "db2:3306/demo"
    changed = testing.Context(TaskCharm, meta=K8S_META)
    changed.run(changed.on.config_changed(), with_container(out, tmp_path))
    assert syncs(changed) == [["demo-manage", "db_sync", "--verbose"]]


def test_a_failed_task_waits_names_the_command_without_its_arguments_and_starts_nothing(
    tmp_path: pathlib.Path,
) -> None:
    context = testing.Context(TaskCharm, meta=K8S_META)
    out = context.run(context.on.config_changed(), task_state(tmp_path, code=1))
    assert out.unit_status == testing.WaitingStatus("demo-manage db_sync failed (exit code 1); will retry")
    assert "--verbose" not in out.unit_status.message
    assert not out.get_container("demo").service_statuses
    assert "db-sync-done" not in out.get_relations("peers")[0].local_app_data
    assert (tmp_path / "demo" / "etc" / "demo" / "demo.conf").exists(), "files are in place for the retry"


def test_a_follower_waits_for_the_leaders_task_and_never_runs_it(tmp_path: pathlib.Path) -> None:
    context = testing.Context(TaskCharm, meta=K8S_META)
    out = context.run(context.on.config_changed(), task_state(tmp_path, leader=False))
    assert out.unit_status == testing.WaitingStatus("waiting for the leader to run demo-manage db_sync")
    assert syncs(context) == []
    assert not out.get_container("demo").service_statuses


@pytest.mark.usefixtures("_inputs")
def test_a_file_changed_while_the_leaders_work_waited_restarts_its_services_later(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restarted: list[str] = []
    real_restart = ops.Container.restart

    def restart(self: ops.Container, *names: str) -> None:
        restarted.extend(names)
        real_restart(self, *names)

    monkeypatch.setattr(ops.Container, "restart", restart)
    context = testing.Context(TaskCharm, meta=K8S_META)
    running = context.run(context.on.config_changed(), task_state(tmp_path))
    assert running.get_container("demo").service_statuses == {"demo": ops.pebble.ServiceStatus.ACTIVE}

    # the configuration changes (a new database): the file is rewritten, the db sync fails once
    monkeypatch.setattr(TaskCharm, "conf", "[DEFAULT]\nconnection = db2\n")
    TaskCharm.inputs = "db2:3306/demo"
    failed = context.run(context.on.config_changed(), with_container(running, tmp_path, code=1))
    assert failed.unit_status == testing.WaitingStatus("demo-manage db_sync failed (exit code 1); will retry")
    assert (tmp_path / "demo/etc/demo/demo.conf").read_text() == "[DEFAULT]\nconnection = db2\n"
    assert restarted == []

    # the retry succeeds: the service, started before the change, must now run on the new file
    retried = context.run(context.on.update_status(), with_container(failed, tmp_path))
    assert retried.unit_status == testing.ActiveStatus()
    assert restarted == ["demo"], "the service still runs with the file it read before the change"


def test_a_plan_for_a_container_the_charm_does_not_declare_is_a_charm_bug(tmp_path: pathlib.Path) -> None:
    class WrongCharm(TaskCharm):
        def workloads(self, ctx: ServiceContext[ServiceConfig]) -> Sequence[Workload]:
            return [Workload("other")]

    context = testing.Context(WrongCharm, meta=K8S_META)
    with pytest.raises(testing.errors.UncaughtCharmError, match="containers declared"):
        context.run(context.on.config_changed(), task_state(tmp_path))
