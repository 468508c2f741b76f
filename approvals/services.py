"""Writes for action requests: routing into the queue, decisions, execution."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, User
from django.db import transaction
from django.utils import timezone

from agents import services as agent_services
from agents.errors import Conflict, IllegalTransition, InvalidInput
from agents.guard import GuardRefusal, guard_tool_call, validate_arguments
from agents.models import Agent, Run, StepKind
from agents.policy import Route, route_for
from agents.tools import ToolError, get_tool
from approvals import broadcast, tasks
from approvals.models import (
    ACTION_TRANSITIONS,
    ActionRequest,
    ActionStatus,
    Decision,
    Execution,
    ExecutionStatus,
    Verdict,
)
from audit.services import Actor, record
from config.background import enqueue_on_commit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteOutcome:
    action: ActionRequest | None
    refusal: GuardRefusal | None = None
    # True when the outcome was already fed back to the run (refused, denied).
    fed_back: bool = False


class AlreadyDecided(Conflict):
    code = "already_decided"


def route_tool_call(
    *,
    agent: Agent,
    run: Run | None,
    tool: str,
    arguments: Any,
    confidence: float,
    rationale: str,
    actor: Actor | AbstractBaseUser | None = None,
    call_id: str = "",
    untrusted: tuple[Any, ...] = (),
) -> RouteOutcome:
    """Guard a proposed tool call, apply policy, and record the outcome (one transaction).

    `untrusted` holds what the agent read that a stranger could have written
    (the run input, tool results); it is screened for injected instructions.
    """
    who = actor or Actor.agent(agent)
    with transaction.atomic():
        checked = guard_tool_call(agent=agent, tool_name=tool, arguments=arguments, untrusted=untrusted)
        if isinstance(checked, GuardRefusal) and run is None:
            # Submitted over the API: a bad request, answered 400 with nothing written.
            raise InvalidInput(checked.message, code=checked.code, details=checked.details)
        if isinstance(checked, GuardRefusal):
            record(
                actor=who,
                event="action.refused",
                target=run,
                agent_id=agent.pk,
                after={"tool": tool, "arguments": arguments, "code": checked.code, "reason": checked.message},
            )
            if run is not None:
                agent_services.step_append(
                    run=run, kind=StepKind.GUARD, payload={"code": checked.code, "message": checked.message}
                )
                agent_services.step_append(
                    run=run,
                    kind=StepKind.TOOL_RESULT,
                    payload={
                        "call_id": call_id,
                        "tool": tool,
                        "arguments": arguments,
                        "outcome": "refused",
                        "code": checked.code,
                        "error": checked.message,
                    },
                )
            return RouteOutcome(action=None, refusal=checked, fed_back=run is not None)

        args = checked.args.model_dump(mode="json")
        magnitude = checked.tool.magnitude(checked.args)
        decision = route_for(
            agent=agent,
            agent_tool=checked.agent_tool,
            tool=checked.tool,
            confidence=confidence,
            magnitude=magnitude,
            flag_reasons=checked.flag_reasons,
        )
        status = {
            Route.AUTO: ActionStatus.AUTO_APPROVED,
            Route.REVIEW: ActionStatus.PENDING,
            Route.DENY: ActionStatus.DENIED,
        }[decision.route]
        action = ActionRequest.objects.create(
            agent=agent,
            run=run,
            tool=tool,
            call_id=call_id,
            arguments=args,
            proposed_arguments=args,
            confidence=confidence,
            rationale=rationale,
            impact=checked.tool.impact,
            magnitude=magnitude,
            route=decision.route,
            route_reason=decision.reason,
            risk_flags=checked.flags,
            status=status,
        )
        record(
            actor=who,
            event="action.routed",
            target=action,
            agent_id=agent.pk,
            after={
                "route": decision.route,
                "reason": decision.reason,
                "tool": tool,
                "arguments": args,
                "confidence": confidence,
                "magnitude": str(magnitude),
                "risk_flags": checked.flags,
            },
        )
        if run is not None:
            agent_services.step_append(
                run=run,
                kind=StepKind.POLICY,
                payload={"action_id": action.pk, "route": decision.route, "reason": decision.reason},
            )
        if decision.route == Route.AUTO:
            _schedule_execution(action)
        elif decision.route == Route.REVIEW:
            transaction.on_commit(lambda: broadcast.action_opened(action.pk))
        elif run is not None:
            agent_services.step_append(
                run=run,
                kind=StepKind.TOOL_RESULT,
                payload={
                    "action_id": action.pk,
                    "call_id": call_id,
                    "tool": tool,
                    "arguments": args,
                    "outcome": "denied",
                    "error": f"denied by policy: {decision.reason}",
                },
            )
            return RouteOutcome(action=action, fed_back=True)
        return RouteOutcome(action=action)


def action_request_decide(
    *,
    action: ActionRequest,
    actor: User,
    verdict: str,
    arguments: Any = None,
    comment: str = "",
) -> Decision:
    """Approve, reject (with a reason) or edit-and-approve a pending action."""
    if verdict not in Verdict.values:
        raise InvalidInput(f"verdict must be one of {', '.join(Verdict.values)}", code="invalid_verdict")
    comment = (comment or "").strip()
    if verdict == Verdict.REJECT and not comment:
        raise InvalidInput("a rejection needs a reason (comment)", code="reason_required")
    new_arguments = action.arguments
    if verdict == Verdict.EDIT:
        tool = get_tool(action.tool)
        if tool is None:
            raise InvalidInput(f"tool {action.tool!r} no longer exists", code="unknown_tool")
        checked = validate_arguments(tool, arguments)
        if isinstance(checked, GuardRefusal):
            raise InvalidInput(checked.message, code=checked.code, details=checked.details)
        new_arguments = checked.model_dump(mode="json")
    elif arguments is not None:
        raise InvalidInput("arguments are only accepted with verdict 'edit'", code="unexpected_arguments")

    to_status = ActionStatus.REJECTED if verdict == Verdict.REJECT else ActionStatus.APPROVED
    now = timezone.now()
    with transaction.atomic():
        # The race: two reviewers decide at once. Only the UPDATE that still
        # sees `pending` touches the row; the other waits for that commit,
        # re-reads, matches nothing, and is told who won.
        won = ActionRequest.objects.filter(pk=action.pk, status=ActionStatus.PENDING).update(
            status=to_status, decided_at=now, arguments=new_arguments
        )
        if not won:
            raise _already_decided(action.pk)
        before = action.arguments
        decision = Decision.objects.create(
            action=action,
            reviewer=actor,
            verdict=verdict,
            comment=comment,
            arguments_before=before,
            arguments_after=new_arguments,
        )
        action.refresh_from_db()
        record(
            actor=actor,
            event="action.decided",
            target=action,
            agent_id=action.agent_id,
            before={"status": ActionStatus.PENDING, "arguments": before},
            after={"status": to_status, "verdict": verdict, "comment": comment, "arguments": new_arguments},
        )
        if to_status == ActionStatus.APPROVED:
            _schedule_execution(action)
        elif action.run is not None:
            agent_services.run_feed_back(
                run=action.run,
                payload={
                    "action_id": action.pk,
                    "call_id": action.call_id,
                    "tool": action.tool,
                    "arguments": before,
                    "outcome": "rejected",
                    "error": comment,
                },
            )
        transaction.on_commit(lambda: broadcast.action_closed(action.pk))
    return decision


def _already_decided(action_id: int) -> Conflict:
    current = ActionRequest.objects.filter(pk=action_id).select_related("decision__reviewer").first()
    if current is None:
        return IllegalTransition("the action no longer exists")
    decision = getattr(current, "decision", None)
    if decision is not None:
        return AlreadyDecided(
            f"already decided by {decision.reviewer.get_username()} ({decision.verdict})",
            details={"decided_by": decision.reviewer.get_username(), "verdict": decision.verdict},
        )
    return AlreadyDecided(
        f"the action is {current.status}, not pending", details={"decided_by": None, "action_status": current.status}
    )


def _schedule_execution(action: ActionRequest) -> None:
    execution = Execution.objects.create(action=action, idempotency_key=f"action-{action.pk}")
    enqueue_on_commit(tasks.execute_action, execution.pk)


def action_execute(*, execution_id: int) -> None:
    """Run an approved action's tool exactly once and feed the result back to its run."""
    with transaction.atomic():
        # Claim: only one delivery of the task moves pending -> running.
        claimed = Execution.objects.filter(pk=execution_id, status=ExecutionStatus.PENDING).update(
            status=ExecutionStatus.RUNNING, started_at=timezone.now()
        )
        if not claimed:
            return
        execution = Execution.objects.select_related("action__run", "action__agent").get(pk=execution_id)
        action = execution.action
        _transition(
            action, from_statuses=(ActionStatus.APPROVED, ActionStatus.AUTO_APPROVED), to=ActionStatus.EXECUTING
        )
        Execution.objects.filter(pk=execution_id).update(attempts=execution.attempts + 1)

    tool = get_tool(action.tool)
    try:
        if tool is None:
            raise ToolError("unknown_tool", f"tool {action.tool!r} is no longer registered")
        args = tool.args_model.model_validate(action.arguments)
        # The demo tools write to this database, so the effect commits in the
        # same transaction as "done": a crash leaves neither.
        with transaction.atomic():
            result = tool.execute(args, execution.idempotency_key)
            _finish(execution, action, status=ActionStatus.EXECUTED, result=result, error="")
    except ToolError as exc:
        with transaction.atomic():
            _finish(execution, action, status=ActionStatus.FAILED, result=None, error=f"{exc.code}: {exc.message}")
    except Exception as exc:
        logger.exception("tool %s crashed on action %s", action.tool, action.pk)
        with transaction.atomic():
            _finish(execution, action, status=ActionStatus.FAILED, result=None, error=f"internal_error: {exc}")


