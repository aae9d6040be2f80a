"""tools/build.py: requirements derived from the wiring, pins as tested, what the import check sees.

Nothing here makes a venv or reaches an index: the venv's import check itself
runs in ``tox -e build``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import pathlib
import sys

import pytest
from openstack_charms.relations import wiring
from openstack_charms.testing import CHARMS, merged_charmcraft

import build

ALL = sorted(p.name for p in CHARMS.iterdir() if (p / "charmcraft.yaml").exists())
TLS = "charmlibs-interfaces-tls-certificates==1.12.0"
CA = "charmlibs-interfaces-certificate-transfer==1.1.0"
# Each declares certificates (glance and placement also receive-ca-cert); none imports
# dpcharmlibs-interfaces any more.
EXPECTED = {
    "keystone-k8s": [*wiring.RUNTIME, TLS],
    "glance-k8s": [*wiring.RUNTIME, CA, TLS],
    "placement-k8s": [*wiring.RUNTIME, CA, TLS],
    # its ovsdb-cms-relay provider's own wire brings lightkube (the LoadBalancer service)
    "ovn-relay-k8s": [*wiring.RUNTIME, CA, TLS, "lightkube-models==1.37.0.8", "lightkube==1.0.1"],
}


def derived(charm: str) -> list[str]:
    return wiring.requirements(build.charm_wiring(charm, merged_charmcraft(charm)))


@pytest.mark.parametrize("charm", sorted(EXPECTED))
def test_requirements_follow_the_declared_endpoints(charm: str) -> None:
    assert derived(charm) == EXPECTED[charm]


def test_keystone_needs_the_tls_library_because_of_its_certificates_endpoint() -> None:
    declared = set(wiring.declared(merged_charmcraft("keystone-k8s")))
    assert ("requires", "certificates", "tls-certificates") in declared
    assert TLS in derived("keystone-k8s")


@pytest.mark.parametrize("charm", ALL)
def test_every_charm_gets_the_runtime_first_and_nothing_it_does_not_import(charm: str) -> None:
    requirements = derived(charm)
    assert requirements[: len(wiring.RUNTIME)] == list(wiring.RUNTIME)
    assert not any(r.startswith("dpcharmlibs-interfaces") for r in requirements)
    build.check_pins(requirements)


def test_no_charm_keeps_a_requirements_txt_by_hand() -> None:
    assert not sorted(CHARMS.glob("*/requirements.txt"))


def _findable(module: str, src: pathlib.Path) -> bool:
    # A charm's own modules (own_wiring names "charm") sit in its src/, not on the test path.
    top = module.split(".")[0]
    if importlib.machinery.PathFinder.find_spec(top, [str(src)]) is not None:
        return True
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("charm", ALL)
def test_every_wired_module_exists(charm: str) -> None:
    src = CHARMS / charm / "src"
    modules = {m for w in build.charm_wiring(charm, merged_charmcraft(charm)).values() for m in w.modules}
    assert "charm" not in modules or (src / "charm.py").is_file()
    assert [m for m in sorted(modules) if not _findable(m, src)] == []


def test_every_module_of_the_table_exists() -> None:
    modules = {m for w in wiring.TABLE.values() for m in w.modules}
    assert [m for m in sorted(modules) if importlib.util.find_spec(m) is None] == []


def test_every_pin_of_the_table_is_what_the_tests_ran_with() -> None:
    build.check_pins([*wiring.RUNTIME, *(r for w in wiring.TABLE.values() for r in w.requirements)])


@pytest.fixture
def dev(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "requirements-dev.txt"
    path.write_text(
        "# what the tests ran with\nops==3.9.0\nJinja2==3.1.6\n"
        "charmlibs-interfaces-tls_certificates==1.12.0\n"
    )
    return path


def test_pins_equal_to_requirements_dev_pass_whatever_the_spelling(dev: pathlib.Path) -> None:
    build.check_pins(["ops==3.9.0", "jinja2==3.1.6", TLS], dev=dev)


def test_a_pin_other_than_requirements_dev_names_both(dev: pathlib.Path) -> None:
    with pytest.raises(build.BuildError) as caught:
        build.check_pins(["ops==3.8.0", "jinja2==3.1.6"], dev=dev)
    assert "ops==3.8.0" in str(caught.value)
    assert "ops==3.9.0" in str(caught.value)
    assert "jinja2" not in str(caught.value)


def test_a_requirement_the_tests_did_not_run_with_is_refused(dev: pathlib.Path) -> None:
    with pytest.raises(build.BuildError, match=r"pydantic==2\.0\.0 is not in requirements-dev\.txt"):
        build.check_pins(["ops==3.9.0", "pydantic==2.0.0"], dev=dev)


def test_one_package_pinned_twice_is_refused(dev: pathlib.Path) -> None:
    with pytest.raises(build.BuildError, match=r"ops==3\.9\.0 and ops==3\.8\.0 both asked for"):
        build.check_pins(["ops==3.9.0", "ops==3.8.0"], dev=dev)


def test_an_unpinned_requirement_is_refused(dev: pathlib.Path) -> None:
    with pytest.raises(build.BuildError, match=r"ops>=3\.9 is not pinned with ==; .* has ops==3\.9\.0"):
        build.check_pins(["ops>=3.9"], dev=dev)


@pytest.mark.parametrize("charm", ALL)
def test_staging_writes_the_derived_requirements(charm: str, tmp_path: pathlib.Path) -> None:
    out = build.stage(charm, root=tmp_path)
    assert out == tmp_path / charm
    lines = [line for line in (out / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines == derived(charm)
    assert not (out / "lib" / "openstack_charms" / "testing").exists()
    wired = build.charm_wiring(charm, merged_charmcraft(charm))
    for module in (m for w in wired.values() for m in w.modules if m.startswith("charms.")):
        assert (out / "lib" / pathlib.Path(*module.split("."))).with_suffix(".py").is_file(), module


def test_a_staged_module_that_cannot_import_is_named_with_its_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "src" / "charm.py").write_text("import helper\n")
    (tmp_path / "src" / "helper.py").write_text("import not_a_module_anywhere\n")
    (tmp_path / "src" / "fine.py").write_text("")
    modules = build.src_modules(tmp_path / "src")
    assert modules == ["charm", "fine", "helper"]
    failures = build.import_failures(sys.executable, tmp_path, modules)
    assert failures == [
        "charm: ModuleNotFoundError: No module named 'not_a_module_anywhere'",
        "helper: ModuleNotFoundError: No module named 'not_a_module_anywhere'",
    ]
    assert not list(tmp_path.rglob("__pycache__"))


def test_the_import_check_sees_only_the_staged_tree(tmp_path: pathlib.Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "lib").mkdir()
    # build.py is importable from the test environment's path, never from a charm's
    assert build.import_failures(sys.executable, tmp_path, ["build"]) == [
        "build: ModuleNotFoundError: No module named 'build'"
    ]


def test_a_machine_charm_gets_what_its_host_applier_imports() -> None:
    # demo-host (tests/charms) is a machine charm: apt, snap and systemd come with its kind
    wired = build.charm_wiring("demo-host", merged_charmcraft("demo-host"))
    assert wiring.requirements(wired) == [
        *wiring.RUNTIME,
        "charmlibs-apt==1.0.0.post1",
        "charmlibs-snap==2.0.0",
        "charmlibs-systemd==1.0.0.post0",
    ]
    assert "openstack_charms.host" in wired["(applier)"].modules
    build.check_pins(wiring.requirements(wired))
