"""The base charm: one reconcile, one status path, typed config, leader work, app secrets."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import ops
import pytest
from openstack_charms.charm import OpenStackCharm
from openstack_charms.config import InvalidOption, ServiceConfig, check_range
from openstack_charms.context import ServiceContext
from openstack_charms.plan import Workload
from openstack_charms.relations.base import Incomplete, RelationDataError, RelationHandler, load_json
from openstack_charms.relations.wiring import Wire
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
    import hashlib

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
