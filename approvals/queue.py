"""The queue's counts per agent and tier, the one way out of pending, and scheduling an execution."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Count

from approvals.grants import grant_issue
from approvals.models import (
    EXECUTE_ACTION,
    ActionRequest,
    ActionStatus,
    Execution,
    QueueCount,
)
from approvals.transitions import action_transition
from core import counters
from core.background import enqueue_on_commit
from core.prepared import insert_row
from live.push import QUEUE_CHANGED, push

logger = logging.getLogger(__name__)


def queue_count_add(*, agent_id: int, tier: int, delta: int) -> None:
    """Keep the pending count of one queue in step, in the transaction that moved the action.

    A counter (core.counters.queue): the row is written, and locked, just before COMMIT.
    """
    counters.queue(agent_id=agent_id, tier=tier, delta=delta)
    push(QUEUE_CHANGED, agent_id=agent_id, tier=tier)


def action_leave_pending(
    *, action: ActionRequest, to_status: str, expect: dict[str, Any] | None = None, **fields: Any
) -> bool:
    """The one way out of `pending`: a compare-and-set, with the queue count kept in step.

    The expected state is `pending` at the tier the caller saw (plus `expect`);
    False when another transaction got there first.
    """
    won = action_transition(
        action,
        from_statuses=(ActionStatus.PENDING,),
        to=to_status,
        expect={"tier": action.tier, **(expect or {})},
        claimed_by=None,
        claim_expires_at=None,
        **fields,
    )
    if won:
        queue_count_add(agent_id=action.agent_id, tier=action.tier, delta=-1)
    return bool(won)


def queue_counts_rebuild() -> int:
    """Recompute every queue count from the actions (repair; not needed in normal operation)."""
    with transaction.atomic():
        QueueCount.objects.all().delete()
        rows = (
            ActionRequest.objects.filter(status=ActionStatus.PENDING).values("agent_id", "tier").annotate(n=Count("id"))
        )
        created = QueueCount.objects.bulk_create(
            [QueueCount(agent_id=row["agent_id"], tier=row["tier"], pending=row["n"]) for row in rows]
        )
    return len(created)


def execution_schedule(action: ActionRequest) -> None:
    """In the approving transaction: the execution, published on commit; for a caller's tool, its grant."""
    if action.caller_executes:
        grant_issue(action)
        return
    execution = Execution(action=action, idempotency_key=f"action-{action.pk}")
    insert_row(execution)
    enqueue_on_commit(EXECUTE_ACTION, execution.pk)
