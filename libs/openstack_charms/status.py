"""Not-ready conditions raised deep in a reconcile and caught once by the base charm, and their messages."""

from __future__ import annotations

import ops

#: Juju shows a status on one line; longer ones are cut here rather than by the client
MAX_MESSAGE = 120


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class NotReady(Exception):
    """Reconcile cannot go on; the message says exactly what is missing."""

    status_class: type[ops.StatusBase] = ops.WaitingStatus

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def status(self) -> ops.StatusBase:
        """The status a user sees for this condition."""
        return self.status_class(one_line(self.message))


class Blocked(NotReady):
    """Only the operator can fix this: a relation to add, an option to change."""

    status_class = ops.BlockedStatus


class Waiting(NotReady):
    """Something else has to happen first (the other side, the leader, a container)."""

    status_class = ops.WaitingStatus
