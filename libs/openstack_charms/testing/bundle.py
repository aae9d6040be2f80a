"""Bundles and their overlays, merged as ``juju deploy <bundle> --overlay <file>`` merges them.

A bundle file is a base document followed by overlay documents; ``--overlay``
files add more overlay documents after those. Each overlay, in order:

- an application already deployed takes the overlay's keys (a mapping, such
  as ``options`` or ``resources``, key by key; any other value replaced);
- a new application is added (it must name its charm);
- an application set to null is removed, with every relation it is part of;
- its relations are added, except those already there (in either order).

Offers are taken from overlays only, so they stay in overlay documents here
too: the merged base has none, and every offer comes back in one trailing
overlay document.
"""

from __future__ import annotations

import copy
import itertools
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from . import REPO

BUNDLES = REPO / "bundles"
OVERLAYS = BUNDLES / "overlays"

Doc = dict[str, Any]


def load(path: pathlib.Path) -> list[Doc]:
    """The YAML documents of a bundle or overlay file (empty documents left out)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def overlay_files() -> list[pathlib.Path]:
    """Every overlay of bundles/overlays/, by name."""
    return sorted(OVERLAYS.glob("*.yaml"))


def overlay_combinations() -> list[tuple[pathlib.Path, ...]]:
    """Every combination of the overlays, from none to all of them, each in name order."""
    files = overlay_files()
    return [combo for n in range(len(files) + 1) for combo in itertools.combinations(files, n)]


def combination_id(combo: Sequence[pathlib.Path]) -> str:
    """A test id for a combination: ``none``, ``tls``, ``ha+tls``..."""
    return "+".join(p.stem for p in combo) or "none"


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(over)


def _relation_key(relation: Sequence[str]) -> frozenset[str]:
    return frozenset(str(end) for end in relation)


def apply_overlays(bundle_docs: Sequence[Doc], overlay_docs: Iterable[Doc] = ()) -> list[Doc]:
    """The bundle as Juju deploys it: ``[base, offers]`` (``offers`` only where there are any).

    ``bundle_docs`` is the bundle file (base, then its own overlays);
    ``overlay_docs`` the documents of the ``--overlay`` files, in order.
    """
    base = copy.deepcopy(dict(bundle_docs[0]))
    applications: dict[str, Any] = dict(base.get("applications") or {})
    relations: list[list[str]] = [list(r) for r in base.get("relations") or []]
    offers: dict[str, dict[str, Any]] = {}
    for overlay in [*bundle_docs[1:], *overlay_docs]:
        for app, spec in (overlay.get("applications") or {}).items():
            if spec is None:
                applications.pop(app, None)
                offers.pop(app, None)
                relations = [r for r in relations if app not in {str(e).split(":")[0] for e in r}]
                continue
            spec = dict(spec)
            if "offers" in spec:
                offers[app] = _merge(offers.get(app, {}), spec.pop("offers"))
            applications[app] = _merge(applications.get(app, {}), spec)
        known = {_relation_key(r) for r in relations}
        for relation in overlay.get("relations") or []:
            if _relation_key(relation) not in known:
                known.add(_relation_key(relation))
                relations.append(list(relation))
    base["applications"] = applications
    base["relations"] = relations
    docs = [base]
    if offers:
        docs.append({"applications": {app: {"offers": o} for app, o in offers.items()}})
    return docs


def overlay_errors(bundle_docs: Sequence[Doc], overlay_docs: Iterable[Doc]) -> list[str]:
    """What Juju would refuse in the overlays before merging: new applications without a charm.

    Relations naming applications or endpoints that do not exist are the merged
    bundle's errors (the bundle checks find them there).
    """
    errors = []
    known = set(bundle_docs[0].get("applications") or {})
    for overlay in [*bundle_docs[1:], *overlay_docs]:
        for app, spec in (overlay.get("applications") or {}).items():
            if spec is None:
                known.discard(app)
            elif app not in known and "charm" not in spec:
                errors.append(f"overlay: application {app!r} is not in the bundle and names no charm")
            else:
                known.add(app)
    return errors


def deployed(bundle: pathlib.Path, overlays: Iterable[pathlib.Path] = ()) -> list[Doc]:
    """The documents of ``bundle`` with the overlay files applied."""
    return apply_overlays(load(bundle), [doc for path in overlays for doc in load(path)])
