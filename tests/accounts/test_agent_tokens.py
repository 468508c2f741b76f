"""An agent's own token: issued by whoever configures the agent; its identity is the agent, which may operate that
agent only (submit calls, ask over its MCP endpoint, act on grants) and may not review, approve or log in."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.services import api_token_issue
from approvals.models import ActionRequest
from audit.models import AuditEvent
from gateway.selectors import NOT_FOUND, caller_for
from tests.conftest import ApiClient, user

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(demo_user: Any, refund_agent: Any, crm_agent: Any, orders: None) -> None:
    for name in ("admin", "operator", "reviewer"):
        demo_user(name)


def _issue(client: ApiClient, slug: str = "refund-triage") -> Any:
    return client.post(f"/api/v1/agents/{slug}/tokens", {"name": "billing worker"})


def test_only_whoever_configures_the_agent_issues_its_token(people: None, api_as: Any, outsider: Any) -> None:
    assert _issue(api_as("operator")).status_code == 403  # operates it, does not configure it
    assert _issue(ApiClient(api_token_issue(user=outsider, actor=None))).status_code == 404
    issued = _issue(api_as("admin"))
    assert issued.status_code == 201, issued.content
    assert issued.json()["identity"] == "agent:refund-triage" and issued.json()["token"].startswith("cs_")
    again = _issue(api_as("admin"))
    assert again.json()["identity"] == "agent:refund-triage"  # one identity, a second token
    assert AuditEvent.objects.filter(event="agent_identity.created").count() == 1
    assert AuditEvent.objects.filter(event="api_token.issued", after__user="agent:refund-triage").count() == 2
    assert AuditEvent.objects.filter(event="permission.granted", after__user="agent:refund-triage").count() == 1


def test_the_agents_token_operates_that_agent_only_and_cannot_review(people: None, api_as: Any, client: Any) -> None:
    agent = ApiClient(_issue(api_as("admin")).json()["token"])
    body = {"tool": "issue_refund", "arguments": {"order_id": "ORD-1002", "amount": 150, "reason": "x"}}
    submitted = agent.post("/api/v1/agents/refund-triage/actions", {**body, "confidence": 0.5})
    assert submitted.status_code == 201 and submitted.json()["status"] == "pending"
    action = ActionRequest.objects.get()
    assert action.submitted_by is not None and action.submitted_by.username == "agent:refund-triage"
    assert agent.get(f"/api/v1/actions/{action.pk}").status_code == 200  # it follows its own calls
    # Not another agent's, and nothing a reviewer does.
    other = agent.post("/api/v1/agents/crm-cleanup/actions", {**body, "confidence": 0.5})
    assert other.status_code == 404
    assert agent.get("/api/v1/actions").json()["items"] == []
    assert agent.post(f"/api/v1/actions/{action.pk}/decision", {"verdict": "approve"}).status_code == 404
    # Any person may approve what the agent asked (it started nothing a person did).
    approved = api_as("reviewer").post(f"/api/v1/actions/{action.pk}/decision", {"verdict": "approve"})
    assert approved.status_code == 200
    # Nobody logs in as the agent.
    assert not user("agent:refund-triage").has_usable_password()
    assert not client.login(username="agent:refund-triage", password="")


def test_the_agents_token_is_the_identity_on_its_mcp_endpoint(people: None, api_as: Any) -> None:
    # The endpoint's own identity check (gateway.mcp asks it for every request; tests/e2e/test_mcp_gateway.py
    # drives the endpoint over HTTP with the official client).
    token = _issue(api_as("admin")).json()["token"]
    own = caller_for(token=token, slug="refund-triage")
    assert not isinstance(own, str) and own.user.get_username() == "agent:refund-triage"
    assert caller_for(token=token, slug="crm-cleanup") == NOT_FOUND
