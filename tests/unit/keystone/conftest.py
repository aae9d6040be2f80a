"""keystone-k8s tests: the charm's own modules on the path and an in-memory Keystone."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

import pytest

SRC = pathlib.Path(__file__).resolve().parents[3] / "charms" / "keystone-k8s" / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import keystone_api  # noqa: E402
from fake_keystone import FakeKeystone  # noqa: E402


@pytest.fixture
def keystone(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKeystone]:
    fake = FakeKeystone()
    monkeypatch.setattr(keystone_api, "KeystoneAPI", fake)
    yield fake
