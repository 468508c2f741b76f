from __future__ import annotations

from decimal import Decimal

import pytest

from agents.configuration import agent_tool_configure
from agents.models import Run, RunStatus, StepKind
from agents.providers import FinalAnswer, ProviderResult, ToolCallProposal, register_provider
from agents.services import agent_update, run_start
from approvals.decisions import action_request_decide
from approvals.execution import action_execute
from approvals.models import ActionRequest, ActionStatus, Execution
from audit.models import AuditEvent
from core.errors import Conflict, InvalidInput
from demo.models import Contact, Order, Refund
from runtime.tasks import advance_run
from tests.conftest import refund_input

pytestmark = pytest.mark.django_db


def test_small_confident_refund_runs_automatically(refund_agent, orders, demo_user, commit):
    operator = demo_user("operator")
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=40), actor=operator)
    run.refresh_from_db()
    action = ActionRequest.objects.get(run=run)
    assert action.route == "auto"
    assert action.status == ActionStatus.EXECUTED
    assert run.status == RunStatus.SUCCEEDED
    assert "Refund issued" in run.result
    refund = Refund.objects.get()
    assert refund.amount == Decimal("40.00")
    assert refund.order.refunded_total == Decimal("40.00")
    events = list(
        AuditEvent.objects.filter(target_type="approvals.actionrequest", target_id=str(action.pk)).values_list(
            "event", flat=True
        )
    )
    assert events == ["action.routed", "action.executed"]


def test_refund_above_100_waits_for_a_reviewer(refund_agent, orders, commit):
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=250), actor=None)
    run.refresh_from_db()
    action = ActionRequest.objects.get(run=run)
    assert action.status == ActionStatus.PENDING
    assert "above the auto limit 100" in action.route_reason
    assert run.status == RunStatus.WAITING
    assert not Refund.objects.exists()
    assert not Execution.objects.exists()


def test_unsure_ticket_goes_to_review_on_confidence(refund_agent, orders, commit):
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=20, ticket="maybe refund? not sure"), actor=None)
    action = ActionRequest.objects.get(run=run)
    assert action.status == ActionStatus.PENDING
    assert "below the threshold 0.80" in action.route_reason


def test_destructive_tool_is_always_reviewed(crm_agent, contacts, commit):
    with commit():
        run = run_start(agent=crm_agent, input={"request": "dupes", "contact_ids": [1, 2]}, actor=None)
    action = ActionRequest.objects.get(run=run)
    assert action.confidence >= 0.8
    assert action.status == ActionStatus.PENDING
    assert "destructive" in action.route_reason
    assert Contact.objects.filter(deleted_at__isnull=True).count() == 200


def test_approval_executes_once_and_the_run_finishes(crm_agent, contacts, demo_user, commit):
    reviewer = demo_user("reviewer")
    with commit():
        run = run_start(agent=crm_agent, input={"request": "dupes", "contact_ids": [5, 6, 7]}, actor=None)
    action = ActionRequest.objects.get(run=run)
    with commit():
        action_request_decide(action=action, actor=reviewer, verdict="approve")
    execution = Execution.objects.get(action=action)
    # A redelivered message must find the execution done and do nothing.
    with commit():
        action_execute(execution_id=execution.pk)
        action_execute(execution_id=execution.pk)
    action.refresh_from_db()
    run.refresh_from_db()
    assert action.status == ActionStatus.EXECUTED
    assert action.result == {"deleted": [5, 6, 7], "missing": []}
    assert Contact.objects.filter(deleted_at__isnull=False).count() == 3
    assert (
        AuditEvent.objects.filter(
            event="action.executed", target_type="approvals.actionrequest", target_id=str(action.pk)
        ).count()
        == 1
    )
    assert run.status == RunStatus.SUCCEEDED
    assert run.result.startswith("Contacts deleted")


def test_rejection_reason_is_fed_back_to_the_agent(refund_agent, orders, demo_user, commit):
    reviewer2 = demo_user("reviewer2")
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=300), actor=None)
    action = ActionRequest.objects.get(run=run)
    with commit():
        action_request_decide(action=action, actor=reviewer2, verdict="reject", comment="order is a gift card")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert "order is a gift card" in run.result
    feedback = run.steps.filter(kind=StepKind.TOOL_RESULT).get()
    assert feedback.payload["outcome"] == "rejected"
    assert feedback.payload["error"] == "order is a gift card"
    assert not Refund.objects.exists()


def test_edit_then_approve_runs_the_edited_arguments_and_records_both(refund_agent, orders, demo_user, commit):
    reviewer = demo_user("reviewer")
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=300), actor=None)
    action = ActionRequest.objects.get(run=run)
    edited = {"order_id": "ORD-1001", "amount": 75, "reason": "partial refund agreed"}
    with commit():
        action_request_decide(action=action, actor=reviewer, verdict="edit", arguments=edited)
    action.refresh_from_db()
    assert action.status == ActionStatus.EXECUTED
    assert action.proposed_arguments["amount"] == "300"
    assert action.arguments["amount"] == "75"
    assert Refund.objects.get().amount == Decimal("75.00")
    event = AuditEvent.objects.get(event="action.decided", target_id=str(action.pk))
    assert event.before["arguments"]["amount"] == "300"
    assert event.after["arguments"]["amount"] == "75"
    assert action.decision.arguments_before["amount"] == "300"


