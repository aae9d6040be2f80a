"""Every oslo.config file the charms render is valid for the real OpenStack 2026.1 services.

The charms render in ops.testing with every relation ready; each oslo-style file
is then checked by ``oslo_check.py`` run with the Python of the OpenStack venv
(``OPENSTACK_VENV``): option names known to the service's namespaces (as
oslo-config-validator checks them) and every value read back with its real type.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess
from collections.abc import Callable
from typing import Any

import ops
import pytest
from openstack_charms.testing import REPO, charm_context, complete_state, pushed_files
from ops import testing

CHECK = pathlib.Path(__file__).with_name("oslo_check.py")
LINE = re.compile(r"^(error|warning): \[([^\]]+)\] (\S+): (.*)$")


@dataclasses.dataclass(frozen=True)
class Service:
    """Where a charm writes its oslo.config file and what the service reads in it."""

    container: str
    path: str
    namespaces: tuple[str, ...]
    #: groups named at run time (glance's stores); the checker still type-checks them
    exclude: tuple[str, ...] = ()
    #: deprecations the service warns about in what the charm renders, and why they stay
    known_warnings: frozenset[tuple[str, str]] = frozenset()


SERVICES = {
    "keystone-k8s": Service(
        container="keystone",
        path="/etc/keystone/keystone.conf",
        # upstream's config-generator set for keystone.conf
        namespaces=(
            "keystone",
            "oslo.cache",
            "oslo.log",
            "oslo.messaging",
            "oslo.policy",
            "oslo.db",
            "oslo.middleware",
            "osprofiler",
        ),
    ),
    "glance-k8s": Service(
        container="glance",
        path="/etc/glance/glance-api.conf",
        namespaces=(
            "glance.api",
            "glance.multi_store",
            "glance.store",
            "oslo.concurrency",
            "oslo.db",
            "oslo.log",
            "oslo.messaging",
            "oslo.middleware",
            "oslo.policy",
            "keystonemiddleware.auth_token",
            "osprofiler",
        ),
        exclude=("filestore", "os_glance_staging_store", "os_glance_tasks_store"),
    ),
    "placement-k8s": Service(
        container="placement",
        path="/etc/placement/placement.conf",
        namespaces=(
            "placement.conf",
            "oslo.log",
            "oslo.db",
            "oslo.policy",
            "oslo.middleware.cors",
            "keystonemiddleware.auth_token",
            "osprofiler",
        ),
    ),
}

#: options that only appear, or change, away from the defaults
NON_DEFAULT_CONFIG: dict[str, dict[str, str | int | float | bool]] = {
    "keystone-k8s": {
        "debug": True,
        "token-expiration": 7200,
        "allow-expired-window": 86400,
        "fernet-max-active-keys": 6,
        "catalog-cache-expiration": 120,
        "workers": 4,
    },
    "glance-k8s": {
        "debug": True,
        "image-size-cap": "20G",
        "disk-formats": "raw,qcow2",
        "import-methods": "glance-direct",
        "workers": 4,
    },
    "placement-k8s": {
        "debug": True,
        "log-level": "WARNING",
        "randomize-allocation-candidates": True,
        "max-allocation-candidates": 100000,
        "allocation-candidates-generation-strategy": "breadth-first",
        "allocation-conflict-retry-count": 20,
    },
}

#: files the charms render that oslo.config does not read
NOT_OSLO = ("uwsgi.ini", "logging.conf", "paste.ini")


@dataclasses.dataclass(frozen=True)
class Result:
    """What oslo_check.py said about one file."""

    returncode: int
    stdout: str
    stderr: str

    def lines(self, severity: str) -> set[tuple[str, str]]:
        """(section, option) of each problem of this severity."""
        found = set()
        for line in self.stdout.splitlines():
            match = LINE.match(line)
            if match and match.group(1) == severity:
                found.add((match.group(2), match.group(3)))
        return found


def check(python: pathlib.Path, service: Service, path: pathlib.Path) -> Result:
    argv = [str(python), str(CHECK)]
    argv += [arg for namespace in service.namespaces for arg in ("--namespace", namespace)]
    argv += [arg for group in service.exclude for arg in ("--exclude-group", group)]
    done = subprocess.run([*argv, str(path)], capture_output=True, text=True, timeout=180, check=False)
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def python(venv: pathlib.Path) -> pathlib.Path:
    return venv / "bin" / "python"


@pytest.fixture
def fake_keystone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keystone's identity provider talks to keystone's API: an in-memory one answers instead."""
    for path in (REPO / "charms" / "keystone-k8s" / "src", REPO / "tests" / "unit" / "keystone"):
        monkeypatch.syspath_prepend(str(path))
    import keystone_api
    from fake_keystone import FakeKeystone

    monkeypatch.setattr(keystone_api, "KeystoneAPI", FakeKeystone())


