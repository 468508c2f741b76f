from __future__ import annotations

import pytest

from agents.models import Run, RunStatus
from approvals.models import ActionRequest, ActionStatus

# Requests commit for real: the runs, routing and executions they start happen on commit (inline).
pytestmark = pytest.mark.django_db(transaction=True)


def test_run_trace_and_operator_endpoints(refund_agent, orders, api_as):
    operator = api_as("operator")
    created = operator.post(
        "/api/v1/agents/refund-triage/runs",
        {"input": {"ticket": "broken", "order_id": "ORD-1003", "amount": 300}, "priority": "urgent"},
    ).json()
    run = Run.objects.get(pk=created["id"])
    assert run.priority == 9
    trace = api_as("reviewer").get(f"/api/v1/runs/{run.pk}/trace").json()
    assert [s["kind"] for s in trace] == ["llm_call", "proposal", "policy"]
    assert api_as("reviewer").post(f"/api/v1/runs/{run.pk}/cancel").status_code == 404
    cancelled = operator.post(f"/api/v1/runs/{run.pk}/cancel")
    assert cancelled.json() == {"id": run.pk, "status": "cancelled"}
    again = operator.post(f"/api/v1/runs/{run.pk}/resume")
    assert again.status_code == 409
    assert again.json()["error"] == "illegal_transition"


def test_undo_over_the_api(refund_agent, orders, api_as):
    created = (
        api_as("operator")
        .post(
            "/api/v1/agents/refund-triage/runs", {"input": {"ticket": "broken", "order_id": "ORD-1003", "amount": 30}}
        )
        .json()
    )
    action = ActionRequest.objects.get(run_id=created["id"])
    assert action.status == ActionStatus.EXECUTED
    assert api_as("reviewer2").post(f"/api/v1/actions/{action.pk}/undo", {"comment": "oops"}).json()["status"] == (
        "compensated"
    )
    second = api_as("reviewer2").post(f"/api/v1/actions/{action.pk}/undo", {})
    assert second.status_code == 409
    assert Run.objects.get(pk=created["id"]).status == RunStatus.SUCCEEDED


def test_bad_priority_is_400(refund_agent, api_as):
    response = api_as("operator").post(
        "/api/v1/agents/refund-triage/runs",
        {"input": {"ticket": "x", "order_id": "ORD-1", "amount": 1}, "priority": "asap"},
    )
    assert response.status_code == 400
