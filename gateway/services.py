"""The gateway's writes: open a tools/call (or join the identical one still open), and close it once answered."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, User
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.guard import GuardRefusal
from agents.models import Agent
from approvals import routing
from approvals.decisions import action_request_withdraw
from approvals.models import ActionStatus
from audit.chain import canonical_value
from audit.services import record
from core.errors import Conflict
from gateway.answers import TASK_STATUS
from gateway.models import GatewayCall


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


class TooManyTasks(Conflict):
    code = "too_many_tasks"


def task_ttl_ms(requested: int | None) -> int:
    """The lifetime a task is given: what the client asked for, within (0, GATEWAY_TASK_TTL_SECONDS]."""
    most = settings.GATEWAY_TASK_TTL_SECONDS * 1000
    return most if requested is None or requested <= 0 else min(requested, most)


def _give_task(call: GatewayCall, *, ttl_ms: int) -> None:
    """Inside the call's transaction, its row locked: the call gets a task, or keeps its live one."""
    now = timezone.now()
    if call.task_id is not None and call.task_expires_at is not None and call.task_expires_at > now:
        return  # an identical task-augmented call is given the task already running
    if call.task_id is None:
        # Bounded per agent (the MCP spec asks receivers to cap concurrent tasks per requestor).
        owed = GatewayCall.objects.filter(
            agent_id=call.agent_id, task_id__isnull=False, task_expires_at__gt=now, answered_at__isnull=True
        )
        if owed.count() >= settings.GATEWAY_MAX_OPEN_TASKS:
            raise TooManyTasks(
                f"this agent already has {settings.GATEWAY_MAX_OPEN_TASKS} tasks whose result was not fetched"
            )
    # Unguessable (192 bits): the id is also bound to the agent, whose endpoint alone may read it.
    call.task_id = secrets.token_urlsafe(24)
    call.task_created_at = now
    call.task_expires_at = now + timedelta(milliseconds=ttl_ms)
    call.save(update_fields=["task_id", "task_created_at", "task_expires_at"])


def gateway_call_open(
    *,
    agent: Agent,
    actor: AbstractBaseUser,
    tool: str,
    arguments: dict[str, Any],
    confidence: float,
    rationale: str,
    as_task: bool = False,
    task_ttl: int | None = None,
) -> Opened:
    """Route a tools/call like any proposed call, or join the identical call whose answer is still owed.

    `as_task` (a task-augmented call, with the ttl it asked for in milliseconds): the call is also given
    an MCP task, or the joined call's live task. Lock order: the open call's row (or its slot in the
    unique index) first, then what routing takes (domain rows, counters, the audit append last).
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
                    if as_task:
                        _give_task(open_call, ttl_ms=task_ttl_ms(task_ttl))
                    return Opened(call=open_call, joined=True)
                # A concurrent identical call blocks on this insert until we commit, then fails and joins.
                call = GatewayCall.objects.create(agent=agent, key=key)
                if as_task:
                    _give_task(call, ttl_ms=task_ttl_ms(task_ttl))
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
                return Opened(call=call)
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


def gateway_task_cancel(*, call: GatewayCall, actor: User) -> GatewayCall:
    """tasks/cancel: the task is cancelled; a request still waiting for a person is withdrawn with it.

    An action already approved is not stopped: it runs exactly once, and the task stays cancelled
    whatever comes of it. TaskFinished if the task had already reached a final state.
    """
    with transaction.atomic():
        locked = GatewayCall.objects.select_for_update(of=("self",)).select_related("action").get(pk=call.pk)
        action = locked.action
        assert action is not None
        if locked.task_cancelled_at is not None:
            raise TaskFinished("Cannot cancel task: already in terminal status 'cancelled'")
        withdrawn = action.status == ActionStatus.PENDING and action_request_withdraw(
            action=action, actor=actor, reason="withdrawn by the agent (MCP tasks/cancel)"
        )
        action.refresh_from_db(fields=["status"])
        if not withdrawn and action.status in TASK_STATUS:
            raise TaskFinished(f"Cannot cancel task: already in terminal status '{TASK_STATUS[action.status]}'")
        now = timezone.now()
        # The cancellation is the call's answer: an identical call from now on is a new request.
        locked.task_cancelled_at = now
        locked.answered_at = locked.answered_at or now
        locked.save(update_fields=["task_cancelled_at", "answered_at"])
        if not withdrawn:
            record(
                actor=actor,
                event="gateway.task_cancelled",
                target=action,
                agent_id=action.agent_id,
                after={"task": locked.task_id, "action_status": action.status, "note": "the action still runs"},
            )
    return locked
