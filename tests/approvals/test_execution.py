from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.models import RunStatus
from agents.services import run_start
from agents.tools import ToolError, get_tool
from approvals.decisions import action_request_decide
from approvals.execution import (
    StaleExecution,
    _finish,
    action_execute,
    action_resolve_in_doubt,
    action_undo,
    executions_sweep,
)
from approvals.models import ActionRequest, ActionStatus, Execution, ExecutionStatus
from audit.models import AuditEvent
from core.errors import IllegalTransition, InvalidInput
from demo.models import Contact, Order, Refund
from tests.conftest import refund_input, user

pytestmark = pytest.mark.django_db


def approved_refund(demo, commit, amount=250):
    """A refund approved by a reviewer whose execution has not run yet."""

    with commit():
        run = run_start(agent=demo["refund-triage"], input=refund_input(amount=amount, order="ORD-1003"), actor=None)
    action = ActionRequest.objects.get(run=run)
    # Decide without running the on-commit execution, as if the worker were down.
    action_request_decide(action=action, actor=user("reviewer"), verdict="approve")
    return Execution.objects.get(action=action), action


def test_transient_tool_error_is_retried_then_succeeds(demo, commit):
    tool = get_tool("issue_refund")
    real = tool.execute
    failures = [ToolError("upstream_503", "payments API unavailable", transient=True)]

    def flaky(args, key):
        if failures:
            raise failures.pop()
        return real(args, key)

    object.__setattr__(tool, "execute", flaky)  # Tool is frozen; the registry holds this instance
    try:
        execution, action = approved_refund(demo, commit)
        with commit():
            action_execute(execution_id=execution.pk)
    finally:
        object.__setattr__(tool, "execute", real)
    execution.refresh_from_db()
    action.refresh_from_db()
    assert execution.status == ExecutionStatus.DONE
    assert execution.attempts == 2
    assert action.status == ActionStatus.EXECUTED
    assert Refund.objects.count() == 1
    retry = AuditEvent.objects.get(event="action.retry_scheduled")
    assert retry.after["error"] == {"code": "upstream_503", "message": "payments API unavailable", "transient": True}


def test_permanent_tool_error_is_fed_back_in_one_shape(demo, commit):
    Order.objects.filter(order_id="ORD-1003").update(total=Decimal(10))
    execution, action = approved_refund(demo, commit)
    with commit():
        action_execute(execution_id=execution.pk)
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    feedback = action.run.steps.filter(kind="tool_result").last().payload
    assert feedback["outcome"] == "failed"
    assert feedback["error_detail"]["code"] == "exceeds_order_total"
    assert feedback["error_detail"]["transient"] is False


def test_sweeper_republishes_an_execution_that_was_never_started(demo, commit):
    execution, action = approved_refund(demo, commit)
    Execution.objects.filter(pk=execution.pk).update(published_at=timezone.now() - timedelta(minutes=5))
    with commit():
        counts = executions_sweep()
    assert counts["republished"] == 1
    action.refresh_from_db()
    assert action.status == ActionStatus.EXECUTED
    assert Refund.objects.count() == 1
    assert Execution.objects.get(pk=execution.pk).published_at > timezone.now() - timedelta(minutes=1)
    # Running it again changes nothing: the execution is done.
    with commit():
        assert executions_sweep() == {"republished": 0, "retried": 0, "in_doubt": 0}
        action_execute(execution_id=execution.pk)
    assert Refund.objects.count() == 1


def test_interrupted_transactional_execution_is_retried_once(demo, commit):
    execution, action = approved_refund(demo, commit)
    # A worker claimed it and died before committing the effect.
    Execution.objects.filter(pk=execution.pk).update(
        status=ExecutionStatus.RUNNING, attempts=1, lease_until=timezone.now() - timedelta(seconds=1)
    )
    ActionRequest.objects.filter(pk=action.pk).update(status=ActionStatus.EXECUTING)
    with commit():
        counts = executions_sweep()
    assert counts["retried"] == 1
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.DONE
    assert execution.attempts == 2
    assert Refund.objects.count() == 1
    assert AuditEvent.objects.filter(event="execution.recovered").count() == 1


