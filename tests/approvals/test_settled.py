"""A held call wakes when the transaction that changes its action commits, and not for one that rolls back."""

from __future__ import annotations

import asyncio

import pytest
from django.db import transaction

from approvals import routing
from approvals.models import ActionRequest, ActionStatus
from approvals.settled import watching
from approvals.transitions import action_transition
from tests.conftest import needs_postgres, user
from tests.e2e.conftest import off_loop

pytestmark = [needs_postgres, pytest.mark.django_db(transaction=True)]


def _pending(agent, order: str) -> ActionRequest:
    outcome = routing.route_tool_call(
        agent=agent,
        run=None,
        tool="issue_refund",
        arguments={"order_id": order, "amount": 150, "reason": "broken"},
        confidence=1.0,
        rationale="t",
        actor=user("operator"),
    )
    assert outcome.action is not None and outcome.action.status == ActionStatus.PENDING
    return outcome.action


def _expire(action: ActionRequest, *, commit: bool) -> None:
    with transaction.atomic():
        assert action_transition(action, from_statuses=(ActionStatus.PENDING,), to=ActionStatus.EXPIRED)
        if not commit:
            transaction.set_rollback(True)


def test_a_committed_change_wakes_its_watchers_and_a_rolled_back_one_does_not(refund_agent, orders, demo_user):
    demo_user("operator")
    rolled, committed = _pending(refund_agent, "ORD-1001"), _pending(refund_agent, "ORD-1002")

    async def scenario() -> tuple[bool, bool]:
        async with watching(rolled.pk) as first, watching(committed.pk) as second:
            # When the listener has connected it wakes every watch once (what changed before, read again).
            assert await first.wait(timeout=30) and await second.wait(timeout=30)
            await off_loop(_expire, rolled, commit=False)
            await off_loop(_expire, committed, commit=True)
            # Notifications arrive in commit order: once the second is here, a first would have been.
            woke = await second.wait(timeout=30)
            return woke, first.changed.is_set()

    woke, first_woke = asyncio.run(scenario())
    assert woke
    assert not first_woke
    assert ActionRequest.objects.get(pk=rolled.pk).status == ActionStatus.PENDING