def render(charm: str, root: pathlib.Path, **kwargs: Any) -> dict[str, str]:
    """Every file the charm writes into its workload container, once active."""
    ctx = charm_context(charm)
    state = complete_state(charm, root, execs=[testing.Exec([], stdout="")], **kwargs)
    out = ctx.run(ctx.on.config_changed(), state)
    assert isinstance(out.unit_status, ops.ActiveStatus), f"{charm}: {out.unit_status}"
    return pushed_files(out, ctx, SERVICES[charm].container)


def oslo_files(files: dict[str, str]) -> dict[str, str]:
    return {
        path: text
        for path, text in files.items()
        if path.startswith("/etc/") and path.endswith((".conf", ".ini")) and not path.endswith(NOT_OSLO)
    }


#: the states rendered: what each adds to complete_state()
CASES: dict[str, Callable[[str], dict[str, Any]]] = {
    "all-relations": lambda charm: {},
    "mandatory-relations": lambda charm: {"mandatory_only": True},
    "non-default-config": lambda charm: {"config": NON_DEFAULT_CONFIG[charm]},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("charm", list(SERVICES))
@pytest.mark.usefixtures("fake_keystone")
def test_rendered_config_is_valid_for_the_service(
    charm: str, case: str, python: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    service = SERVICES[charm]
    files = render(charm, tmp_path / "charm", **CASES[case](charm))

    # every oslo-style file the charm writes is the one checked here
    assert set(oslo_files(files)) == {service.path}
    conf = tmp_path / pathlib.PurePosixPath(service.path).name
    conf.write_text(files[service.path])
    result = check(python, service, conf)

    assert result.returncode == 0, f"{charm} {service.path}:\n{result.stdout}{result.stderr}"
    assert result.lines("error") == set()
    assert result.lines("warning") == service.known_warnings, result.stdout
    summary = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"\d+ options checked in \d+ sections", summary), result.stdout
    if case == "non-default-config":
        text = files[service.path]
        assert "debug = true" in text
        assert {
            "keystone-k8s": "expiration = 7200",
            "glance-k8s": f"image_size_cap = {20 * 1024**3}",
            "placement-k8s": "allocation_candidates_generation_strategy = breadth-first",
        }[charm] in text


# -- the checker rejects what the services would reject ---------------------------------


def add_line(text: str, section: str, line: str) -> str:
    header = f"[{section}]\n"
    assert text.count(header) == 1, f"no single {header.strip()} in the rendered file"
    return text.replace(header, f"{header}{line}\n")


def set_value(text: str, option: str, value: str) -> str:
    changed, count = re.subn(rf"^{re.escape(option)} = .*$", f"{option} = {value}", text, count=1, flags=re.M)
    assert count == 1, f"{option} is not in the rendered file"
    return changed


@dataclasses.dataclass(frozen=True)
class Mutation:
    """A broken edit of a rendered file and the one error it must give."""

    charm: str
    what: str
    edit: Callable[[str], str]
    #: "[section] option" the error names
    where: str
    #: words of the error's message
    words: str


MUTATIONS = [
    Mutation(
        "keystone-k8s",
        "unknown option",
        lambda t: add_line(t, "token", "expiraton = 60"),
        "[token] expiraton",
        "unknown",
    ),
    Mutation(
        "keystone-k8s",
        "unknown section",
        lambda t: t + "\n[tokens]\nexpiration = 60\n",
        "[tokens] expiration",
        "unknown",
    ),
    Mutation(
        "keystone-k8s",
        "wrong type",
        lambda t: set_value(t, "expiration", "soon"),
        "[token] expiration",
        "invalid value 'soon'",
    ),
    Mutation(
        "keystone-k8s",
        "wrong boolean",
        lambda t: set_value(t, "debug", "maybe"),
        "[DEFAULT] debug",
        "invalid value 'maybe'",
    ),
    Mutation(
        "keystone-k8s",
        "not a choice",
        lambda t: add_line(t, "identity", "password_hash_algorithm = md5"),
        "[identity] password_hash_algorithm",
        "invalid value 'md5'",
    ),
    Mutation(
        "glance-k8s",
        "unknown option",
        lambda t: add_line(t, "DEFAULT", "no_such_option = 1"),
        "[DEFAULT] no_such_option",
        "unknown",
    ),
    Mutation(
        "glance-k8s",
        "bad port",
        lambda t: add_line(t, "DEFAULT", "bind_port = 70000"),
        "[DEFAULT] bind_port",
        "invalid value '70000'",
    ),
    Mutation(
        "glance-k8s",
        "wrong type in a store group",
        lambda t: add_line(t, "filestore", "filesystem_store_chunk_size = big"),
        "[filestore] filesystem_store_chunk_size",
        "invalid value 'big'",
    ),
    Mutation(
        "glance-k8s",
        "unknown option in a store group",
        lambda t: add_line(t, "os_glance_staging_store", "filesystem_store_dir = /x"),
        "[os_glance_staging_store] filesystem_store_dir",
        "unknown",
    ),
    Mutation(
        "glance-k8s",
        "unknown auth plugin option",
        lambda t: add_line(t, "keystone_authtoken", "usernme = glance"),
        "[keystone_authtoken] usernme",
        "unknown",
    ),
    Mutation(
        "glance-k8s",
        "option set twice",
        lambda t: add_line(t, "paste_deploy", "flavor = keystone+cachemanagement"),
        "[paste_deploy] flavor",
        "set 2 times",
    ),
    Mutation(
        "placement-k8s",
        "wrong type",
        lambda t: set_value(t, "max_allocation_candidates", "lots"),
        "[placement] max_allocation_candidates",
        "invalid value 'lots'",
    ),
    Mutation(
        "placement-k8s",
        "not a choice",
        lambda t: set_value(t, "allocation_candidates_generation_strategy", "random"),
        "[placement] allocation_candidates_generation_strategy",
        "invalid value 'random'",
    ),
    Mutation(
        "placement-k8s",
        "required option missing",
        lambda t: re.sub(r"^connection = .*\n", "", t, flags=re.M),
        "[placement_database] connection",
        "required",
    ),
]


@pytest.mark.parametrize(
    "mutation", [pytest.param(m, id=f"{m.charm}-{m.what.replace(' ', '-')}") for m in MUTATIONS]
)
@pytest.mark.usefixtures("fake_keystone")
def test_the_check_rejects_a_broken_file_naming_the_option(
    mutation: Mutation, python: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    service = SERVICES[mutation.charm]
    rendered = render(mutation.charm, tmp_path / "charm")[service.path]
    conf = tmp_path / pathlib.PurePosixPath(service.path).name
    conf.write_text(mutation.edit(rendered))

    result = check(python, service, conf)

    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"only the broken option is reported:\n{result.stdout}"
    assert errors[0].startswith(f"error: {mutation.where}: "), errors[0]
    assert mutation.words in errors[0], errors[0]
    assert "options checked" not in result.stdout


def test_an_unknown_namespace_is_an_error_not_a_silent_pass(
    python: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    conf = tmp_path / "any.conf"
    conf.write_text("[DEFAULT]\ndebug = true\n")
    service = Service(container="none", path="/none", namespaces=("oslo.log", "oslo.lgo"))

    result = check(python, service, conf)

    assert result.returncode == 1
    assert "unknown namespace 'oslo.lgo'" in result.stdout
