"""What happened, named: every push starts here, in the transaction that made the change.

An app names the event and the ids it concerns; the app that shows that thing
registers how it looks (`live.relay.renders`). The intent is a row of the
outbox (`live.models.Push`), so it commits or rolls back with the change, and
the relay delivers it after commit, off the request path.

The events, with the ids each carries, and who renders them:
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.transactions import OUTBOX, defer, register_flusher
from live.models import Push
from live.relay import deliver_inline

# Inbox rows (approvals.pushes).
ACTION_OPENED = "action.opened"  # action_id: a new row, for the reviewers of its agent and tier
ACTION_CHANGED = "action.changed"  # action_id: claimed, a quorum vote, an SLA warning: replaced in place
ACTION_CLOSED = "action.closed"  # action_id: decided, expired, cancelled: the row leaves every inbox
ACTION_ESCALATED = "action.escalated"  # action_id, from_tier: leaves one tier's inbox, enters the next
NOTIFICATIONS_CHANGED = "notifications.changed"  # user_ids: their unread badges
QUEUE_CHANGED = "queue.changed"  # agent_id, tier: the queue count on inbox pages
# Control messages to open sockets (approvals.pushes).
PERMISSIONS_CHANGED = "permissions.changed"  # user_ids: open sockets recompute their groups
SESSIONS_CHECK = "sessions.check"  # user_ids, ended (a session's tag, or ""): sockets re-validate
# Operators (agents.pushes, ops.pushes).
RUN_NEEDS_OPERATOR = "run.needs_operator"  # run_id: a halted run, shown to its agent's operators
RUN_CHANGED = "run.changed"  # run_id: its status, actions and trace, on the open run page (agents.pushes)
OPS_CHANGED = "ops.changed"  # agent_id: the operators' exception lists refresh


def push(event: str, **ids: Any) -> None:
    """Record `event` in the current transaction; it is pushed once that commits."""
    push_many(event, [ids])


def push_many(event: str, each: Iterable[dict[str, Any]]) -> None:
    rows = [(event, ids) for ids in each]
    if not rows:
        return
    connection = transaction.get_connection()
    if connection.in_atomic_block:
        # Written with the transaction's other intents in one INSERT just before COMMIT
        # (core.transactions), so a change that pushes three events pays one round trip.
        for row in rows:
            defer(OUTBOX, row)
    else:
        _write_intents(connection, rows)  # autocommit: the row is its own transaction
    if settings.LIVE_RELAY == "inline":
        # Tests and the single-process demo: this process is its own relay.
        transaction.on_commit(deliver_inline)


def _write_intents(connection: Any, items: list[tuple[str, dict[str, Any]]]) -> None:
    """Insert a transaction's push intents, in the order they were made, in one statement."""
    table = connection.ops.quote_name(Push._meta.db_table)
    ids_field = Push._meta.get_field("ids")
    now = timezone.now()
    values = []
    for event, ids in items:
        values += [event, ids_field.get_db_prep_save(ids, connection), now]
    rows = ", ".join(["(%s, %s, %s)"] * len(items))
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} (event, ids, created_at) VALUES {rows}", values)  # noqa: S608


register_flusher(OUTBOX, _write_intents)
