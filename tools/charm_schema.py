"""Validation of a charm's merged charmcraft.yaml.

Two checks, each returning a list of error strings (empty when valid), every
error naming the path of the offending key:

- :func:`charmcraft_errors` validates with charmcraft's own pydantic models
  (the project model ``charmcraft.models.project.CharmcraftProject``, the
  metadata model and ``JujuConfig``): what ``charmcraft pack`` would accept.
  charmcraft accepts anything inside relation specs, containers and resources.
- :func:`strict_errors` is this collection's stricter schema: no unknown key
  anywhere (a misspelled ``optinal:`` is an error), every requires/provides
  endpoint says ``optional:``, config defaults match their types, containers
  name resources that exist, actions and their parameters are described.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from collections.abc import Callable, Mapping
from typing import Any

TOP_LEVEL_KEYS = frozenset(
    {
        "type",
        "name",
        "title",
        "summary",
        "description",
        "links",
        "base",
        "build-base",
        "platforms",
        "parts",
        "assumes",
        "charm-user",
        "containers",
        "devices",
        "extra-bindings",
        "peers",
        "provides",
        "requires",
        "resources",
        "storage",
        "subordinate",
        "terms",
        "config",
        "actions",
        "charm-libs",
        "analysis",
    }
)
REQUIRED_TOP_LEVEL = ("type", "name", "summary", "description", "base", "platforms", "parts")
LINK_KEYS = frozenset({"documentation", "issues", "source", "website", "contact"})
RELATION_KEYS = frozenset({"interface", "optional", "limit", "scope", "description"})
PEER_KEYS = frozenset({"interface", "limit", "scope", "description"})
OPTION_KEYS = frozenset({"type", "default", "description"})
OPTION_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "secret": (str,),
    "int": (int,),
    "float": (int, float),
    "boolean": (bool,),
}
CONTAINER_KEYS = frozenset({"resource", "bases", "mounts"})
MOUNT_KEYS = frozenset({"storage", "location"})
RESOURCE_KEYS = frozenset({"type", "description", "upstream-source", "filename"})
STORAGE_KEYS = frozenset(
    {"type", "description", "location", "shared", "read-only", "minimum-size", "multiple", "properties"}
)
ACTION_KEYS = frozenset(
    {"description", "params", "required", "additionalProperties", "execution-group", "parallel"}
)
PARAM_TYPES = frozenset({"string", "integer", "number", "boolean", "array", "object"})
ENDPOINT_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
ACTION_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def _unknown(path: str, spec: Mapping[str, Any], known: frozenset[str]) -> list[str]:
    return [
        f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})" for key in spec if key not in known
    ]


def _mapping(path: str, value: Any) -> list[str]:
    return [] if isinstance(value, Mapping) else [f"{path}: must be a mapping, not {type(value).__name__}"]


def _text(path: str, value: Any) -> list[str]:
    return [] if isinstance(value, str) and value.strip() else [f"{path}: must be a non-empty string"]


def _type_matches(option_type: str, value: Any) -> bool:
    allowed = OPTION_TYPES[option_type]
    # bool is an int subclass; a boolean default on an int option is a mistake.
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, allowed)


def _relations(meta: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    seen: dict[str, str] = {}
    for kind in ("requires", "provides", "peers"):
        section = meta.get(kind)
        if section is None:
            continue
        if errors_here := _mapping(kind, section):
            errors += errors_here
            continue
        for endpoint, spec in section.items():
            path = f"{kind}.{endpoint}"
            if not ENDPOINT_NAME.match(str(endpoint)):
                errors.append(f"{path}: endpoint names are lower-case words joined by '-'")
            if endpoint in seen:
                errors.append(f"{path}: endpoint also declared under {seen[endpoint]}")
            seen[endpoint] = kind
            if errors_here := _mapping(path, spec):
                errors += errors_here
                continue
            errors += _unknown(path, spec, PEER_KEYS if kind == "peers" else RELATION_KEYS)
            errors += _text(f"{path}.interface", spec.get("interface"))
            if kind != "peers":
                if "optional" not in spec:
                    errors.append(f"{path}: must say 'optional: true' or 'optional: false'")
                elif not isinstance(spec["optional"], bool):
                    errors.append(f"{path}.optional: must be true or false, not {spec['optional']!r}")
            limit = spec.get("limit")
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
                errors.append(f"{path}.limit: must be a positive integer, not {limit!r}")
            if spec.get("scope", "global") not in ("global", "container"):
                errors.append(f"{path}.scope: must be 'global' or 'container', not {spec['scope']!r}")
    return errors


def _config(meta: Mapping[str, Any]) -> list[str]:
    config = meta.get("config")
    if config is None:
        return []
    if errors := _mapping("config", config):
        return errors
    errors = _unknown("config", config, frozenset({"options"}))
    options = config.get("options") or {}
    if errors_here := _mapping("config.options", options):
        return errors + errors_here
    for name, spec in options.items():
        path = f"config.options.{name}"
        if errors_here := _mapping(path, spec):
            errors += errors_here
            continue
        errors += _unknown(path, spec, OPTION_KEYS)
        errors += _text(f"{path}.description", spec.get("description"))
        option_type = spec.get("type")
        if option_type not in OPTION_TYPES:
            errors.append(f"{path}.type: {option_type!r} is not one of {', '.join(OPTION_TYPES)}")
            continue
        if (
            "default" in spec
            and spec["default"] is not None
            and not _type_matches(option_type, spec["default"])
        ):
            errors.append(f"{path}.default: {spec['default']!r} is not a {option_type}")
    return errors


def _resources_and_containers(meta: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    resources = meta.get("resources") or {}
    storage = meta.get("storage") or {}
    errors += _mapping("resources", resources) + _mapping("storage", storage)
    if errors:
        return errors
    for name, spec in resources.items():
        path = f"resources.{name}"
        if errors_here := _mapping(path, spec):
            errors += errors_here
            continue
        errors += _unknown(path, spec, RESOURCE_KEYS)
        if spec.get("type") == "oci-image":
            errors += _text(f"{path}.upstream-source", spec.get("upstream-source"))
        elif spec.get("type") == "file":
            errors += _text(f"{path}.filename", spec.get("filename"))
        else:
            errors.append(f"{path}.type: must be 'oci-image' or 'file', not {spec.get('type')!r}")
    for name, spec in storage.items():
        path = f"storage.{name}"
        if errors_here := _mapping(path, spec):
            errors += errors_here
            continue
        errors += _unknown(path, spec, STORAGE_KEYS)
        if spec.get("type") not in ("filesystem", "block"):
            errors.append(f"{path}.type: must be 'filesystem' or 'block', not {spec.get('type')!r}")
    containers = meta.get("containers") or {}
    if errors_here := _mapping("containers", containers):
        return errors + errors_here
    for name, spec in containers.items():
        path = f"containers.{name}"
        if errors_here := _mapping(path, spec):
            errors += errors_here
            continue
        errors += _unknown(path, spec, CONTAINER_KEYS)
        resource = spec.get("resource")
        if resource is None and "bases" not in spec:
            errors.append(f"{path}: needs 'resource' (or 'bases')")
        elif resource is not None and resource not in resources:
            errors.append(f"{path}.resource: {resource!r} is not declared under resources")
        elif resource is not None and resources[resource].get("type") != "oci-image":
            errors.append(f"{path}.resource: {resource!r} is not an oci-image resource")
        for i, mount in enumerate(spec.get("mounts") or []):
            mount_path = f"{path}.mounts[{i}]"
            if errors_here := _mapping(mount_path, mount):
                errors += errors_here
                continue
            errors += _unknown(mount_path, mount, MOUNT_KEYS)
            if mount.get("storage") not in storage:
                errors.append(f"{mount_path}.storage: {mount.get('storage')!r} is not declared under storage")
    return errors


def _actions(meta: Mapping[str, Any]) -> list[str]:
    actions = meta.get("actions")
    if actions is None:
        return []
    if errors := _mapping("actions", actions):
        return errors
    errors = []
    for name, spec in actions.items():
        path = f"actions.{name}"
        if not ACTION_NAME.match(str(name)):
            errors.append(f"{path}: action names are lower-case words joined by '-'")
        if errors_here := _mapping(path, spec):
            errors += errors_here
            continue
        errors += _unknown(path, spec, ACTION_KEYS)
        errors += _text(f"{path}.description", spec.get("description"))
        params = spec.get("params") or {}
        if errors_here := _mapping(f"{path}.params", params):
            errors += errors_here
            continue
        for param, pspec in params.items():
            ppath = f"{path}.params.{param}"
            if errors_here := _mapping(ppath, pspec):
                errors += errors_here
                continue
            errors += _text(f"{ppath}.description", pspec.get("description"))
            if pspec.get("type") not in PARAM_TYPES:
                errors.append(
                    f"{ppath}.type: {pspec.get('type')!r} is not one of {', '.join(sorted(PARAM_TYPES))}"
                )
        for required in spec.get("required") or []:
            if required not in params:
                errors.append(f"{path}.required: {required!r} is not a parameter")
    return errors


def strict_errors(meta: Mapping[str, Any], *, name: str | None = None) -> list[str]:
    """Every way ``meta`` (a merged charmcraft.yaml) breaks this collection's schema."""
    if errors := _mapping("charmcraft.yaml", meta):
        return errors
    errors = _unknown("charmcraft.yaml", meta, TOP_LEVEL_KEYS)
    errors += [f"charmcraft.yaml: missing {key!r}" for key in REQUIRED_TOP_LEVEL if key not in meta]
    if meta.get("type") != "charm":
        errors.append(f"type: must be 'charm', not {meta.get('type')!r}")
    if name is not None and meta.get("name") != name:
        errors.append(f"name: {meta.get('name')!r} differs from the charm's directory {name!r}")
    for key in ("summary", "description"):
        errors += _text(key, meta.get(key))
    if isinstance(meta.get("links"), Mapping):
        errors += _unknown("links", meta["links"], LINK_KEYS)
    errors += _relations(meta)
    errors += _config(meta)
    errors += _resources_and_containers(meta)
    errors += _actions(meta)
    return errors


