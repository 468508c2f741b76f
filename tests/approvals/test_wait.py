"""Long-poll: an agent that submitted a call waits for the decision instead of polling."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from accounts.services import api_token_issue
from approvals.models import ActionRequest, ActionStatus
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db(transaction=True)


def _submitted(api_as: Any, amount: int = 150) -> ActionRequest:
    body = {
        "tool": "issue_refund",
        "arguments": {"order_id": "ORD-1004", "amount": amount, "reason": "broken"},
        "confidence": 0.95,
    }
    response = api_as("operator").post("/api/v1/agents/refund-triage/actions", body)
    assert response.status_code == 201, response.content
    return ActionRequest.objects.get(pk=response.json()["id"])


def test_the_wait_is_answered_when_the_decision_commits(refund_agent, orders, api_as):
    action = _submitted(api_as)
    assert action.status == ActionStatus.PENDING
    operator, reviewer = api_as("operator"), api_as("reviewer")
    answers: list[Any] = []

    def wait() -> None:
        try:
            answers.append(operator.get(f"/api/v1/actions/{action.pk}/wait?timeout=60"))
        finally:
            connection.close()

    waiter = threading.Thread(target=wait)
    waiter.start()
    decided = reviewer.post(f"/api/v1/actions/{action.pk}/decision", {"verdict": "reject", "comment": "Not this one."})
    assert decided.status_code == 200
    waiter.join(timeout=70)
    [answer] = answers
    assert answer.status_code == 200
    assert answer.json()["status"] == "rejected"
    assert answer.json()["decision"]["comment"] == "Not this one."


def test_a_status_other_than_the_one_seen_is_answered_at_once(refund_agent, orders, api_as):
    action = _submitted(api_as, amount=20)  # auto: executed before the submit answered
    response = api_as("operator").get(f"/api/v1/actions/{action.pk}/wait?seen=pending&timeout=60")
    assert response.json()["status"] == "executed"
    expired = api_as("operator").get(f"/api/v1/actions/{_submitted(api_as).pk}/wait?timeout=0")
    assert expired.status_code == 200 and expired.json()["status"] == "pending"


@pytest.mark.parametrize("query", ["timeout=61", "timeout=-1", "timeout=nan", "seen=maybe"])
def test_bad_waits_are_400(refund_agent, orders, api_as, query):
    action = _submitted(api_as)
    assert api_as("operator").get(f"/api/v1/actions/{action.pk}/wait?{query}").status_code == 400


def test_outsiders_cannot_wait_on_an_action(refund_agent, orders, api_as, outsider):
    action = _submitted(api_as)
    stranger = ApiClient(api_token_issue(user=outsider, actor=None))
    assert stranger.get(f"/api/v1/actions/{action.pk}/wait?timeout=0").status_code == 404
    assert stranger.get("/api/v1/actions/999999/wait?timeout=0").status_code == 404
