from __future__ import annotations

import pytest

from agents.breakers import breaker_for
from agents.models import Agent, BreakerState, CircuitBreaker, Run, RunStatus
from agents.services import run_start
from approvals.models import ActionRequest, ActionStatus
from tests.agents.fakes import Sequence, use_provider
from tests.approvals.test_views import login
from tests.conftest import refund_input

# Requests commit for real: the runs, routing and executions they start happen on commit (inline).
pytestmark = pytest.mark.django_db(transaction=True)


def test_operator_resumes_a_halted_run_from_the_page(refund_agent, orders, demo_user):
    demo_user("operator")
    run = run_start(agent=refund_agent, input=refund_input(amount=300), actor=None)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.HALTED, halt_reason="step limit reached (6 steps)")
    client = login("operator")
    page = client.get("/agents/").content.decode()
    assert "step limit reached" in page
    response = client.post(f"/runs/{run.pk}/resume")
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status != RunStatus.HALTED


def test_reviewer_cannot_resume_or_cancel(refund_agent, orders, demo_user):
    demo_user("reviewer")
    run = run_start(agent=refund_agent, input=refund_input(amount=300), actor=None)
    client = login("reviewer")
    assert client.post(f"/runs/{run.pk}/resume").status_code == 404
    assert client.post(f"/runs/{run.pk}/cancel").status_code == 404
    assert client.get(f"/runs/{run.pk}/cancel").status_code == 405


def test_operator_cancels_from_the_page(refund_agent, orders, demo_user):
    demo_user("operator")
    run = run_start(agent=refund_agent, input=refund_input(amount=300), actor=None)
    login("operator").post(f"/runs/{run.pk}/cancel")
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert ActionRequest.objects.get(run=run).status == ActionStatus.CANCELLED


def test_operator_resets_a_breaker_outsider_cannot(refund_agent, orders, demo_user, outsider):
    demo_user("operator")
    demo_user("reviewer")
    breaker = breaker_for(refund_agent, "issue_refund")
    CircuitBreaker.objects.filter(pk=breaker.pk).update(state=BreakerState.OPEN, consecutive_failures=5)
    assert "issue_refund" in login("operator").get("/agents/").content.decode()
    assert login("reviewer").post(f"/breakers/{breaker.pk}/reset").status_code == 404
    assert login("operator").post(f"/breakers/{breaker.pk}/reset").status_code == 302
    breaker.refresh_from_db()
    assert breaker.state == BreakerState.CLOSED


def test_tool_catalogue_lists_tools_and_their_policies(refund_agent, orders, demo_user):
    demo_user("reviewer")
    page = login("reviewer").get("/tools/").content.decode()
    for name in ("issue_refund", "delete_contacts", "delegate"):
        assert f"<code>{name}</code>" in page
    assert "reversible" in page
    assert "auto ≤ 100.00" in page


def test_trace_timeline_shows_model_calls_without_secrets(refund_agent, orders, demo_user, monkeypatch):
    demo_user("reviewer")
    monkeypatch.setenv("COUNTERSIGN_SECRET_TEST_PROVIDER", "sk-very-secret-key-123")
    agent = refund_agent
    Agent.objects.filter(pk=agent.pk).update(api_key_ref="env:COUNTERSIGN_SECRET_TEST_PROVIDER")

    class Leaky(Sequence):
        def propose(self, context):
            result = super().propose(context)
            # A provider (or a server echoing headers) that leaks the key into the trace.
            return type(result)(
                result.proposal,
                usage=result.usage,
                model=result.model,
                request={"api_key": context.settings.api_key, "note": f"key={context.settings.api_key}"},
                response={"ok": True},
            )

    use_provider(agent, Leaky([], usage=(12, 3)), "t-leaky")
    run = run_start(agent=agent, input=refund_input(), actor=None)
    page = login("reviewer").get(f"/runs/{run.pk}/").content.decode()
    assert "Model call" in page
    assert "12 in / 3 out tokens" in page
    assert "sk-very-secret-key-123" not in page
    assert "[redacted]" in page
    payloads = str(list(run.steps.values_list("payload", flat=True)))
    assert "sk-very-secret-key-123" not in payloads
