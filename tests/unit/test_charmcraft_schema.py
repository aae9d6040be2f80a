"""Every charm's merged charmcraft.yaml is valid, and the validation catches mistakes.

The merged file is what ``tox -e build`` packs. It is checked with charmcraft's
own models when charmcraft is importable (it is in the tox environments) and
always with the collection's stricter schema (tools/charm_schema.py).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from charm_schema import charmcraft_available, charmcraft_errors, strict_errors
from openstack_charms.testing import CHARMS, merged_charmcraft

CHARM_NAMES = sorted(p.parent.name for p in CHARMS.glob("*/charmcraft.yaml"))


def validation_errors(meta: dict[str, Any], name: str | None = None) -> list[str]:
    errors = strict_errors(meta, name=name)
    if charmcraft_available():
        errors += charmcraft_errors(meta)
    return errors


def test_there_are_charms_to_check():
    assert CHARM_NAMES, f"no charms/*/charmcraft.yaml under {CHARMS}"


@pytest.mark.parametrize("name", CHARM_NAMES)
def test_merged_charmcraft_yaml_is_valid(name: str):
    meta = merged_charmcraft(name)
    assert validation_errors(meta, name) == []


@pytest.mark.parametrize("name", CHARM_NAMES)
def test_charm_keeps_only_its_own_keys(name: str):
    """What every charm shares comes from the top-level file; a charm overriding it drifts."""
    own = yaml.safe_load((CHARMS / name / "charmcraft.yaml").read_text()) or {}
    for key in ("type", "base", "platforms", "parts"):
        assert key not in own, f"charms/{name}/charmcraft.yaml sets {key!r}, shared in ./charmcraft.yaml"


# -- the validation itself ------------------------------------------------------


def minimal_charm() -> dict[str, Any]:
    """A small but complete k8s charm, valid for both checks."""
    return {
        "type": "charm",
        "name": "demo-k8s",
        "summary": "A demo service",
        "description": "Runs the demo API.",
        "base": "ubuntu@24.04",
        "platforms": {"amd64": None},
        "parts": {"charm": {"plugin": "charm", "source": "."}},
        "assumes": ["k8s-api"],
        "containers": {
            "demo": {"resource": "demo-image", "mounts": [{"storage": "data", "location": "/srv"}]}
        },
        "resources": {
            "demo-image": {
                "type": "oci-image",
                "description": "The demo API",
                "upstream-source": "quay.io/openstack.kolla/demo:2026.1-ubuntu-noble",
            }
        },
        "storage": {"data": {"type": "filesystem", "minimum-size": "1G"}},
        "peers": {"peers": {"interface": "demo-peer"}},
        "requires": {"database": {"interface": "mysql_client", "limit": 1, "optional": False}},
        "provides": {"demo": {"interface": "demo", "optional": True}},
        "config": {
            "options": {
                "workers": {"type": "int", "default": 2, "description": "Worker processes."},
                "debug": {"type": "boolean", "default": False, "description": "Debug logging."},
                "ratio": {"type": "float", "default": 1, "description": "A ratio."},
                "region": {"type": "string", "default": "RegionOne", "description": "Region."},
                "key": {"type": "secret", "description": "A secret."},
            }
        },
        "actions": {
            "rotate": {
                "description": "Rotate the keys.",
                "params": {"force": {"type": "boolean", "description": "Even if fresh."}},
            }
        },
    }


def test_minimal_charm_is_valid():
    assert validation_errors(minimal_charm(), "demo-k8s") == []


def test_misspelled_optional_is_caught():
    meta = minimal_charm()
    spec = meta["requires"]["database"]
    spec["optinal"] = spec.pop("optional")
    errors = validation_errors(meta)
    assert (
        "requires.database: unknown key 'optinal' (known: description, interface, limit, optional, scope)"
        in errors
    )
    assert "requires.database: must say 'optional: true' or 'optional: false'" in errors


def test_missing_optional_on_a_provider_is_caught():
    meta = minimal_charm()
    del meta["provides"]["demo"]["optional"]
    assert validation_errors(meta) == ["provides.demo: must say 'optional: true' or 'optional: false'"]


def test_bad_option_type_is_caught():
    meta = minimal_charm()
    meta["config"]["options"]["workers"]["type"] = "integer"
    errors = validation_errors(meta)
    assert (
        "config.options.workers.type: 'integer' is not one of string, secret, int, float, boolean" in errors
    )
    if charmcraft_available():
        assert any(e.startswith("options.workers: ") and e.endswith("(charmcraft)") for e in errors), errors


@pytest.mark.parametrize(
    ("option", "default", "kind"),
    [
        ("workers", "2", "int"),
        ("workers", True, "int"),
        ("debug", "false", "boolean"),
        ("region", 5, "string"),
    ],
)
def test_default_of_the_wrong_type_is_caught(option: str, default: object, kind: str):
    meta = minimal_charm()
    meta["config"]["options"][option]["default"] = default
    assert f"config.options.{option}.default: {default!r} is not a {kind}" in validation_errors(meta)


def test_unknown_top_level_key_is_caught():
    meta = minimal_charm()
    meta["requries"] = {}
    errors = validation_errors(meta)
    assert any(e.startswith("charmcraft.yaml: unknown key 'requries'") for e in errors), errors


def test_unknown_key_in_option_and_missing_interface_are_caught():
    meta = minimal_charm()
    meta["config"]["options"]["region"]["defualt"] = "RegionTwo"
    del meta["requires"]["database"]["interface"]
    errors = validation_errors(meta)
    assert any(e.startswith("config.options.region: unknown key 'defualt'") for e in errors), errors
    assert "requires.database.interface: must be a non-empty string" in errors


def test_container_naming_a_missing_resource_is_caught():
    meta = minimal_charm()
    meta["containers"]["demo"]["resource"] = "demo-img"
    meta["containers"]["demo"]["mounts"][0]["storage"] = "datta"
    errors = validation_errors(meta)
    assert "containers.demo.resource: 'demo-img' is not declared under resources" in errors
    assert "containers.demo.mounts[0].storage: 'datta' is not declared under storage" in errors


def test_resource_without_upstream_source_is_caught():
    meta = minimal_charm()
    del meta["resources"]["demo-image"]["upstream-source"]
    assert validation_errors(meta) == ["resources.demo-image.upstream-source: must be a non-empty string"]


def test_action_without_description_is_caught():
    meta = minimal_charm()
    action = copy.deepcopy(meta["actions"]["rotate"])
    del action["description"]
    del action["params"]["force"]["description"]
    meta["actions"]["rotate"] = action
    errors = validation_errors(meta)
    assert "actions.rotate.description: must be a non-empty string" in errors
    assert "actions.rotate.params.force.description: must be a non-empty string" in errors


def test_name_must_match_the_directory():
    assert validation_errors(minimal_charm(), "other-k8s") == [
        "name: 'demo-k8s' differs from the charm's directory 'other-k8s'"
    ]