def _finish(
    execution: Execution, action: ActionRequest, *, status: str, result: dict[str, Any] | None, error: str
) -> None:
    now = timezone.now()
    Execution.objects.filter(pk=execution.pk, status=ExecutionStatus.RUNNING).update(
        status=ExecutionStatus.DONE if status == ActionStatus.EXECUTED else ExecutionStatus.FAILED,
        finished_at=now,
    )
    _transition(action, from_statuses=(ActionStatus.EXECUTING,), to=status, result=result, error=error, executed_at=now)
    record(
        actor=Actor.system("executor"),
        event="action.executed" if status == ActionStatus.EXECUTED else "action.failed",
        target=action,
        agent_id=action.agent_id,
        after={"idempotency_key": execution.idempotency_key, "result": result, "error": error},
    )
    if action.run is not None:
        payload: dict[str, Any] = {
            "action_id": action.pk,
            "call_id": action.call_id,
            "tool": action.tool,
            "arguments": action.arguments,
            "outcome": "executed" if status == ActionStatus.EXECUTED else "failed",
        }
        payload["result" if status == ActionStatus.EXECUTED else "error"] = result if result is not None else error
        agent_services.run_feed_back(run=action.run, payload=payload)
    transaction.on_commit(lambda: broadcast.action_closed(action.pk))


def _transition(action: ActionRequest, *, from_statuses: tuple[str, ...], to: str, **fields: Any) -> None:
    for source in from_statuses:
        if to not in ACTION_TRANSITIONS[source]:
            raise IllegalTransition(f"action cannot go from {source} to {to}")
    changed = ActionRequest.objects.filter(pk=action.pk, status__in=from_statuses).update(status=to, **fields)
    if changed != 1:
        raise IllegalTransition(f"action {action.pk} was not in {'/'.join(from_statuses)}")
    action.status = to
    for name, value in fields.items():
        setattr(action, name, value)
