"""ops.testing helpers shared by every charm's tests (not shipped in charms).

``charm_context(name)`` builds a :class:`ops.testing.Context` from the charm's
merged charmcraft.yaml; the ``assert_*`` functions are the generic checks every
charm gets: blocked naming each missing mandatory relation, relation-order
invariance, idempotency, and leader vs non-leader.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import importlib.util
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ops
import yaml
from ops import testing

REPO = pathlib.Path(__file__).resolve().parents[3]
CHARMS = REPO / "charms"
#: charms that live in the tests only (not shipped): they prove the library's shape
TEST_CHARMS = REPO / "tests" / "charms"


def charm_dir(charm: str) -> pathlib.Path:
    """Where charm ``charm`` lives: ``charms/``, else ``tests/charms/``."""
    for root in (CHARMS, TEST_CHARMS):
        if (root / charm / "charmcraft.yaml").exists():
            return root / charm
    raise LookupError(f"no charm {charm} in charms/ or tests/charms/")


def all_charms() -> list[str]:
    """Every charm of the collection and of the tests, by name."""
    return sorted(
        p.name
        for root in (CHARMS, TEST_CHARMS)
        if root.is_dir()
        for p in root.iterdir()
        if (p / "charmcraft.yaml").exists()
    )


#: the model the factories put charms in (the bundle's)
MODEL_NAME = "openstack"


@dataclasses.dataclass(frozen=True)
class RelationFixture:
    """A relation as the other side left it, with the secrets it refers to."""

    relation: testing.RelationBase
    secrets: tuple[testing.Secret, ...] = ()


def _merge(base: Any, own: Any) -> Any:
    if isinstance(base, dict) and isinstance(own, dict):
        merged = dict(base)
        for key, value in own.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return own


def merged_charmcraft(charm: str | pathlib.Path) -> dict[str, Any]:
    """The top-level charmcraft.yaml merged with the charm's own (the charm's wins)."""
    directory = charm if isinstance(charm, pathlib.Path) else charm_dir(charm)
    shared = yaml.safe_load((REPO / "charmcraft.yaml").read_text()) or {}
    own = yaml.safe_load((directory / "charmcraft.yaml").read_text()) or {}
    return _merge(shared, own)


def load_charm_class(charm: str) -> type[ops.CharmBase]:
    """Import ``charms/<charm>/src/charm.py`` under a unique module name."""
    module_name = f"{charm.replace('-', '_')}_charm"
    path = charm_dir(charm) / "src" / "charm.py"
    # as when Juju runs src/charm.py: the charm's own modules sit beside it (checked on
    # every call: a test that restores sys.path may have taken it away since the import)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    classes = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, ops.CharmBase) and v.__module__ == module_name
    ]
    assert len(classes) == 1, f"{charm}: expected one charm class, found {classes}"
    return classes[0]


def charm_context(
    charm: str,
    *,
    root: pathlib.Path | Callable[[], pathlib.Path] | None = None,
    machine_of: Callable[[str], tuple[Any, pathlib.Path]] | None = None,
    **kwargs: Any,
) -> testing.Context[Any]:
    """An ops.testing Context for ``charm`` with its merged metadata.

    A machine charm runs on a fake host (``ctx.host``, see :mod:`.host`) whose
    files live under ``root`` (or the directory ``root()`` gives at each run),
    so nothing on the test machine is touched; or, with ``machine_of``, on the
    host backend and state directory it gives for the unit (the sandbox's machines).
    """
    meta = merged_charmcraft(charm)
    # ops.testing refuses config and actions both inside meta and beside it
    config, actions = meta.pop("config", None), meta.pop("actions", None)
    charm_class = load_charm_class(charm)
    host = None
    from ..machine import MachineCharm

    if issubclass(charm_class, MachineCharm) and machine_of is not None:
        from .host import on_host

        charm_class = on_host(charm_class, machine_of)
    elif issubclass(charm_class, MachineCharm):
        from .host import on_fake_host

        if root is None:
            root = pathlib.Path(tempfile.mkdtemp(prefix=f"{charm}-host-"))
            atexit.register(shutil.rmtree, root, True)
        charm_class, host = on_fake_host(charm_class, root)
    ctx = testing.Context(
        charm_class,
        meta=meta,
        config=config,
        actions=actions,
        charm_root=_charm_root(charm),
        **kwargs,
    )
    ctx.host = host  # type: ignore[attr-defined]
    return ctx


def declared_leader_work(ctx: testing.Context[Any], state: testing.State) -> list[Any]:
    """The leader tasks the charm declares in ``state`` (an update-status run reads them off the charm)."""
    from ..status import NotReady

    with ctx(ctx.on.update_status(), state) as manager:
        manager.run()
        charm = manager.charm
        try:
            return list(charm.leader_work(charm.context))
        except NotReady:
            return []


@functools.cache
def _charm_root(charm: str) -> pathlib.Path:
    # ops.testing writes metadata.yaml, config.yaml and actions.yaml into the
    # charm root while a test runs: give it a scratch root that links to the
    # charm's sources, so the repository stays clean and parallel runs do not race.
    root = pathlib.Path(tempfile.mkdtemp(prefix=f"{charm}-root-"))
    atexit.register(shutil.rmtree, root, True)
    (root / "src").symlink_to(charm_dir(charm) / "src")
    return root


def mandatory_endpoints(charm: str) -> list[str]:
    """Endpoints the charm declares without ``optional: true``."""
    meta = merged_charmcraft(charm)
    return sorted(
        name
        for kind in ("requires",)
        for name, spec in (meta.get(kind) or {}).items()
        if not (spec or {}).get("optional", False)
    )


def state_with(
    fixtures: Iterable[RelationFixture],
    *,
    base: testing.State | None = None,
    **kwargs: Any,
) -> testing.State:
    """A State holding these relations and their secrets on top of ``base``."""
    fixtures = list(fixtures)
    base = base or testing.State()
    return dataclasses.replace(
        base,
        relations=[*base.relations, *(f.relation for f in fixtures)],
        secrets=[*base.secrets, *(s for f in fixtures for s in f.secrets)],
        **kwargs,
    )


# -- what a user sees ---------------------------------------------------------


def pushed_files(state: testing.State, ctx: testing.Context[Any], container: str) -> dict[str, str]:
    """Every file the charm wrote into a container's filesystem, by absolute path."""
    root = state.get_container(container).get_filesystem(ctx)
    files: dict[str, str] = {}
    # mounts (see container()) are symlinks, which rglob does not enter
    for directory, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = pathlib.Path(directory, name)
            if path.is_file():
                files["/" + str(path.relative_to(root))] = path.read_text()
    return files


def observable(state: testing.State, *, exact: bool = True) -> tuple[object, ...]:
    """What a user can observe of a state, for before/after comparisons.

    With ``exact=False`` (comparing two separate runs), what is generated at
    random is left out: secret ids (named by label instead, also where relation
    data refers to them), relation ids, the values in secrets, and the values of
    the peer databag (the charm's own bookkeeping, digests of generated keys).
    """
    names = {s.id: f"<secret {s.label or '?'}>" for s in state.secrets}

    def bag(data: Mapping[str, str]) -> list[tuple[str, str]]:
        if exact:
            return sorted(data.items())
        return sorted((k, names.get(v, v)) for k, v in data.items())

    def content(data: Mapping[str, str]) -> list[Any]:
        return sorted(data.items()) if exact else sorted(data)

    return (
        state.unit_status,
        state.app_status,
        sorted(
            (r.endpoint, r.id if exact else 0, bag(r.local_app_data), bag(r.local_unit_data))
            if exact or not isinstance(r, testing.PeerRelation)
            else (r.endpoint, 0, sorted(r.local_app_data), [])
            for r in state.relations
        ),
        sorted(
            (
                s.id if exact else "",
                s.label or "",
                content(s.tracked_content),
                content(s.latest_content or {}),
            )
            for s in state.secrets
            if exact or s.owner is not None
        ),
        sorted((c.name, sorted((k, v.to_dict()) for k, v in c.layers.items())) for c in state.containers),
    )


# -- generic assertions -------------------------------------------------------


def assert_blocked_without_each_mandatory(
    ctx: testing.Context[Any],
    complete: Sequence[RelationFixture],
    mandatory: Sequence[str],
    *,
    base: testing.State,
) -> None:
    """Removing any one mandatory relation gives Blocked naming exactly that relation."""
    assert mandatory, "a charm with no mandatory relation should not use this check"
    for endpoint in mandatory:
        fixtures = [f for f in complete if f.relation.endpoint != endpoint]
        state = state_with(fixtures, base=base)
        out = ctx.run(ctx.on.config_changed(), state)
        status = out.unit_status
        assert isinstance(status, ops.BlockedStatus), f"without {endpoint}: {status}"
        assert endpoint in status.message, f"without {endpoint}: {status.message!r}"
        others = [
            m for m in mandatory if m != endpoint and m in status.message.split(": ", 1)[-1].split(", ")
        ]
        assert not others, f"without {endpoint} the status also names {others}"


def assert_idempotent(ctx: testing.Context[Any], state: testing.State, event: Any) -> testing.State:
    """Running the same event on its own output changes nothing a user can observe."""
    once = ctx.run(event, state)
    twice = ctx.run(event, once)
    assert observable(twice) == observable(once), "the second run changed the state"
    return once


def assert_order_invariant(
    ctx: testing.Context[Any],
    fixtures: Sequence[RelationFixture],
    *,
    base: testing.State | Callable[[], testing.State],
) -> testing.State:
    """Relations arriving one by one, in every rotation and reversed, end in the same state.

    ``base`` may be a factory, so that each order starts from a new pod (its
    own container filesystem) as it would in a new deployment.
    """
    n = len(fixtures)
    orders = [list(fixtures[i:]) + list(fixtures[:i]) for i in range(n)]
    orders += [list(reversed(o)) for o in orders]
    outcomes: dict[str, testing.State] = {}
    for order in orders:
        state = base() if callable(base) else base
        for fixture in order:
            state = dataclasses.replace(
                state,
                relations=[*state.relations, fixture.relation],
                secrets=[*state.secrets, *fixture.secrets],
            )
            relation = state.get_relation(fixture.relation.id)
            state = ctx.run(ctx.on.relation_changed(relation), state)  # type: ignore[arg-type]
        outcomes[repr(observable(state, exact=False))] = state
    if len(outcomes) > 1:
        first, second = (observable(o, exact=False) for o in list(outcomes.values())[:2])
        diff = next((a, b) for a, b in zip(first, second, strict=True) if a != b)
        raise AssertionError(f"{len(outcomes)} outcomes for {n} relations in {len(orders)} orders: {diff}")
    return next(iter(outcomes.values()))


def container(
    name: str,
    root: pathlib.Path | None = None,
    storages: dict[str, str] | None = None,
    **kwargs: Any,
) -> testing.Container:
    """A workload container; with ``root``, its /etc, /run and /var survive between runs.

    ``storages`` maps Juju storage names to where they are mounted in the
    container, as Juju mounts them.

    ops.testing wipes a container's filesystem at every run, as if the pod were
    recreated each time. Mounting the directories the charms write to from
    ``root`` models a container that keeps its filesystem, which is what an
    idempotency or "nothing changed" check needs.
    """
    mounts: dict[str, testing.Mount] = {}
    tops = ("etc", "run", "var")
    if root is not None:
        for top in tops:
            source = root / name / top
            source.mkdir(parents=True, exist_ok=True)
            mounts[top] = testing.Mount(location=f"/{top}", source=source)
    for storage, location in (storages or {}).items():
        parts = pathlib.PurePosixPath(location).parts[1:]
        if root is not None and parts and parts[0] in tops:
            # already inside a mounted directory: the volume is a folder there
            (root / name / pathlib.Path(*parts)).mkdir(parents=True, exist_ok=True)
            continue
        source = pathlib.Path(tempfile.mkdtemp(prefix=f"{storage}-"))
        atexit.register(shutil.rmtree, source, True)
        mounts[storage] = testing.Mount(location=location, source=source)
    return testing.Container(name, can_connect=kwargs.pop("can_connect", True), mounts=mounts, **kwargs)


def _fixtures() -> dict[str, Callable[[str, str | None], RelationFixture]]:
    from .identity import identity_credentials_fixture, identity_service_fixture
    from .relations import (
        amqp_fixture,
        ca_fixture,
        certificates_fixture,
        database_fixture,
        ingress_fixture,
        nova_service_fixture,
        ovsdb_cms_fixture,
        readiness_fixture,
    )

    return {
        "mysql_client": lambda endpoint, _app: database_fixture(endpoint=endpoint),
        "rabbitmq": lambda endpoint, _app: amqp_fixture(endpoint=endpoint),
        "ingress": lambda endpoint, app: (
            ingress_fixture(endpoint=endpoint, app=app) if app else ingress_fixture(endpoint=endpoint)
        ),
        "keystone": lambda endpoint, _app: identity_service_fixture(endpoint=endpoint),
        "keystone-credentials": lambda endpoint, _app: identity_credentials_fixture(endpoint=endpoint),
        "tls-certificates": lambda endpoint, _app: certificates_fixture(endpoint=endpoint),
        "certificate_transfer": lambda endpoint, _app: ca_fixture(endpoint=endpoint),
        "placement": lambda endpoint, _app: readiness_fixture(endpoint=endpoint),
        "nova": lambda endpoint, _app: nova_service_fixture(endpoint=endpoint),
        # as ovn-relay leaves it (what machine charms wait for is there too), serving plain TCP so
        # that a charm's mandatory relations are enough (TLS needs its certificates relation too)
        "ovsdb-cms": lambda endpoint, _app: ovsdb_cms_fixture(
            endpoint=endpoint, loadbalancer="10.27.5.1", protocol="tcp"
        ),
    }


#: interface -> a complete relation for one of our requirer endpoints, as its provider leaves it
FIXTURES = _fixtures()


def fixture_for(endpoint: str, interface: str, app: str | None = None) -> RelationFixture | None:
    """A complete relation for one of our requirer endpoints, by its interface; ``None`` if unknown.

    ``app`` is the requiring application, where the provider's answer names it
    (traefik routes ``/<model>-<app>``).
    """
    make = FIXTURES.get(interface)
    return make(endpoint, app) if make is not None else None


def complete_relations(charm: str, *, mandatory_only: bool = False) -> list[RelationFixture]:
    """Every requirer relation of ``charm`` as its providers leave it once ready."""
    # the application is named as the bundle names it: the charm without -k8s
    app = charm.removesuffix("-k8s")
    meta = merged_charmcraft(charm)
    fixtures = []
    for endpoint, spec in (meta.get("requires") or {}).items():
        optional = spec.get("optional", False)
        if mandatory_only and optional:
            continue
        fixture = fixture_for(endpoint, spec["interface"], app)
        if fixture is None and not optional:
            raise LookupError(
                f"{charm}: no fixture for the mandatory endpoint {endpoint} (interface {spec['interface']}); "
                "add one to openstack_charms.testing.FIXTURES"
            )
        if fixture is not None:
            fixtures.append(fixture)
    return fixtures


def complete_state(
    charm: str,
    root: pathlib.Path | None = None,
    *,
    leader: bool = True,
    mandatory_only: bool = False,
    execs: Iterable[testing.Exec] = (),
    **kwargs: Any,
) -> testing.State:
    """A state where every relation of ``charm`` is ready and its containers answer."""
    meta = merged_charmcraft(charm)
    base = testing.State(
        leader=leader,
        model=testing.Model(name=MODEL_NAME),
        relations=[testing.PeerRelation(name) for name in (meta.get("peers") or {})],
        containers=[
            container(name, root, container_storages(spec), execs=set(execs))
            for name, spec in (meta.get("containers") or {}).items()
        ],
        storages=[testing.Storage(name) for name in (meta.get("storage") or {})],
    )
    return state_with(complete_relations(charm, mandatory_only=mandatory_only), base=base, **kwargs)


def container_storages(spec: dict[str, Any] | None) -> dict[str, str]:
    """Storage name -> mount location of one container's charmcraft.yaml entry."""
    return {m["storage"]: m["location"] for m in (spec or {}).get("mounts") or []}


def assert_follower_follows_the_leader(
    ctx: testing.Context[Any], leader_done: testing.State
) -> testing.State:
    """A non-leader unit given what the leader left (peer data, app secrets) becomes active.

    It must also write nothing into application databags (only leaders may), and
    a non-leader that has not yet seen the leader's work must wait, not act.
    """
    peers = [r for r in leader_done.relations if isinstance(r, testing.PeerRelation)]
    others = [r for r in leader_done.relations if not isinstance(r, testing.PeerRelation)]
    fresh = [dataclasses.replace(r, local_app_data={}, local_unit_data={}) for r in others]
    follower_input = dataclasses.replace(leader_done, leader=False, relations=[*peers, *fresh])
    follower = ctx.run(ctx.on.config_changed(), follower_input)
    assert isinstance(follower.unit_status, ops.ActiveStatus), f"follower: {follower.unit_status}"
    for relation in follower.relations:
        if not isinstance(relation, testing.PeerRelation):
            assert not relation.local_app_data, f"a non-leader wrote app data on {relation.endpoint}"
    if any(p.local_app_data for p in peers):
        # what the leader left in peer data (work done, secrets made) is what a follower waits for
        blank = [dataclasses.replace(p, local_app_data={}) for p in peers]
        early = ctx.run(
            ctx.on.config_changed(), dataclasses.replace(follower_input, relations=[*blank, *fresh])
        )
        assert isinstance(early.unit_status, ops.WaitingStatus), f"before the leader: {early.unit_status}"
        assert "leader" in early.unit_status.message, early.unit_status.message
    return follower
