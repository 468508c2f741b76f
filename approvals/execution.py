"""Executing approved actions exactly once, recovering interrupted executions, and undo.

Delivery is at least once (Celery acks late and redelivers on worker loss; the
sweeper republishes what was committed but never started). The effect is made
idempotent by the execution record:

- a delivery *claims* the execution (pending -> running, with a lease) in its
  own short transaction; other deliveries find it claimed and stop;
- the tool runs with the execution's idempotency key, and for a transactional
  tool the effect, the execution's "done" and the action's "executed" commit in
  one transaction, guarded by a compare-and-set on the attempt number, so a
  slow worker whose lease was taken over cannot commit a second effect;
- an execution whose lease ran out was interrupted: a transactional tool's
  effect rolled back with it, so it is retried; any other tool's effect is
  unknown, so it becomes `in_doubt` and waits for a person.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents import breakers
from agents import services as agent_services
from agents.models import AgentTool, CircuitBreaker
from agents.tools import EffectUnknown, Tool, ToolContext, ToolError, get_tool
from approvals.models import (
    EXECUTE_ACTION,
    ActionRequest,
    ActionStatus,
    Decision,
    Execution,
    ExecutionStatus,
)
from approvals.transitions import action_transition, execution_transition
from approvals.webhooks import UNDONE, webhook_queue
from audit.services import Actor, record
from core import counters
from core.background import enqueue, enqueue_on_commit
from core.errors import Conflict, IllegalTransition, InvalidInput
from core.inbound import sanitise
from core.leases import heartbeat, lease_until, renewal_until
from core.prepared import PreparedRead
from core.transactions import time_limit
from core.transient import is_transient, retry_delay
from live.push import ACTION_CLOSED, OPS_CHANGED, push

logger = logging.getLogger(__name__)

# As for runs (agents.services): a lost publish is redone within this, plus a sweep interval.
REPUBLISH_AFTER_SECONDS = 20


# What an execution reads with its claim: the run it feeds back, the agent (breakers), who proposed the call
# and the decision with its reviewer (what the tool is told, `_context`).
CLAIM_RELATED = ("action__run", "action__agent", "action__submitted_by", "action__decision__reviewer")


class StaleExecution(Exception):
    """This delivery's lease was taken over; its transaction must roll back."""


def action_execute(*, execution_id: int) -> None:
    """Run an approved action's tool exactly once and feed the result back to its run."""
    claimed = _claim(execution_id)
    if claimed is None:
        return
    execution, action, agent_tool, breaker_seen = claimed
    tool = get_tool(action.tool)
    try:
        if tool is None:
            raise ToolError("unknown_tool", f"tool {action.tool!r} is no longer registered")
        if tool.suspended:  # its upstream definition changed after this call was approved
            raise ToolError("tool_suspended", tool.suspended)
        args = tool.parse(action.arguments)
        with heartbeat(_renewal(execution, agent_tool)), transaction.atomic():
            # The tool's timeout for effects in this database: a statement past it fails, the effect rolls back.
            time_limit(agent_tool.timeout_seconds)
            context = _context(execution, action)
            result = _screened(tool.execute(args, context))
            _finish(execution, action, tool, status=ActionStatus.EXECUTED, result=result, error=None)
    except StaleExecution:
        logger.warning("execution %s: lease taken over; this attempt's effect was rolled back", execution.pk)
        return
    except ToolError as exc:
        _tool_failed(execution, action, tool, agent_tool, exc)
    except EffectUnknown as exc:
        # The answer was lost on the way back: never retried blindly (a transactional tool's effect
        # rolled back with the attempt and is retried; any other goes in_doubt).
        _interrupted(execution, action, tool, reason=str(exc) or "the tool's answer was lost")
    except Exception as exc:
        if is_transient(exc):
            # A deadlock, serialization failure or lost connection is not the tool's answer.
            _interrupted(execution, action, tool, reason=f"transient database error: {type(exc).__name__}")
            return
        if _is_timeout(exc):
            error = ToolError(
                "timeout", f"{action.tool} took longer than {agent_tool.timeout_seconds} s", transient=True
            )
        else:
            logger.exception("tool %s crashed on action %s", action.tool, action.pk)
            error = ToolError("internal_error", f"{type(exc).__name__}: {exc}")
        _tool_failed(execution, action, tool, agent_tool, error)
    else:
        # Committed (and not the tool's failure if this fails): a success closes or resets the tool's breaker.
        if breaker_seen is not None:
            breakers.breaker_record_success(action.agent, action.tool, seen=breaker_seen)


