from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from agents.services import run_start
from approvals.decisions import AlreadyDecided, action_request_decide
from approvals.models import ActionRequest, ActionStatus, Decision, Execution
from audit.models import AuditEvent
from audit.selectors import verify_chain
from demo.models import Refund
from tests.conftest import needs_postgres, refund_input, user

pytestmark = [needs_postgres, pytest.mark.django_db(transaction=True)]


def decide_concurrently(action, deciders):
    """Each decider on its own thread and connection, released together by a barrier."""
    barrier = threading.Barrier(len(deciders))
    outcomes: dict[str, object] = {}

    def decide(username, verdict, comment):
        reviewer = user(username)
        fresh = ActionRequest.objects.get(pk=action.pk)
        barrier.wait()
        try:
            action_request_decide(action=fresh, actor=reviewer, verdict=verdict, comment=comment)
            outcomes[username] = "won"
        except AlreadyDecided as exc:
            outcomes[username] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=decide, args=d) for d in deciders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return outcomes


@pytest.mark.parametrize("round_", range(5))
def test_two_reviewers_at_once_exactly_one_wins(demo, round_):
    assert connection.vendor == "postgresql"
    run = run_start(agent=demo["refund-triage"], input=refund_input(amount=250, order="ORD-1004"), actor=None)
    action = ActionRequest.objects.get(run=run)
    outcomes = decide_concurrently(action, [("reviewer", "approve", ""), ("reviewer2", "reject", "not eligible")])
    winners = [name for name, result in outcomes.items() if result == "won"]
    losers = [result for result in outcomes.values() if isinstance(result, AlreadyDecided)]
    assert len(winners) == 1, outcomes
    assert len(losers) == 1, outcomes
    assert f"already decided by {winners[0]}" in losers[0].message
    assert Decision.objects.filter(action=action).count() == 1
    assert AuditEvent.objects.filter(event="action.decided", target_id=str(action.pk)).count() == 1
    action.refresh_from_db()
    if winners[0] == "reviewer":
        # The winner's execution ran when its transaction committed.
        assert Execution.objects.filter(action=action).count() == 1
        assert action.status == ActionStatus.EXECUTED
        assert Refund.objects.count() == 1
    else:
        assert action.status == ActionStatus.REJECTED
        assert not Execution.objects.exists()
        assert not Refund.objects.exists()
    assert verify_chain().ok