def test_late_commit_of_a_taken_over_attempt_rolls_back(demo, commit):

    execution, action = approved_refund(demo, commit)
    Execution.objects.filter(pk=execution.pk).update(status=ExecutionStatus.RUNNING, attempts=2)
    ActionRequest.objects.filter(pk=action.pk).update(status=ActionStatus.EXECUTING)
    stale = Execution.objects.get(pk=execution.pk)
    stale.attempts = 1  # the slow first attempt
    with pytest.raises(StaleExecution):
        _finish(stale, action, get_tool("issue_refund"), status=ActionStatus.EXECUTED, result={}, error=None)


def test_interrupted_external_effect_goes_in_doubt_and_a_person_resolves_it(demo, commit):
    tool = get_tool("issue_refund")
    object.__setattr__(tool, "transactional", False)
    try:
        execution, action = approved_refund(demo, commit)
        Execution.objects.filter(pk=execution.pk).update(
            status=ExecutionStatus.RUNNING, attempts=1, lease_until=timezone.now() - timedelta(seconds=1)
        )
        ActionRequest.objects.filter(pk=action.pk).update(status=ActionStatus.EXECUTING)
        with commit():
            counts = executions_sweep()
    finally:
        object.__setattr__(tool, "transactional", True)
    assert counts["in_doubt"] == 1
    action.refresh_from_db()
    assert action.status == ActionStatus.IN_DOUBT
    assert not Refund.objects.exists()  # never retried blindly
    with pytest.raises(InvalidInput):
        action_resolve_in_doubt(action=action, actor=user("reviewer"), executed=True, comment=" ")
    with commit():
        action_resolve_in_doubt(action=action, actor=user("reviewer"), executed=False, comment="not in the ledger")
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED
    action.run.refresh_from_db()
    assert action.run.status == RunStatus.SUCCEEDED  # the agent heard "failed" and finished
    assert AuditEvent.objects.filter(event="action.in_doubt_resolved", actor_label="reviewer").count() == 1


def test_undo_reverses_an_executed_refund_once(demo, commit):
    with commit():
        run = run_start(agent=demo["refund-triage"], input=refund_input(amount=30, order="ORD-1003"), actor=None)
    action = ActionRequest.objects.get(run=run)
    assert action.status == ActionStatus.EXECUTED
    assert Order.objects.get(order_id="ORD-1003").refunded_total == Decimal(30)
    action_undo(action=action, actor=user("reviewer"), comment="customer changed their mind")
    action.refresh_from_db()
    assert action.status == ActionStatus.COMPENSATED
    assert Order.objects.get(order_id="ORD-1003").refunded_total == Decimal(0)
    assert Refund.objects.get().reversed_at is not None
    event = AuditEvent.objects.get(event="action.undone")
    assert event.actor_label == "reviewer"
    with pytest.raises(IllegalTransition):
        action_undo(action=action, actor=user("reviewer"))


def test_undo_restores_deleted_contacts(demo, commit):

    with commit():
        run = run_start(agent=demo["crm-cleanup"], input={"request": "x", "contact_ids": [7, 8]}, actor=None)
    action = ActionRequest.objects.get(run=run)
    with commit():
        action_request_decide(action=action, actor=user("reviewer"), verdict="approve")
    assert Contact.objects.filter(deleted_at__isnull=False).count() == 2
    action_undo(action=ActionRequest.objects.get(pk=action.pk), actor=user("reviewer"))
    assert Contact.objects.filter(deleted_at__isnull=False).count() == 0


def test_pending_action_cannot_be_undone(demo, commit):
    with commit():
        run = run_start(agent=demo["refund-triage"], input=refund_input(amount=300), actor=None)
    with pytest.raises(IllegalTransition):
        action_undo(action=ActionRequest.objects.get(run=run), actor=user("reviewer"))


def test_sweeper_does_not_republish_a_recently_published_execution(demo, commit):
    execution, _ = approved_refund(demo, commit)
    Execution.objects.filter(pk=execution.pk).update(created_at=timezone.now() - timedelta(hours=1))
    with commit():
        assert executions_sweep()["republished"] == 0  # published moments ago: still in the queue
    assert Execution.objects.get(pk=execution.pk).status == ExecutionStatus.PENDING