@PreparedRead
def _claimed(execution_id: int) -> QuerySet[Execution]:
    """One query: the claimed row with its action, run, agent and decision as they are now. Every execution
    reads it: prepared (core.prepared), its SQL compiled once."""
    return Execution.objects.select_related(*CLAIM_RELATED).filter(pk=execution_id)


def _claim(execution_id: int) -> tuple[Execution, ActionRequest, AgentTool, CircuitBreaker | None] | None:
    """Claim a pending execution: it, its action, the tool's settings, and the tool's breaker as the call
    finds it (None when it is quiet: closed with no failures)."""
    with transaction.atomic():
        # Claim: only one delivery moves pending -> running (an id that is no execution matches nothing).
        claimed = execution_transition(
            {"pk": execution_id},
            from_status=ExecutionStatus.PENDING,
            to=ExecutionStatus.RUNNING,
            add={"attempts": 1},
            started_at=timezone.now(),
            lease_until=lease_until(),
        )
        if not claimed:
            return None
        execution = _claimed.get(execution_id=execution_id)
        action = execution.action
        # With the tool's settings, whether its breaker is quiet (breakers.TOOL_QUIET).
        agent_tool = breakers.tool_settings.first(agent_id=action.agent_id, tool=action.tool)
        if action.status != ActionStatus.EXECUTING:
            _transition(
                action, from_statuses=(ActionStatus.APPROVED, ActionStatus.AUTO_APPROVED), to=ActionStatus.EXECUTING
            )
        # The breaker as this call finds it, unless quiet: its success compares against that.
        quiet = agent_tool is not None and agent_tool.breaker_quiet
        seen = None if quiet else breakers.breaker_current(action.agent, action.tool)
    # Its configuration removed since: the defaults.
    settings_now: AgentTool = agent_tool if agent_tool is not None else AgentTool(agent=action.agent, tool=action.tool)
    return execution, action, settings_now, seen


def _context(execution: Execution, action: ActionRequest) -> ToolContext:
    """What the tool is told about the call: its key, its action, who asked and who approved."""
    decision: Decision | None = getattr(action, "decision", None)  # read with the claim; none when auto-approved
    requester = action.run.created_by_id if action.run is not None else None
    return ToolContext(
        idempotency_key=execution.idempotency_key,
        action_id=action.pk,
        agent_id=action.agent_id,
        run_id=action.run_id,
        requested_by_id=requester or action.submitted_by_id,
        proposed_by=action.submitted_by.get_username() if action.submitted_by else "",
        approved_by=decision.reviewer.get_username() if decision and decision.reviewer else "",
    )


def _renewal(execution: Execution, agent_tool: AgentTool) -> Callable[[datetime], int]:
    """Extend this attempt's lease, but not past the tool's timeout (with a margin for the commit)."""
    deadline = timezone.now() + timedelta(seconds=agent_tool.timeout_seconds + settings.LEASE_SECONDS)
    attempt = Execution.objects.filter(pk=execution.pk, status=ExecutionStatus.RUNNING, attempts=execution.attempts)
    return renewal_until(deadline, lambda until: attempt.update(lease_until=until))


def _screened(result: Any) -> dict[str, Any] | None:
    """A tool's result, through the input boundary: repaired where needed (and said so), secrets scrubbed."""
    cleaned = sanitise(result, path="result")
    value = cleaned.value
    if cleaned.repairs:
        value = {**(value if isinstance(value, dict) else {"value": value}), "repairs": cleaned.repairs}
    return value


def _is_timeout(exc: Exception) -> bool:
    return "statement timeout" in str(exc) or "canceling statement" in str(exc)


