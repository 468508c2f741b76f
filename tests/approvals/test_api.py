from __future__ import annotations

import pytest

from accounts.models import ApiToken
from agents.models import Run
from approvals.models import ActionRequest, ActionStatus, Decision, Execution
from audit.models import AuditEvent
from demo.models import Refund
from tests.conftest import ApiClient, refund_input

# Each request commits for real, so its on_commit work (runs, executions) happens.
pytestmark = pytest.mark.django_db(transaction=True)


def _pending_action(api_as, *, agent="refund-triage", payload=None):
    operator = api_as("operator")
    body = {"input": payload or refund_input(amount=250)}
    response = operator.post(f"/api/v1/agents/{agent}/runs", body)
    assert response.status_code == 201, response.content
    return ActionRequest.objects.get(run_id=response.json()["id"])


def test_it_starts_a_run(refund_agent, orders, api_as):
    response = api_as("operator").post("/api/v1/agents/refund-triage/runs", {"input": refund_input(amount=30)})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    assert Run.objects.get(pk=body["id"]).input["amount"] == 30


def test_it_requires_a_token():
    response = ApiClient("cs_not-a-token").get("/api/v1/actions")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_revoked_token_is_refused(api_as):
    client = api_as("reviewer")
    ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
    assert client.get("/api/v1/actions").status_code == 401


def test_tokens_are_stored_hashed(api_as):
    client = api_as("reviewer")
    raw = client.headers["Authorization"].removeprefix("Bearer ")
    token = ApiToken.objects.get()
    assert raw not in (token.key_hash, token.prefix)
    assert len(token.key_hash) == 64


def test_unknown_agent_is_404(refund_agent, api_as):
    response = api_as("operator").post("/api/v1/agents/nope/runs", {"input": {}})
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no such object, or you may not see it"}


def test_malformed_json_is_400_and_writes_nothing(refund_agent, orders, api_as):
    response = api_as("operator").post("/api/v1/agents/refund-triage/runs", raw='{"input": {')
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert not Run.objects.exists()


def test_input_failing_the_agent_schema_is_400(refund_agent, orders, api_as):
    operator = api_as("operator")
    audit_before = AuditEvent.objects.count()
    response = operator.post(
        "/api/v1/agents/refund-triage/runs", {"input": {"ticket": "x", "order_id": "ORD-1001", "amount": "lots"}}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_input"
    assert "amount" in body["detail"]
    assert not Run.objects.exists()
    assert AuditEvent.objects.count() == audit_before


def test_missing_input_field_is_400(refund_agent, orders, api_as):
    response = api_as("operator").post("/api/v1/agents/refund-triage/runs", {"inpt": {}})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_reviewer_may_not_start_runs(refund_agent, orders, api_as):
    response = api_as("reviewer").post("/api/v1/agents/refund-triage/runs", {"input": refund_input()})
    assert response.status_code == 404


def test_run_shows_its_actions(refund_agent, orders, api_as):
    action = _pending_action(api_as)
    body = api_as("reviewer").get(f"/api/v1/runs/{action.run_id}").json()
    assert body["status"] == "waiting"
    assert body["agent"] == "refund-triage"
    assert [a["id"] for a in body["actions"]] == [action.pk]
    assert body["actions"][0]["status"] == "pending"


def test_pending_list_is_filtered_by_review_permission(refund_agent, crm_agent, orders, contacts, api_as):
    refund = _pending_action(api_as)
    crm = _pending_action(api_as, agent="crm-cleanup", payload={"request": "x", "contact_ids": [1]})
    seen_by_reviewer = [a["id"] for a in api_as("reviewer").get("/api/v1/actions?status=pending").json()["items"]]
    seen_by_reviewer2 = [a["id"] for a in api_as("reviewer2").get("/api/v1/actions?status=pending").json()["items"]]
    seen_by_operator = api_as("operator").get("/api/v1/actions?status=pending").json()["items"]
    assert seen_by_reviewer == [crm.pk, refund.pk]
    assert seen_by_reviewer2 == [refund.pk]
    assert seen_by_operator == []


def test_list_is_keyset_paginated(refund_agent, orders, api_as):
    ids = [_pending_action(api_as).pk for _ in range(3)]
    client = api_as("reviewer")
    first = client.get("/api/v1/actions?status=pending&limit=2").json()
    assert [a["id"] for a in first["items"]] == [ids[2], ids[1]]
    second = client.get(f"/api/v1/actions?status=pending&limit=2&before={first['next_before']}").json()
    assert [a["id"] for a in second["items"]] == [ids[0]]
    assert second["next_before"] is None


def test_action_detail_has_the_documented_fields(refund_agent, orders, api_as):
    action = _pending_action(api_as)
    body = api_as("reviewer").get(f"/api/v1/actions/{action.pk}").json()
    for key in ("id", "run", "agent", "tool", "arguments", "confidence", "status", "decision", "route_reason"):
        assert key in body
    assert body["decision"] is None


def test_outsider_gets_404_for_an_action_it_may_not_review(refund_agent, crm_agent, contacts, api_as):
    crm = _pending_action(api_as, agent="crm-cleanup", payload={"request": "x", "contact_ids": [1]})
    client = api_as("reviewer2")
    assert client.get(f"/api/v1/actions/{crm.pk}").status_code == 404
    response = client.post(f"/api/v1/actions/{crm.pk}/decision", {"verdict": "approve"})
    assert response.status_code == 404
    crm.refresh_from_db()
    assert crm.status == ActionStatus.PENDING


def test_approve_decides_and_executes(refund_agent, orders, api_as):
    action = _pending_action(api_as)
    response = api_as("reviewer").post(f"/api/v1/actions/{action.pk}/decision", {"verdict": "approve"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "executed"
    assert body["decision"]["reviewer"] == "reviewer"
    assert Refund.objects.count() == 1


def test_second_decision_loses_with_409_naming_the_winner(refund_agent, orders, api_as):
    action = _pending_action(api_as)
    api_as("reviewer").post(f"/api/v1/actions/{action.pk}/decision", {"verdict": "reject", "comment": "no"})
    response = api_as("reviewer2").post(f"/api/v1/actions/{action.pk}/decision", {"verdict": "approve"})
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "already_decided"
    assert body["decided_by"] == "reviewer"
    assert "already decided by reviewer" in body["detail"]
    assert Decision.objects.count() == 1
    assert not Execution.objects.exists()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"verdict": "maybe"}, "invalid_request"),
        ({"verdict": "reject"}, "invalid_request"),
        ({"verdict": "reject", "comment": "   "}, "invalid_request"),
        ({"verdict": "edit", "arguments": {"order_id": "ORD-1001", "amount": -1, "reason": "x"}}, "invalid_arguments"),
        (
            {"verdict": "edit", "arguments": {"order_id": "ORD-1001", "amount": 5, "reason": "x", "extra": 1}},
            "invalid_arguments",
        ),
        ({"verdict": "edit"}, "invalid_request"),
        ({"verdict": "approve", "arguments": {"amount": 1}}, "invalid_request"),
        ({"verdict": "approve", "arguments": {}}, "invalid_request"),
        ({"verdict": "escalate", "arguments": {}}, "invalid_request"),
        ({"verdict": "approve", "comment": 5}, "invalid_request"),
        ({"verdict": "approve", "reason": "typo for comment"}, "invalid_request"),
        (["approve"], "invalid_request"),
    ],
)
def test_bad_decisions_are_400_and_write_nothing(refund_agent, orders, api_as, payload, code):
    action = _pending_action(api_as)
    reviewer = api_as("reviewer")
    audit_before = AuditEvent.objects.count()
    response = reviewer.post(f"/api/v1/actions/{action.pk}/decision", payload)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == code
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING
    assert not Decision.objects.exists()
    assert AuditEvent.objects.count() == audit_before


