"""The peer relation: application-wide facts the leader decides and every unit reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import ops

from ..status import Waiting
from .base import RelationHandler

if TYPE_CHECKING:
    from ..charm import ReconcilingCharm


class PeerHandler(RelationHandler[ops.RelationDataContent]):
    """Leader-written app data and app-owned secrets, shared with every unit.

    Facts live in the peer application databag, not in a unit's local state, so
    that a new leader finds what the previous one did and re-does nothing.
    """

    holds_back_when_incomplete = False

    def __init__(self, charm: ReconcilingCharm, endpoint: str = "peers") -> None:
        super().__init__(charm, endpoint)

    def get_context(self) -> ops.RelationDataContent | None:
        relation = self.relation
        return relation.data[self.charm.app] if relation else None

    def _data(self) -> ops.RelationDataContent:
        data = self.context
        if data is None:
            raise Waiting(f"waiting for the peer relation '{self.endpoint}'")
        return data

    def get(self, key: str) -> str | None:
        """A value the leader set, or ``None``."""
        data = self.context
        return data.get(key) if data is not None else None

    def set(self, key: str, value: str | None) -> None:
        """Set (or with ``None`` remove) a value; leader only."""
        data = self._data()
        if value is None:
            data.pop(key, None)
        elif data.get(key) != value:
            data[key] = value

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
        """
        key = f"{label}-secret-id"
        secret_id = self.get(key)
        if secret_id is None:
            if not self.charm.is_leader:
                raise Waiting(f"waiting for the leader to create {what or label}")
            secret = self.charm.app.add_secret(generate(), label=label, rotate=rotate)
            self.set(key, secret.id)
            return secret.get_content()
        secret = self.charm.model.get_secret(id=secret_id, label=label)
        return secret.get_content(refresh=True)

    def update_secret(self, label: str, content: dict[str, str]) -> None:
        """Replace the content of the app-owned secret ``label``; leader only."""
        secret_id = self.get(f"{label}-secret-id")
        if secret_id is None:
            raise Waiting(f"secret {label} does not exist yet")
        secret = self.charm.model.get_secret(id=secret_id, label=label)
        if secret.get_content(refresh=True) != content:
            secret.set_content(content)