def _interrupted(
    execution: Execution, action: ActionRequest, tool: Tool | None, *, reason: str, by: str = "executor"
) -> str:
    """An attempt ended without the tool's answer: retry it if its effect rolled back, else ask a person.

    A transactional tool's effect lives in this database and rolled back with
    the attempt, so the same idempotency key is tried again in a moment. Any
    other effect may or may not have happened: the action goes `in_doubt`.
    Returns "retried", "in_doubt", or "" if another delivery got there first.
    """
    retry = tool is not None and tool.transactional
    with transaction.atomic():
        still_ours = {"pk": execution.pk, "attempts": execution.attempts}
        if retry:
            if not execution_transition(
                still_ours,
                from_status=ExecutionStatus.RUNNING,
                to=ExecutionStatus.PENDING,
                lease_until=None,
                published_at=timezone.now(),
                last_error=reason,
            ):
                return ""
            record(
                actor=Actor.system(by),
                event="execution.recovered",
                target=action,
                agent_id=action.agent_id,
                after={"attempt": execution.attempts, "idempotency_key": execution.idempotency_key, "reason": reason},
            )
            enqueue_on_commit(EXECUTE_ACTION, execution.pk, countdown=retry_delay(min(execution.attempts, 5)))
            return "retried"
        if not execution_transition(
            still_ours,
            from_status=ExecutionStatus.RUNNING,
            to=ExecutionStatus.IN_DOUBT,
            last_error=f"{reason}: effect unknown",
        ):
            return ""
        _transition(action, from_statuses=(ActionStatus.EXECUTING,), to=ActionStatus.IN_DOUBT)
        record(
            actor=Actor.system(by),
            event="action.in_doubt",
            target=action,
            agent_id=action.agent_id,
            after={"attempt": execution.attempts, "idempotency_key": execution.idempotency_key, "reason": reason},
        )
        push(OPS_CHANGED, agent_id=action.agent_id)
        return "in_doubt"


def _tool_failed(
    execution: Execution, action: ActionRequest, tool: Tool | None, agent_tool: AgentTool, error: ToolError
) -> None:
    tripped = breakers.breaker_record_failure(action.agent, f"{error.code}: {error.message}", tool=action.tool)
    retry = error.transient and not tripped and execution.attempts <= agent_tool.max_retries
    with transaction.atomic():
        if retry:
            # Back off exponentially with jitter and publish again; the worker is not held.
            back = execution_transition(
                {"pk": execution.pk, "attempts": execution.attempts},
                from_status=ExecutionStatus.RUNNING,
                to=ExecutionStatus.PENDING,
                lease_until=None,
                published_at=timezone.now(),
                last_error=f"{error.code}: {error.message}",
            )
            if back:
                delay = min(60.0, 0.5 * 2 ** (execution.attempts - 1)) * random.uniform(0.5, 1.5)  # noqa: S311
                record(
                    actor=Actor.system("executor"),
                    event="action.retry_scheduled",
                    target=action,
                    agent_id=action.agent_id,
                    after={"attempt": execution.attempts, "error": error.as_feedback(), "delay_s": round(delay, 2)},
                )
                enqueue_on_commit(EXECUTE_ACTION, execution.pk, countdown=delay)
            return
        try:
            _finish(execution, action, tool, status=ActionStatus.FAILED, result=None, error=error)
        except StaleExecution:
            return


def _finish(
    execution: Execution,
    action: ActionRequest,
    tool: Tool | None,
    *,
    status: str,
    result: dict[str, Any] | None,
    error: ToolError | None,
) -> None:
    now = timezone.now()
    # Compare-and-set on the attempt: if the sweeper gave this execution to
    # another delivery, this one must not commit (its effect rolls back).
    done = execution_transition(
        {"pk": execution.pk, "attempts": execution.attempts},
        from_status=ExecutionStatus.RUNNING,
        to=ExecutionStatus.DONE if status == ActionStatus.EXECUTED else ExecutionStatus.FAILED,
        finished_at=now,
        last_error="" if error is None else f"{error.code}: {error.message}",
    )
    if not done:
        raise StaleExecution(execution.pk)
    error_text = "" if error is None else f"{error.code}: {error.message}"
    _transition(
        action, from_statuses=(ActionStatus.EXECUTING,), to=status, result=result, error=error_text, executed_at=now
    )
    record(
        actor=Actor.system("executor"),
        event="action.executed" if status == ActionStatus.EXECUTED else "action.failed",
        target=action,
        agent_id=action.agent_id,
        after={
            "idempotency_key": execution.idempotency_key,
            "attempt": execution.attempts,
            "result": result,
            "error": None if error is None else error.as_feedback(),
        },
    )
    failed = status != ActionStatus.EXECUTED
    counters.bump(
        action.agent_id,
        executions=1,
        execution_failures=1 if failed else 0,
        auto_executed=1 if action.route == "auto" and not failed else 0,
    )
    counters.bump_tool(action.agent_id, action.tool, calls=1, errors=1 if failed else 0)
    deferred = status == ActionStatus.EXECUTED and tool is not None and tool.defers_result
    if action.run is not None and not deferred:
        if error is None:
            payload = action.feedback("executed", result=result)
        else:
            payload = action.feedback("failed", error=error.message, error_detail=error.as_feedback())
        agent_services.run_feed_back(run=action.run, payload=payload)
    push(ACTION_CLOSED, action_id=action.pk)


