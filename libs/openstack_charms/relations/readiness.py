"""Service readiness (``placement`` and every interface of the same shape): one JSON flag.

The provider's leader writes ``ready`` (``true`` / ``false``, JSON) in its
application databag: ``true`` once its service runs on a synced database,
``false`` whenever it cannot keep it so. The requirer waits for ``true``. This
is the format sunbeam's service-readiness handlers read and write (placement,
and nova, octavia, barbican towards their consumers).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .base import Incomplete, RelationHandler, load_json, update_databag

if TYPE_CHECKING:
    from .base import HandlerHost


class ReadinessProvider(RelationHandler[None]):
    """Tells every related application whether this service is ready."""

    reads_remote = False

    def provide(self, ready: bool) -> None:
        """Leader: write ``ready`` where it differs."""
        if not self.host.is_leader:
            return
        for relation in self.relations:
            update_databag(relation.data[self.host.app], {"ready": json.dumps(ready)})


class ReadinessRequirer(RelationHandler[bool]):
    """Waits until the related service says it is ready."""

    def __init__(self, host: HandlerHost, endpoint: str) -> None:
        super().__init__(host, endpoint)

    def get_context(self) -> bool:
        """``True`` once the provider is ready; Incomplete naming ``ready`` before."""
        relation = self.relation
        if relation is None or relation.app is None:
            raise Incomplete("the provider application")
        if load_json(relation.data[relation.app], "ready", False) is not True:
            raise Incomplete("ready")
        return True
