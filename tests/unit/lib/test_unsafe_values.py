"""Values from relations and config never change the structure of a rendered file, and statuses stay short."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence
from typing import Any, ClassVar

import ops
import pytest
from openstack_charms.config import APIConfig, InvalidOption
from openstack_charms.context import ServiceContext
from openstack_charms.k8s import K8sCharm
from openstack_charms.plan import Workload
from openstack_charms.status import MAX_MESSAGE
from openstack_charms.testing import container, pushed_files
from openstack_charms.testing.relations import ingress_fixture
from ops import testing

INJECTION = "\n[DEFAULT]\ndebug = true"
META = {
    "name": "demo",
    "containers": {"demo": {}},
    "requires": {
        "ingress-internal": {"interface": "ingress", "limit": 1, "optional": False},
        "ingress-public": {"interface": "ingress", "limit": 1, "optional": True},
    },
}
CONFIG = {
    "options": {
        "debug": {"type": "boolean", "default": False},
        "log-level": {"type": "string", "default": "INFO"},
        "region": {"type": "string", "default": "RegionOne"},
        "workers": {"type": "int", "default": 2},
        "banner": {"type": "string", "default": ""},
    }
}
CONF = """[DEFAULT]
{% include "parts/default.j2" %}
public_url = {{ ctx.urls.public }}
internal_url = {{ ctx.urls.internal }}
region = {{ config.region }}
"""
UWSGI = """[uwsgi]
procname-prefix = {{ config.banner }}
"""
MODEL = testing.Model(name="openstack")
LOCAL_URL = "http://demo.openstack.svc:8080"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig(APIConfig):
    banner: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.banner) > 64:
            # deliberately quotes the whole value: the status must still be short
            raise InvalidOption("banner", f"is {self.banner!r}, must be at most 64 characters")


class DemoCharm(K8sCharm[DemoConfig, ServiceContext[DemoConfig]]):
    config_class = DemoConfig
    context_class = ServiceContext
    service_name = "demo"
    service_user = "demo"
    api_port = 8080
    templates: ClassVar[pathlib.Path]

    @property
    def templates_dir(self) -> pathlib.Path:
        return self.templates

    def workloads(self, ctx: ServiceContext[DemoConfig]) -> Sequence[Workload]:
        return [
            Workload(
                "demo",
                files=[
                    self.render("demo.conf.j2", "/etc/demo/demo.conf", ctx),
                    self.render("uwsgi.j2", "/etc/demo/demo-uwsgi.ini", ctx),
                ],
            )
        ]


@pytest.fixture(autouse=True)
def _templates(tmp_path_factory: pytest.TempPathFactory) -> None:
    templates = tmp_path_factory.mktemp("templates")
    (templates / "demo.conf.j2").write_text(CONF)
    (templates / "uwsgi.j2").write_text(UWSGI)
    DemoCharm.templates = templates


def ctx() -> testing.Context[DemoCharm]:
    return testing.Context(DemoCharm, meta=META, config=CONFIG)


def ingress(endpoint: str, url: str | None = None) -> testing.Relation:
    relation = ingress_fixture(endpoint, app="demo").relation
    assert isinstance(relation, testing.Relation)
    if url is None:
        return relation
    return dataclasses.replace(relation, remote_app_data={"ingress": json.dumps({"url": url})})


def run(
    *relations: testing.Relation, config: dict[str, Any] | None = None
) -> tuple[testing.State, dict[str, str]]:
    context = ctx()
    state = testing.State(
        leader=True,
        model=MODEL,
        containers={container("demo")},
        relations=set(relations),
        config=config or {},
    )
    out = context.run(context.on.config_changed(), state)
    return out, pushed_files(out, context, "demo")


def assert_short(status: ops.StatusBase) -> None:
    assert len(status.message) <= MAX_MESSAGE, len(status.message)
    assert "\n" not in status.message and "\r" not in status.message


def assert_never_written(files: dict[str, str]) -> None:
    for path, content in files.items():
        assert "debug = true" not in content, f"the injected line reached {path}"


def test_clean_relations_render_both_files() -> None:
    out, files = run(ingress("ingress-internal"), ingress("ingress-public"))
    assert out.unit_status == testing.ActiveStatus()
    conf = files["/etc/demo/demo.conf"]
    assert "internal_url = http://10.20.0.10/openstack-demo\n" in conf
    assert "public_url = http://10.20.1.10/openstack-demo\n" in conf
    assert "debug = false\n" in conf


# -- relation data ----------------------------------------------------------------------


@pytest.mark.parametrize("injected", [INJECTION, INJECTION.replace("\n", "\r")])
def test_an_ingress_url_with_a_line_break_never_reaches_a_file(injected: str) -> None:
    url = f"http://10.20.0.10/openstack-demo{injected}"
    out, files = run(ingress("ingress-internal", url), ingress("ingress-public"))
    assert isinstance(out.unit_status, ops.WaitingStatus)
    assert out.unit_status.message.startswith("waiting for ingress-internal (usable data ("), out.unit_status
    assert_short(out.unit_status)
    assert_never_written(files)


def test_an_optional_ingress_with_an_unusable_url_is_left_out() -> None:
    url = f"http://10.20.1.10/openstack-demo{INJECTION}"
    context = ctx()
    state = testing.State(
        leader=True,
        model=MODEL,
        containers={container("demo")},
        relations={ingress("ingress-internal"), ingress("ingress-public", url)},
    )
    with context(context.on.config_changed(), state) as manager:
        out = manager.run()
        handler = manager.charm.handlers["ingress-public"]
        assert handler.context is None
        assert handler.waiting_for.startswith("usable data (")
    files = pushed_files(out, context, "demo")
    assert out.unit_status == testing.ActiveStatus()
    # the public URL falls back to the internal one, as without a public ingress
    assert "public_url = http://10.20.0.10/openstack-demo\n" in files["/etc/demo/demo.conf"]
    assert_never_written(files)


# -- config -----------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["region", "banner", "log-level"])
@pytest.mark.parametrize("injected", [INJECTION, INJECTION.replace("\n", "\r")])
def test_a_config_value_with_a_line_break_is_blocked_naming_the_option(option: str, injected: str) -> None:
    out, files = run(ingress("ingress-internal"), config={option: f"RegionOne{injected}"})
    assert out.unit_status == testing.BlockedStatus(
        f"config option '{option}' must be one line without control characters"
    )
    assert_never_written(files)


@pytest.mark.parametrize(
    ("option", "value"),
    [("banner", "b" * 100_000), ("log-level", "L" * 100_000), ("log-level", "LOUD\n" * 20_000)],
)
def test_a_huge_invalid_value_gives_a_short_status_on_one_line(option: str, value: str) -> None:
    assert len(value) == 100_000
    out, files = run(ingress("ingress-internal"), config={option: value})
    assert isinstance(out.unit_status, ops.BlockedStatus)
    assert out.unit_status.message.startswith(f"config option '{option}' ")
    assert_short(out.unit_status)
    assert files == {}


@pytest.mark.parametrize("char", ["%", "$", "@"])
def test_a_value_a_uwsgi_file_would_expand_is_blocked_naming_the_file(char: str) -> None:
    out, files = run(ingress("ingress-internal"), config={"banner": f"secret{char}value"})
    assert isinstance(out.unit_status, ops.BlockedStatus)
    assert out.unit_status.message.startswith("refusing to write /etc/demo/demo-uwsgi.ini: ")
    assert "secret" not in out.unit_status.message, "the value itself (it may be a secret) is not shown"
    assert files == {}, "nothing is written while one file is refused"


def test_the_same_value_is_written_escaped_into_an_oslo_file() -> None:
    out, files = run(ingress("ingress-internal"), config={"region": "Region$One"})
    assert out.unit_status == testing.ActiveStatus()
    assert "region = Region$$One\n" in files["/etc/demo/demo.conf"]
    assert LOCAL_URL not in files["/etc/demo/demo.conf"], "the internal ingress URL is used"
