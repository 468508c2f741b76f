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

from accounts.services import agent_token_issue
from approvals.decisions import action_request_decide
from approvals.models import ActionStatus
from audit.models import AuditEvent
from core.errors import Conflict
from gateway import mcp
from gateway.models import GatewayCall, GatewayTask
from gateway.selectors import Caller, task_for, tasks_page
from gateway.services import (
    MIN_TASK_TTL_MS,
    TaskFinished,
    TooManyTasks,
    gateway_call_open,
    gateway_task_cancel,
    task_ttl_ms,
)
from gateway.tasks import purge_tasks
from tests.conftest import user

REFUND = {"order_id": "ORD-1004", "amount": 150, "reason": "arrived broken"}
MOST = 7 * 24 * 3600 * 1000


def _open(agent, arguments=REFUND, *, by="operator", **task: Any):
    return gateway_call_open(
        agent=agent,
        actor=user(by),
        tool="issue_refund",
        arguments=arguments,
        confidence=1.0,
        rationale="test",
        as_task=True,
        **task,
    )


def _other_operator(agent):
    """A second requestor that may operate the agent: the agent's own identity (issue 14's tokens)."""
    _, identity = agent_token_issue(agent=agent, actor=user("admin"))
    return identity


@given(requested=st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63)))
def test_a_task_lives_as_long_as_asked_within_a_minute_and_the_longest_kept(requested):
    ttl = task_ttl_ms(requested)
    assert MIN_TASK_TTL_MS <= ttl <= MOST
    if requested is not None and MIN_TASK_TTL_MS <= requested <= MOST:
        assert ttl == requested


@pytest.mark.django_db
def test_asking_again_gives_the_same_task_and_an_expired_task_a_new_one(refund_agent, orders, demo_user):
    demo_user("operator")
    first = _open(refund_agent, task_ttl=60_000).task
    assert first.expires_at - first.created_at == timedelta(seconds=60)
    again = _open(refund_agent, {"reason": "arrived broken", "amount": 150.0, "order_id": "ORD-1004"})
    assert again.joined and again.task.pk == first.pk
    # Past its lifetime the task is gone for the client; the request it wrapped is not.
    GatewayTask.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    operator = user("operator")
    assert task_for(agent=refund_agent, owner=operator, task_id=first.task_id) is None
    renewed = _open(refund_agent).task
    assert renewed.call_id == first.call_id and renewed.task_id != first.task_id
    assert task_for(agent=refund_agent, owner=operator, task_id=renewed.task_id).call.action_id == first.call.action_id


@pytest.mark.django_db
def test_tasks_past_their_lifetime_are_purged_and_their_requests_kept(refund_agent, orders, demo_user):
    demo_user("operator")
    old = _open(refund_agent, task_ttl=60_000).task
    live = _open(refund_agent, {**REFUND, "amount": 151}).task
    GatewayTask.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert purge_tasks() == 1
    assert list(GatewayTask.objects.values_list("pk", flat=True)) == [live.pk]
    assert GatewayCall.objects.filter(pk=old.call_id, action__isnull=False).exists()  # the request stays
    assert purge_tasks() == 0  # safe to run twice


@pytest.mark.django_db
def test_each_requestor_of_one_call_has_a_task_only_it_can_find(refund_agent, orders, demo_user):
    demo_user("operator")
    demo_user("admin")
    other = _other_operator(refund_agent)
    mine = _open(refund_agent).task
    theirs = _open(refund_agent, by=other.username).task
    assert theirs.call_id == mine.call_id and theirs.pk != mine.pk  # one request, two handles on it
    operator = user("operator")
    assert task_for(agent=refund_agent, owner=other, task_id=mine.task_id) is None
    assert task_for(agent=refund_agent, owner=operator, task_id=theirs.task_id) is None
    assert [t.pk for t in tasks_page(agent=refund_agent, owner=operator, before=None, limit=10)] == [mine.pk]


@pytest.mark.django_db
@override_settings(GATEWAY_MAX_OPEN_TASKS=2)
def test_a_requestor_has_at_most_the_configured_open_tasks_and_a_refused_one_writes_nothing(
    refund_agent, orders, demo_user
):
    demo_user("operator")
    demo_user("admin")
    _open(refund_agent, {**REFUND, "amount": 151})
    _open(refund_agent, {**REFUND, "amount": 152})
    _open(refund_agent, {**REFUND, "amount": 152})  # asking again opens none
    calls = GatewayCall.objects.count()
    with pytest.raises(TooManyTasks):
        _open(refund_agent, {**REFUND, "amount": 153})
    assert GatewayCall.objects.count() == calls
    assert not GatewayCall.objects.filter(action__arguments__amount=153).exists()
    # The cap is per requestor: another one may still ask.
    assert _open(refund_agent, {**REFUND, "amount": 153}, by=_other_operator(refund_agent).username).task