def test_an_edit_naming_an_unknown_order_is_400_on_the_field_and_writes_nothing(refund_agent, orders, api_as):
    action = _pending_action(api_as)
    reviewer = api_as("reviewer")
    audit_before = AuditEvent.objects.count()
    edited = {"order_id": "ORD-9999", "amount": 5, "reason": "x"}
    response = reviewer.post(f"/api/v1/actions/{action.pk}/decision", {"verdict": "edit", "arguments": edited})
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_arguments"
    assert body["errors"] == [{"field": "order_id", "message": "there is no order ORD-9999"}]
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING and action.arguments["order_id"] == "ORD-1001"
    assert not Decision.objects.exists() and not Execution.objects.exists()
    assert AuditEvent.objects.count() == audit_before


def test_decision_on_a_finished_action_is_409(refund_agent, orders, api_as):
    operator = api_as("operator")
    run_id = operator.post("/api/v1/agents/refund-triage/runs", {"input": refund_input(amount=20)}).json()["id"]
    auto = ActionRequest.objects.get(run_id=run_id)
    assert auto.status == ActionStatus.EXECUTED
    response = api_as("reviewer").post(f"/api/v1/actions/{auto.pk}/decision", {"verdict": "reject", "comment": "x"})
    assert response.status_code == 409
    assert "executed" in response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"tool": "wire_money", "arguments": {}, "confidence": 0.9}, "unknown_tool"),
        ({"tool": "delete_contacts", "arguments": {"ids": [1]}, "confidence": 0.9}, "tool_not_enabled"),
        ({"tool": "issue_refund", "arguments": {"order_id": "ORD-1001"}, "confidence": 0.9}, "invalid_arguments"),
        ({"tool": "issue_refund", "arguments": {}, "confidence": 7}, "invalid_request"),
    ],
)
def test_submitted_actions_with_bad_tools_or_arguments_are_400(refund_agent, orders, api_as, payload, code):
    operator = api_as("operator")
    audit_before = AuditEvent.objects.count()
    response = operator.post("/api/v1/agents/refund-triage/actions", payload)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == code
    assert not ActionRequest.objects.exists()
    assert AuditEvent.objects.count() == audit_before


def test_submitted_action_is_routed_like_a_run_proposal(refund_agent, orders, api_as):
    payload = {
        "tool": "issue_refund",
        "arguments": {"order_id": "ORD-1003", "amount": 150, "reason": "late"},
        "confidence": 0.95,
        "rationale": "external agent",
    }
    response = api_as("operator").post("/api/v1/agents/refund-triage/actions", payload)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["run"] is None
    decided = api_as("reviewer").post(f"/api/v1/actions/{body['id']}/decision", {"verdict": "approve"})
    assert decided.json()["status"] == "executed"
    assert Refund.objects.get().amount == 150


def test_openapi_document_is_served(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/v1/actions/{action_id}/decision" in paths
    assert "/api/v1/agents/{slug}/runs" in paths