def _transition(action: ActionRequest, *, from_statuses: tuple[str, ...], to: str, **fields: Any) -> None:
    """An action transition this process must win (it holds the execution's claim); the instance follows."""
    if not action_transition(action, from_statuses=from_statuses, to=to, **fields):
        raise IllegalTransition(f"action {action.pk} was not in {'/'.join(from_statuses)}")
    action.status = to
    for name, value in fields.items():
        setattr(action, name, value)


def executions_sweep() -> dict[str, int]:
    """Republish stranded executions and settle interrupted ones. Safe to run any time, twice."""
    now = timezone.now()
    counts = {"republished": 0, "retried": 0, "in_doubt": 0}
    # Committed but never started (the process died between COMMIT and publish,
    # or the message was lost): publish again; the claim makes duplicates harmless.
    threshold = now - timedelta(seconds=REPUBLISH_AFTER_SECONDS)
    stale = list(
        Execution.objects.filter(status=ExecutionStatus.PENDING, published_at__lt=threshold).values_list(
            "pk", flat=True
        )[:500]
    )
    for execution_id in stale:
        # Compare-and-set on published_at: two sweepers never both republish one execution.
        if Execution.objects.filter(pk=execution_id, published_at__lt=threshold).update(published_at=now):
            enqueue(EXECUTE_ACTION, execution_id)
            counts["republished"] += 1
    expired = Execution.objects.filter(status=ExecutionStatus.RUNNING, lease_until__lt=now).select_related(
        "action__agent", "action__run"
    )[:500]
    for execution in expired:
        outcome = _interrupted(
            execution, execution.action, get_tool(execution.action.tool), reason="interrupted", by="sweeper"
        )
        if outcome:
            counts[outcome] += 1
    return counts


def action_resolve_in_doubt(*, action: ActionRequest, actor: User, executed: bool, comment: str) -> ActionRequest:
    """A person who checked the outside system says whether an in-doubt effect happened."""
    if not comment.strip():
        raise InvalidInput("say what you checked (comment)", code="reason_required")
    to = ActionStatus.EXECUTED if executed else ActionStatus.FAILED
    with transaction.atomic():
        if not action_transition(
            action,
            from_statuses=(ActionStatus.IN_DOUBT,),
            to=to,
            error="" if executed else f"resolved as not executed: {comment}",
            executed_at=timezone.now(),
        ):
            raise IllegalTransition("the action is not in doubt")
        execution_transition(
            {"action_id": action.pk},
            from_status=ExecutionStatus.IN_DOUBT,
            to=ExecutionStatus.DONE if executed else ExecutionStatus.FAILED,
            finished_at=timezone.now(),
        )
        record(
            actor=actor,
            event="action.in_doubt_resolved",
            target=action,
            agent_id=action.agent_id,
            before={"status": ActionStatus.IN_DOUBT},
            after={"status": to, "comment": comment},
        )
        if action.run is not None:
            said = f"confirmed by {actor.get_username()}: {comment}"
            payload = action.feedback("executed", result=said) if executed else action.feedback("failed", error=said)
            agent_services.run_feed_back(run=action.run, payload=payload)
    action.refresh_from_db()
    return action


def action_undo(*, action: ActionRequest, actor: User, comment: str = "") -> ActionRequest:
    """Run an executed action's compensation, once."""
    tool = get_tool(action.tool)
    if tool is None or tool.compensate is None:
        # Not bad input: this action's tool has no compensation (409, like any state that forbids it).
        raise Conflict(f"{action.tool} cannot be undone", code="not_reversible")
    with transaction.atomic():
        locked = ActionRequest.objects.select_for_update().get(pk=action.pk)
        if locked.status != ActionStatus.EXECUTED:
            raise IllegalTransition(f"only an executed action can be undone; this one is {locked.status}")
        args = tool.parse(locked.arguments)
        try:
            undo_result = tool.compensate(args, locked.result or {}, f"undo-action-{locked.pk}")
        except ToolError as exc:
            raise Conflict(f"undo failed: {exc.message}", code=exc.code) from exc
        _transition(locked, from_statuses=(ActionStatus.EXECUTED,), to=ActionStatus.COMPENSATED)
        counters.bump(locked.agent_id, undos=1)
        record(
            actor=actor,
            event="action.undone",
            target=locked,
            agent_id=locked.agent_id,
            before={"status": ActionStatus.EXECUTED, "result": locked.result},
            after={"status": ActionStatus.COMPENSATED, "undo": undo_result, "comment": comment},
        )
        webhook_queue(locked, event=UNDONE)  # an agent that executed it itself reverses it when told
    return locked
