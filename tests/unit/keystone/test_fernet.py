"""Fernet key repositories: keystone's rotation semantics."""

from __future__ import annotations

import base64

import fernet
import pytest


def test_setup_is_a_staged_and_a_primary_key() -> None:
    keys = fernet.setup()
    assert sorted(keys) == [0, 1]
    assert fernet.primary(keys) == 1
    assert all(len(base64.urlsafe_b64decode(k)) == 32 for k in keys.values())


def test_rotation_promotes_the_staged_key_and_keeps_max_active_keys() -> None:
    keys = fernet.setup()
    staged = keys[0]
    rotated = fernet.rotate(keys, 3)
    assert sorted(rotated) == [0, 1, 2]
    assert rotated[2] == staged and rotated[1] == keys[1] and rotated[0] not in keys.values()
    again = fernet.rotate(rotated, 3)
    # the oldest secondary (1) goes: staged + primary + one secondary
    assert sorted(again) == [0, 2, 3]
    assert again[3] == rotated[0]


def test_rotation_with_more_active_keys() -> None:
    keys = fernet.setup()
    for _ in range(5):
        keys = fernet.rotate(keys, 5)
    assert sorted(keys) == [0, 3, 4, 5, 6]


def test_secret_content_round_trip_and_garbage() -> None:
    keys = fernet.setup()
    content = fernet.to_content(keys)
    assert set(content) == {"fernet-0", "fernet-1"}
    assert fernet.from_content(content) == keys
    assert fernet.from_content({"fernet-x": "k", "other": "v", "fernet-2": ""}) == {}
    assert fernet.rotate({}, 3).keys() == {0, 1}
    with pytest.raises(ValueError):
        fernet.rotate(keys, 2)
