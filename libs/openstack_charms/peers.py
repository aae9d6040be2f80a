"""Application state: facts the leader decides and every unit reads, and app-owned secrets.

Kept in the peer relation's application databag, not in a unit's local state,
so that a new leader finds what the previous one did and re-does nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import ops

from .relations.base import update_databag
from .status import Waiting

if TYPE_CHECKING:
    from .relations.base import HandlerHost


class Peers:
    """Leader-written app data and app-owned secrets over the peer relation ``endpoint``."""

    def __init__(self, host: HandlerHost, endpoint: str) -> None:
        self.host = host
        self.endpoint = endpoint
        self._pending: dict[str, str | None] = {}
        self._data: ops.RelationDataContent | None = None
        self._read = False
        #: secret contents read in this hook, by label
        self._secrets: dict[str, dict[str, str]] = {}

    @property
    def context(self) -> ops.RelationDataContent | None:
        """The peer application databag, or ``None`` before the peer relation exists."""
        if not self._read:
            self._read = True
            relation = self.host.model.get_relation(self.endpoint)
            self._data = relation.data[self.host.app] if relation else None
        return self._data

    def _require(self) -> ops.RelationDataContent:
        data = self.context
        if data is None:
            raise Waiting(f"waiting for the peer relation '{self.endpoint}'")
        return data

    def get(self, key: str) -> str | None:
        """A value the leader set (or is setting in this hook), or ``None``."""
        if key in self._pending:
            return self._pending[key]
        data = self.context
        return data.get(key) if data is not None else None

    def set(self, key: str, value: str | None) -> None:
        """Set (or with ``None`` remove) a value; leader only, written once at the end of the hook."""
        self._require()
        self._pending[key] = value

    def flush(self) -> None:
        """Write what this hook set in one ``relation-set`` (changed keys only)."""
        data = self.context
        if data is not None and self._pending:
            update_databag(data, self._pending)
        self._pending = {}

    def secret(
        self,
        label: str,
        generate: Callable[[], dict[str, str]],
        *,
        rotate: ops.SecretRotate | None = None,
        what: str | None = None,
    ) -> dict[str, str]:
        """Content of the app-owned secret ``label``; the leader creates it once.

        The secret's id is kept in peer app data: every unit (and every future
        leader) finds the same secret, so nothing is regenerated on leader change.
        A digest of the current content sits beside it, so a unit moves to the
        newest revision (a second ``secret-get``) only when the leader changed it:
        units of the owning application get no secret-changed event for that.
        """
        if label in self._secrets:
            return self._secrets[label]
        key = f"{label}-secret-id"
        secret_id = self.get(key)
        if secret_id is None:
            if not self.host.is_leader:
                raise Waiting(f"waiting for the leader to create {what or label}")
            content = generate()
            secret = self.host.app.add_secret(content, label=label, rotate=rotate)
            self.set(key, secret.id)
            self.set(f"{label}-digest", _digest(content))
            self._secrets[label] = content
            return content
        secret = self.host.model.get_secret(id=secret_id, label=label)
        content = secret.get_content()
        expected = self.get(f"{label}-digest")
        if expected is None or _digest(content) != expected:
            content = secret.get_content(refresh=True)
            if self.host.is_leader:
                self.set(f"{label}-digest", _digest(content))
        self._secrets[label] = content
        return content

    def update_secret(self, label: str, content: dict[str, str]) -> None:
        """Replace the content of the app-owned secret ``label``; leader only."""
        secret_id = self.get(f"{label}-secret-id")
        if secret_id is None:
            raise Waiting(f"secret {label} does not exist yet")
        secret = self.host.model.get_secret(id=secret_id, label=label)
        if secret.get_content(refresh=True) != content:
            secret.set_content(content)
        self.set(f"{label}-digest", _digest(content))
        self._secrets[label] = dict(content)


def _digest(content: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]
