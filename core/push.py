"""Live pushes, named: an app says what happened, on commit; the app that owns the sockets says how it looks.

Apps low in the layer order cannot render or send the inbox's HTML (that is
`approvals.broadcast`, above them), so they name the event and its ids and
`push_on_commit` calls whatever handler the socket-owning app registered for
that name when it loaded. A change that rolls back pushes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)

# The events lower apps push, with the ids each carries.
PERMISSIONS_CHANGED = "permissions.changed"  # user_ids: open sockets recompute their groups
RUN_NEEDS_OPERATOR = "run.needs_operator"  # run_id: a halted run, shown to its agent's operators
OPS_CHANGED = "ops.changed"  # agent_id: the operators' exception lists refresh
ACTIONS_CLOSED = "actions.closed"  # action_ids: rows leave every inbox

_handlers: dict[str, Callable[..., None]] = {}


def handle(event: str, handler: Callable[..., None]) -> None:
    """Register how `event` is pushed (called once, by the app that owns the sockets)."""
    _handlers[event] = handler


def push_on_commit(event: str, **ids: Any) -> None:
    """Push `event` with `ids` when the current transaction commits (at once outside one)."""
    handler = _handlers.get(event)
    if handler is None:
        logger.warning("no handler for the push %r", event)
        return
    transaction.on_commit(lambda: handler(**ids))
