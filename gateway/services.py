"""The gateway's writes: open a tools/call (or join the identical one still open), and close it once answered."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.guard import GuardRefusal
from agents.models import Agent
from approvals import routing
from approvals.decisions import action_request_withdraw
from approvals.models import ActionRequest, ActionStatus
from approvals.settled import notify_changed
from audit.chain import canonical_value
from audit.services import record
from core.errors import Conflict
from gateway.answers import TASK_STATUS
from gateway.models import GatewayCall, GatewayTask


def call_key(tool: str, arguments: Any) -> str:
    """SHA-256 of the canonical (tool, arguments): key order, 1.0 against 1 and the like do not matter."""
    body = json.dumps(
        {"tool": tool, "arguments": canonical_value(arguments)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Opened:
    call: GatewayCall | None
    joined: bool = False
    refusal: GuardRefusal | None = None
    task: GatewayTask | None = None


class TooManyTasks(Conflict):
    code = "too_many_tasks"


# The shortest task kept, whatever the client asks: a task must outlive the answer that announces it.
MIN_TASK_TTL_MS = 60_000


def task_ttl_ms(requested: int | None) -> int:
    """The lifetime a task is given: what the client asked for, within [1 minute, GATEWAY_TASK_TTL_SECONDS]."""
    most = settings.GATEWAY_TASK_TTL_SECONDS * 1000
    return most if requested is None else min(max(requested, MIN_TASK_TTL_MS), most)


def _task_for(call: GatewayCall, *, owner: User, ttl_ms: int) -> GatewayTask:
    """Inside the call's transaction, its row locked: the requestor's live task on the call, or a new one."""
    now = timezone.now()
    mine = GatewayTask.objects.filter(owner=owner, cancelled_at__isnull=True, expires_at__gt=now)
    live = mine.filter(call=call).first()
    if live is not None:
        return live  # asked again: the task it has
    # A cap per requestor (the MCP spec asks for one). Not locked: concurrent calls may pass it by a few.
    if mine.filter(call__answered_at__isnull=True).count() >= settings.GATEWAY_MAX_OPEN_TASKS:
        raise TooManyTasks(f"at most {settings.GATEWAY_MAX_OPEN_TASKS} tasks whose result was not fetched")
    return GatewayTask.objects.create(
        task_id=secrets.token_urlsafe(24),
        call=call,
        owner=owner,
        created_at=now,
        expires_at=now + timedelta(milliseconds=ttl_ms),
    )


def gateway_call_open(
    *,
    agent: Agent,
    actor: User,
    tool: str,
    arguments: dict[str, Any],
    confidence: float,
    rationale: str,
    as_task: bool = False,
    task_ttl: int | None = None,
) -> Opened:
    """Route a tools/call like any proposed call, or join the identical call whose answer is still owed.

    `as_task` (a task-augmented call, with the ttl it asked for in milliseconds): the requestor also gets
    an MCP task on the call (the one it has, if it asked before). Lock order: the open call's row (or
    its slot in the unique index) first, then what routing takes (domain rows, counters, the audit
    append last).
    """
    key = call_key(tool, arguments)
    for attempt in range(2):
        try:
            with transaction.atomic():
                open_call = (
                    GatewayCall.objects.select_for_update()
                    .filter(agent=agent, key=key, answered_at__isnull=True)
                    .first()
                )
                if open_call is not None:
                    task = _task_for(open_call, owner=actor, ttl_ms=task_ttl_ms(task_ttl)) if as_task else None
                    return Opened(call=open_call, joined=True, task=task)
                # A concurrent identical call blocks on this insert until we commit, then fails and joins.
                call = GatewayCall.objects.create(agent=agent, key=key)
                task = _task_for(call, owner=actor, ttl_ms=task_ttl_ms(task_ttl)) if as_task else None
                outcome = routing.route_tool_call(
                    agent=agent,
                    run=None,
                    tool=tool,
                    arguments=arguments,
                    confidence=confidence,
                    rationale=rationale,
                    actor=actor,
                    call_id=f"mcp-{call.pk}",
                )
                if outcome.refusal is not None:
                    transaction.set_rollback(True)  # a refused call leaves nothing behind, the claim included
                    return Opened(call=None, refusal=outcome.refusal)
                call.action = outcome.action
                call.save(update_fields=["action"])
                return Opened(call=call, task=task)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def gateway_call_answered(*, call_id: int) -> bool:
    """Close the call once a caller got its final answer; False if another caller closed it first."""
    # Compare-and-set: two callers waiting on one call both get the answer, one closes it.
    return GatewayCall.objects.filter(pk=call_id, answered_at__isnull=True).update(answered_at=timezone.now()) == 1


class TaskFinished(Conflict):
    code = "task_finished"


def gateway_task_cancel(*, task: GatewayTask, actor: User) -> GatewayTask:
    """tasks/cancel: the task is cancelled; a request waiting for a person, and for nobody else, is withdrawn.

    An action already approved is not stopped: it runs exactly once, its call stays open (an identical
    call joins it rather than run it again), and the task stays cancelled whatever comes of it.
    TaskFinished if the task was already cancelled or its action in a final state.
    Lock order: the call, the task, the action (as opening a call: the call's row first).
    """
    with transaction.atomic():
        call = GatewayCall.objects.select_for_update().get(pk=task.call_id)
        assert call.action_id is not None  # set in the transaction that opened the call
        locked = GatewayTask.objects.select_for_update().get(pk=task.pk)
        if locked.cancelled_at is not None:
            raise TaskFinished("Cannot cancel task: already in terminal status 'cancelled'")
        # Locked, so its tier and status are current: no escalation or decision slips in between.
        action = ActionRequest.objects.select_for_update().get(pk=call.action_id)
        if action.status in TASK_STATUS:
            raise TaskFinished(f"Cannot cancel task: already in terminal status '{TASK_STATUS[action.status]}'")
        now = timezone.now()
        others = (
            GatewayTask.objects.filter(call=call, cancelled_at__isnull=True, expires_at__gt=now)
            .exclude(pk=locked.pk)
            .exists()
        )
        withdrawn = (
            action.status == ActionStatus.PENDING
            and not others
            and action_request_withdraw(action=action, actor=actor, reason="withdrawn by the agent (MCP tasks/cancel)")
        )
        locked.cancelled_at = now
        locked.save(update_fields=["cancelled_at"])
        if withdrawn:
            # The withdrawal is the call's answer: an identical call from now on is a new request.
            call.answered_at = now
            call.save(update_fields=["answered_at"])
        else:
            record(
                actor=actor,
                event="gateway.task_cancelled",
                target=action,
                agent_id=action.agent_id,
                after={
                    "action_status": action.status,
                    "why_not_withdrawn": "another requestor waits on it" if others else "already approved",
                },
            )
            # Whoever waits on this task's result (tasks/result) wakes at commit, as for a status change.
            notify_changed(action.pk, action.agent_id)
    return locked


def gateway_tasks_purge() -> int:
    """Forget MCP tasks past their lifetime (the spec: clean up expired tasks); their calls and actions stay."""
    deleted, _ = GatewayTask.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
