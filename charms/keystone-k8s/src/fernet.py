"""Fernet key repositories (token and credential keys) with keystone's own semantics.

A repository is a mapping index -> key. Key ``0`` is the *staged* key (the next
primary, already known to every unit so tokens it signs validate everywhere),
the highest index is the *primary* (signs new tokens), the others are
*secondary* (only validate). Rotation promotes the staged key to primary under a
new highest index, stages a fresh key 0 and drops the oldest secondaries so that
at most ``max_active_keys`` keys remain, as ``keystone-manage fernet_rotate`` does.

Keys travel in a Juju secret whose content keys must be words, so index ``N`` is
stored under ``fernet-N``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping

PREFIX = "fernet-"


def new_key() -> str:
    """Return a fresh Fernet key (32 random bytes, URL-safe base64)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def setup() -> dict[int, str]:
    """Return a new repository as ``keystone-manage fernet_setup`` leaves it: staged 0 and primary 1."""
    return {0: new_key(), 1: new_key()}


def rotate(keys: Mapping[int, str], max_active_keys: int) -> dict[int, str]:
    """Return ``keys`` rotated once, keeping at most ``max_active_keys`` (at least 3) keys."""
    if max_active_keys < 3:
        raise ValueError("max_active_keys must be at least 3")
    if 0 not in keys:
        return setup()
    rotated = {index: key for index, key in keys.items() if index != 0}
    rotated[max(keys) + 1] = keys[0]
    # the fresh staged key is not counted here: keep max_active_keys - 1 of the others
    for index in sorted(rotated)[: max(0, len(rotated) - (max_active_keys - 1))]:
        del rotated[index]
    rotated[0] = new_key()
    return dict(sorted(rotated.items()))


def primary(keys: Mapping[int, str]) -> int:
    """Return the index of the primary key."""
    return max(keys)


def to_content(keys: Mapping[int, str]) -> dict[str, str]:
    """Return a repository as secret content."""
    return {f"{PREFIX}{index}": key for index, key in sorted(keys.items())}


def from_content(content: Mapping[str, str]) -> dict[int, str]:
    """Return the repository held in secret content (entries that are not keys are ignored)."""
    keys: dict[int, str] = {}
    for name, key in content.items():
        suffix = name.removeprefix(PREFIX)
        if name.startswith(PREFIX) and suffix.isdigit() and key:
            keys[int(suffix)] = key
    return keys