@pytest.mark.django_db
def test_cancelling_withdraws_a_pending_request_and_cannot_be_done_twice(refund_agent, orders, demo_user):
    demo_user("operator")
    opened = _open(refund_agent)
    cancelled = gateway_task_cancel(task=opened.task, actor=user("operator"))
    assert cancelled.cancelled_at is not None
    call = GatewayCall.objects.select_related("action").get(pk=opened.call.pk)
    assert call.action.status == ActionStatus.CANCELLED and call.answered_at is not None
    assert AuditEvent.objects.filter(event="action.withdrawn", target_id=str(call.action_id)).count() == 1
    with pytest.raises(TaskFinished, match="cancelled"):
        gateway_task_cancel(task=opened.task, actor=user("operator"))


@pytest.mark.django_db
def test_cancelling_one_requestors_task_leaves_the_request_to_the_other(refund_agent, orders, demo_user):
    demo_user("operator")
    demo_user("admin")
    mine = _open(refund_agent).task
    theirs = _open(refund_agent, by=_other_operator(refund_agent).username).task
    gateway_task_cancel(task=mine, actor=user("operator"))
    call = GatewayCall.objects.select_related("action").get(pk=mine.call_id)
    assert call.action.status == ActionStatus.PENDING and call.answered_at is None
    assert GatewayTask.objects.get(pk=theirs.pk).cancelled_at is None
    event = AuditEvent.objects.get(event="gateway.task_cancelled", target_id=str(call.action_id))
    assert event.after["why_not_withdrawn"] == "another requestor waits on it"


@pytest.mark.django_db
def test_cancelling_an_approved_task_leaves_its_action_to_run_once_and_its_call_open(refund_agent, orders, demo_user):
    demo_user("operator")
    demo_user("reviewer")
    opened = _open(refund_agent)
    action_request_decide(action=opened.call.action, actor=user("reviewer"), verdict="approve", comment="ok")
    cancelled = gateway_task_cancel(task=opened.task, actor=user("operator"))
    call = GatewayCall.objects.select_related("action").get(pk=opened.call.pk)
    assert call.action.status == ActionStatus.APPROVED  # not withdrawn: the worker runs it, once
    assert cancelled.cancelled_at is not None
    assert AuditEvent.objects.filter(event="gateway.task_cancelled", target_id=str(call.action_id)).exists()
    # The call stays open while its action runs: the same call again joins it (a new task), not a second run.
    again = _open(refund_agent)
    assert again.joined and again.call.pk == call.pk and again.task.pk != opened.task.pk


@pytest.mark.django_db
def test_a_finished_task_cannot_be_cancelled(refund_agent, orders, demo_user):
    demo_user("operator")
    demo_user("reviewer")
    opened = _open(refund_agent)
    action_request_decide(action=opened.call.action, actor=user("reviewer"), verdict="reject", comment="no")
    with pytest.raises(TaskFinished, match="'failed'"):
        gateway_task_cancel(task=opened.task, actor=user("operator"))
    assert GatewayTask.objects.get(pk=opened.task.pk).cancelled_at is None


@pytest.mark.django_db(transaction=True)
def test_a_cancel_and_a_decision_at_once_leave_one_outcome(refund_agent, orders, demo_user):
    demo_user("operator")
    demo_user("reviewer")
    opened = _open(refund_agent)
    action = opened.call.action
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
        target=run, args=("cancel", lambda: gateway_task_cancel(task=opened.task, actor=user("operator")))
    )
    decide = threading.Thread(
        target=run,
        args=(
            "decide",
            lambda: action_request_decide(action=action, actor=user("reviewer"), verdict="approve", comment="ok"),
        ),
    )
    for thread in (cancel, decide):
        thread.start()
    for thread in (cancel, decide):
        thread.join(timeout=30)
    action.refresh_from_db()
    withdrawn = AuditEvent.objects.filter(event="action.withdrawn", target_id=str(action.pk)).exists()
    approved = AuditEvent.objects.filter(event="action.decided", target_id=str(action.pk)).exists()
    # Either the withdrawal or the approval happened, never both, and the action says which.
    assert withdrawn != approved
    # (An approval is executed on commit: these tests run Celery's tasks in the process.)
    ran = {ActionStatus.APPROVED, ActionStatus.EXECUTED}
    assert action.status in ({ActionStatus.CANCELLED} if withdrawn else ran)
    task = GatewayTask.objects.get(pk=opened.task.pk)
    if withdrawn:
        assert task.cancelled_at is not None and outcomes["cancel"].pk == task.pk
    else:
        # The cancel came while the action was approved or running (the task is cancelled, the action goes
        # on), or after it had run (a finished task cannot be cancelled): never both, never neither.
        assert (task.cancelled_at is not None) != isinstance(outcomes["cancel"], TaskFinished)


def _ctx(agent, by: str = "operator") -> Any:
    caller = Caller(user=user(by), agent=agent)
    return SimpleNamespace(request=SimpleNamespace(scope={mcp.CALLER: caller}))


@pytest.mark.django_db(transaction=True)
def test_tasks_list_pages_newest_first_with_a_cursor_nobody_can_forge(refund_agent, orders, demo_user, monkeypatch):
    demo_user("operator")
    monkeypatch.setattr(mcp, "TASKS_PAGE", 2)
    made = [_open(refund_agent, {**REFUND, "amount": 150 + n}).task.task_id for n in range(5)]
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