def test_tool_failure_is_fed_back(refund_agent, orders, commit):
    Order.objects.filter(order_id="ORD-1001").update(total=50)
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=90), actor=None)
    action = ActionRequest.objects.get(run=run)
    run.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    assert "exceeds_order_total" in action.error
    assert run.status == RunStatus.SUCCEEDED
    assert "failed" in run.result
    assert not Refund.objects.exists()


def test_run_input_failing_the_schema_writes_nothing(refund_agent):
    with pytest.raises(InvalidInput, match="amount"):
        run_start(agent=refund_agent, input={"ticket": "x", "order_id": "ORD-1001"}, actor=None)
    with pytest.raises(InvalidInput, match="JSON object"):
        run_start(agent=refund_agent, input=["not", "an", "object"], actor=None)
    assert not Run.objects.exists()
    assert not AuditEvent.objects.filter(event="run.started").exists()


def test_paused_agent_refuses_new_runs(refund_agent, demo_user):
    admin = demo_user("admin")
    agent = agent_update(agent=refund_agent, actor=admin, is_paused=True)
    with pytest.raises(Conflict, match="paused"):
        run_start(agent=agent, input=refund_input(), actor=None)
    event = AuditEvent.objects.get(event="agent.updated")
    assert event.before == {"is_paused": False}
    assert event.after == {"is_paused": True}


class ScriptedSequence:
    """A provider for tests: replays a fixed list of proposals, then finishes."""

    def __init__(self, proposals):
        self.proposals = proposals

    def propose(self, context):
        turn = len(context.history)
        if turn < len(self.proposals):
            return ProviderResult(self.proposals[turn], model="sequence")
        return ProviderResult(
            FinalAnswer(f"done after {turn} results: {[h['outcome'] for h in context.history]}"), model="sequence"
        )


def _use_provider(agent, provider, name):
    register_provider(name, provider)
    type(agent).objects.filter(pk=agent.pk).update(provider=name)


def test_guard_refuses_unknown_tool_and_bad_arguments_and_feeds_them_back(refund_agent, orders, commit):
    agent = refund_agent
    _use_provider(
        agent,
        ScriptedSequence(
            [
                ToolCallProposal("wire_money", {"to": "x"}, 0.99, "hallucinated"),
                ToolCallProposal("delete_contacts", {"ids": [1]}, 0.99, "not enabled here"),
                ToolCallProposal("issue_refund", {"order_id": "nope", "amount": -5, "reason": "x"}, 0.99, "bad"),
            ]
        ),
        "test-guard",
    )
    with commit():
        run = run_start(agent=agent, input=refund_input(), actor=None)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == "done after 3 results: ['refused', 'refused', 'refused']"
    codes = [s.payload["code"] for s in run.steps.filter(kind=StepKind.GUARD)]
    assert codes == ["unknown_tool", "tool_not_enabled", "invalid_arguments"]
    assert AuditEvent.objects.filter(event="action.refused").count() == 3
    assert not ActionRequest.objects.exists()


def test_deny_policy_is_fed_back(refund_agent, orders, commit):

    agent = refund_agent
    agent_tool_configure(agent=agent, tool="issue_refund", actor=None, mode="deny")
    with commit():
        run = run_start(agent=agent, input=refund_input(), actor=None)
    run.refresh_from_db()
    action = ActionRequest.objects.get(run=run)
    assert action.status == ActionStatus.DENIED
    assert "denied" in run.result
    assert not Refund.objects.exists()


def test_step_limit_halts_the_run(refund_agent, orders, commit):
    agent = refund_agent
    varied = [ToolCallProposal("wire_money", {"attempt": i}, 0.9, "again") for i in range(50)]
    _use_provider(agent, ScriptedSequence(varied), "test-steps")
    with commit():
        run = run_start(agent=agent, input=refund_input(), actor=None)
    run.refresh_from_db()
    assert run.status == RunStatus.HALTED
    assert run.halt_reason == "step limit reached (6 steps)"
    assert AuditEvent.objects.filter(event="run.halted", target_id=str(run.pk)).exists()


def test_advance_of_a_run_that_is_not_queued_does_nothing(refund_agent, orders, commit):
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=250), actor=None)
    steps_before = run.steps.count()
    advance_run(run.pk)  # a duplicate delivery while the run waits
    assert run.steps.count() == steps_before
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING


def test_the_same_failing_call_repeated_is_a_loop(refund_agent, orders, commit):
    agent = refund_agent
    same = ToolCallProposal("wire_money", {"to": "x"}, 0.9, "again")
    _use_provider(agent, ScriptedSequence([same] * 50), "test-loop")
    with commit():
        run = run_start(agent=agent, input=refund_input(), actor=None)
    run.refresh_from_db()
    assert run.status == RunStatus.HALTED
    assert run.halt_reason == "loop detected: the same failing call to 'wire_money' 3 times in a row"
    assert run.steps.filter(kind=StepKind.TOOL_RESULT).count() == 3