def charmcraft_available() -> bool:
    """Whether charmcraft's own models can be imported here."""
    return importlib.util.find_spec("charmcraft") is not None


def charmcraft_errors(meta: Mapping[str, Any]) -> list[str]:
    """Errors charmcraft's own project, metadata and config models find in ``meta``."""
    import pydantic
    from charmcraft.models.config import JujuConfig
    from charmcraft.models.metadata import CharmMetadata
    from charmcraft.models.project import CharmcraftProject
    from charmcraft.parts import setup_parts

    # The project model checks part plugins against craft-parts' registry.
    setup_parts()
    errors: list[str] = []

    def collect(check: Callable[[], object]) -> None:
        try:
            check()
        except pydantic.ValidationError as e:
            for error in e.errors():
                location = ".".join(str(part) for part in error["loc"]) or "charmcraft.yaml"
                errors.append(f"{location}: {error['msg']} (charmcraft)")
        except ValueError as e:
            errors.append(f"charmcraft.yaml: {e} (charmcraft)")

    def project() -> None:
        charm = CharmcraftProject.unmarshal(copy.deepcopy(dict(meta)))
        CharmMetadata.from_charm(charm)  # pyright: ignore[reportArgumentType]

    collect(project)
    if meta.get("config") is not None:
        collect(lambda: JujuConfig.model_validate(copy.deepcopy(meta["config"])))
    return errors
