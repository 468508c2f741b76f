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
from agents.tools import get_tool
from approvals import broadcast, tasks
from approvals.models import (
    ActionRequest,
    ActionStatus,
    Decision,
    Execution,
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
