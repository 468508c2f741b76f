"""MCP Tasks' writes and reads: one task per open call, its lifetime, its cap, its cancellation, its listing."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import mcp_types as types
import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.shared.exceptions import MCPError

from approvals.decisions import action_request_decide
from approvals.models import ActionStatus
from audit.models import AuditEvent
from core.errors import Conflict
from gateway import mcp
from gateway.models import GatewayCall
from gateway.selectors import Caller, task_for
from gateway.services import TaskFinished, TooManyTasks, gateway_call_open, gateway_task_cancel, task_ttl_ms
from tests.conftest import user

REFUND = {"order_id": "ORD-1004", "amount": 150, "reason": "arrived broken"}
MOST = 7 * 24 * 3600 * 1000


def _open(agent, arguments=REFUND, **task: Any):
    return gateway_call_open(
        agent=agent,
        actor=user("operator"),
        tool="issue_refund",
        arguments=arguments,
        confidence=1.0,
        rationale="test",
        as_task=True,
        **task,
    )


@given(requested=st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63)))
def test_a_task_lives_as_long_as_asked_within_the_longest_kept(requested):
    ttl = task_ttl_ms(requested)
    assert 0 < ttl <= MOST
    if requested is not None and 0 < requested <= MOST:
        assert ttl == requested


@pytest.mark.django_db
def test_an_identical_task_call_is_given_the_same_task_and_an_expired_task_a_new_one(refund_agent, orders, demo_user):
    demo_user("operator")
    first = _open(refund_agent, task_ttl=60_000).call
    assert first.task_id and first.task_expires_at - first.task_created_at == timedelta(seconds=60)
    again = _open(refund_agent, {"reason": "arrived broken", "amount": 150.0, "order_id": "ORD-1004"})
    assert again.joined and again.call.task_id == first.task_id
    # Past its lifetime the task is gone for the client; the request it wrapped is not.
    GatewayCall.objects.filter(pk=first.pk).update(task_expires_at=timezone.now() - timedelta(seconds=1))
    assert task_for(agent=refund_agent, task_id=first.task_id) is None
    renewed = _open(refund_agent).call
    assert renewed.pk == first.pk and renewed.task_id != first.task_id
    assert task_for(agent=refund_agent, task_id=renewed.task_id).action_id == first.action_id


@pytest.mark.django_db
@override_settings(GATEWAY_MAX_OPEN_TASKS=2)
def test_an_agent_has_at_most_the_configured_open_tasks_and_a_refused_one_writes_nothing(
    refund_agent, orders, demo_user
):
    demo_user("operator")
    _open(refund_agent, {**REFUND, "amount": 151})
    _open(refund_agent, {**REFUND, "amount": 152})
    _open(refund_agent, {**REFUND, "amount": 152})  # joining its own task opens none
    calls = GatewayCall.objects.count()
    with pytest.raises(TooManyTasks):
        _open(refund_agent, {**REFUND, "amount": 153})
    assert GatewayCall.objects.count() == calls
    assert not GatewayCall.objects.filter(action__arguments__amount=153).exists()


@pytest.mark.django_db
def test_cancelling_withdraws_a_pending_request_and_cannot_be_done_twice(refund_agent, orders, demo_user):
    demo_user("operator")
    call = _open(refund_agent).call
    cancelled = gateway_task_cancel(call=call, actor=user("operator"))
    assert cancelled.task_cancelled_at is not None and cancelled.answered_at is not None
    call.action.refresh_from_db()
    assert call.action.status == ActionStatus.CANCELLED
    assert AuditEvent.objects.filter(event="action.withdrawn", target_id=str(call.action_id)).count() == 1
    with pytest.raises(TaskFinished, match="cancelled"):
        gateway_task_cancel(call=call, actor=user("operator"))


@pytest.mark.django_db
def test_cancelling_an_approved_task_leaves_its_action_to_run_once(refund_agent, orders, demo_user):
    demo_user("operator")
    demo_user("reviewer")
    call = _open(refund_agent).call
    action_request_decide(action=call.action, actor=user("reviewer"), verdict="approve", comment="ok")
    cancelled = gateway_task_cancel(call=call, actor=user("operator"))
    call.action.refresh_from_db()
    assert call.action.status == ActionStatus.APPROVED  # not withdrawn: the worker runs it, once
    assert cancelled.task_cancelled_at is not None
    assert AuditEvent.objects.filter(event="gateway.task_cancelled", target_id=str(call.action_id)).exists()


@pytest.mark.django_db
def test_a_finished_task_cannot_be_cancelled(refund_agent, orders, demo_user):
    demo_user("operator")
    demo_user("reviewer")
    call = _open(refund_agent).call
    action_request_decide(action=call.action, actor=user("reviewer"), verdict="reject", comment="no")
    with pytest.raises(TaskFinished, match="'failed'"):
        gateway_task_cancel(call=call, actor=user("operator"))
    assert GatewayCall.objects.get(pk=call.pk).task_cancelled_at is None


@pytest.mark.django_db(transaction=True)
def test_a_cancel_and_a_decision_at_once_leave_one_outcome(refund_agent, orders, demo_user):
    demo_user("operator")
    demo_user("reviewer")
    call = _open(refund_agent).call
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def run(name: str, work: Any) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[name] = work()
        except Conflict as exc:
            outcomes[name] = exc
        finally:
            connection.close()

    cancel = threading.Thread(
        target=run, args=("cancel", lambda: gateway_task_cancel(call=call, actor=user("operator")))
    )
    decide = threading.Thread(
        target=run,
        args=(
            "decide",
            lambda: action_request_decide(action=call.action, actor=user("reviewer"), verdict="approve", comment="ok"),
        ),
    )
    for thread in (cancel, decide):
        thread.start()
    for thread in (cancel, decide):
        thread.join(timeout=30)
    call.action.refresh_from_db()
    withdrawn = AuditEvent.objects.filter(event="action.withdrawn", target_id=str(call.action_id)).exists()
    approved = AuditEvent.objects.filter(event="action.decided", target_id=str(call.action_id)).exists()
    # Either the withdrawal or the approval happened, never both, and the action says which.
    assert withdrawn != approved
    # (An approval is executed on commit: these tests run Celery's tasks in the process.)
    ran = {ActionStatus.APPROVED, ActionStatus.EXECUTED}
    assert call.action.status in ({ActionStatus.CANCELLED} if withdrawn else ran)
    assert GatewayCall.objects.get(pk=call.pk).task_cancelled_at is not None  # the task is cancelled either way


def _ctx(agent) -> Any:
    caller = Caller(user=user("operator"), agent=agent)
    return SimpleNamespace(request=SimpleNamespace(scope={mcp.CALLER: caller}))


@pytest.mark.django_db(transaction=True)
def test_tasks_list_pages_newest_first_with_a_cursor_nobody_can_forge(refund_agent, orders, demo_user, monkeypatch):
    demo_user("operator")
    monkeypatch.setattr(mcp, "TASKS_PAGE", 2)
    made = [_open(refund_agent, {**REFUND, "amount": 150 + n}).call.task_id for n in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor)
        page = asyncio.run(mcp.list_tasks(_ctx(refund_agent), params))
        assert len(page["tasks"]) <= 2
        seen += [task["taskId"] for task in page["tasks"]]
        cursor = page.get("nextCursor")
        if cursor is None:
            break
    assert seen == made[::-1]
    for forged in ("1", "not-a-cursor", cursor or "", "eyJiZWZvcmUiOjF9:1:abc"):
        with pytest.raises(MCPError) as refused:
            asyncio.run(mcp.list_tasks(_ctx(refund_agent), types.PaginatedRequestParams(cursor=forged)))
        assert refused.value.error.code == -32602


@pytest.mark.django_db(transaction=True)
@given(task_id=st.text(max_size=300))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_task_id_that_is_not_one_of_the_agents_tasks_is_invalid_params(refund_agent, demo_user, task_id):
    # Hostile ids (NUL, lone surrogates, long text) are answered like unknown ones, never with another error.
    demo_user("operator")
    for handler, params in (
        (mcp.get_task, types.GetTaskRequestParams(task_id=task_id)),
        (mcp.get_task_result, types.GetTaskPayloadRequestParams(task_id=task_id)),
        (mcp.cancel_task, types.CancelTaskRequestParams(task_id=task_id)),
    ):
        with pytest.raises(MCPError) as refused:
            asyncio.run(handler(_ctx(refund_agent), params))
        assert refused.value.error.code == -32602
