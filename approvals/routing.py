"""Routing a proposed tool call: guard, policy, risk, and into the queue (or executed, or refused)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, User
from django.db import transaction
from django.utils import timezone

from agents import services as agent_services
from agents.guard import GuardPass, GuardRefusal, guard_tool_call
from agents.models import Agent, Run, StepKind
from agents.policy import Route, RouteDecision, route_for
from approvals.calibration import calibration_for, estimate
from approvals.models import (
    ActionRequest,
    ActionStatus,
)
from approvals.queue import execution_schedule, queue_count_add
from approvals.risk import assess
from approvals.spot_checks import spot_check_sample
from audit.services import Actor, record
from core import counters
from core.prepared import insert_row
from live.push import ACTION_OPENED, push

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteOutcome:
    action: ActionRequest | None
    refusal: GuardRefusal | None = None
    # True when the outcome was already fed back to the run (refused, denied).
    fed_back: bool = False


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
    takes_grant: bool = False,
    caller_executes: bool | None = None,
) -> RouteOutcome:
    """Guard a proposed tool call, apply policy, and record the outcome (one transaction).

    `untrusted` holds what the agent read that a stranger could have written
    (the run input, tool results); it is screened for injected instructions.
    A refused call submitted without a run writes nothing: its caller answers 400.
    A caller's tool (executed by the agent, with a grant) is accepted only from a caller that
    `takes_grant` (the JSON API); a hosted run or the MCP gateway cannot execute it. A caller that says
    who will execute the call (`caller_executes`) is refused if the tool says otherwise, before anything
    is written: neither both nor neither of them runs it.
    """
    who = actor or Actor.agent(agent)
    with transaction.atomic():
        checked = guard_tool_call(agent=agent, tool_name=tool, arguments=arguments, untrusted=untrusted)
        if not isinstance(checked, GuardRefusal) and checked.tool.caller_executes and not takes_grant:
            checked = GuardRefusal(
                "caller_executes",
                f"{tool} is executed by the agent itself: submit it with POST /api/v1/agents/{agent.slug}/actions "
                "and act on the grant",
            )
        if (
            not isinstance(checked, GuardRefusal)
            and caller_executes is not None
            and caller_executes != checked.tool.caller_executes
        ):
            by = "the agent itself (a caller's tool)" if checked.tool.caller_executes else "Countersign"
            checked = GuardRefusal("execution_mismatch", f"{tool} is executed by {by}, not as the call says")
        if isinstance(checked, GuardRefusal):
            return _refused(agent, run, who, refusal=checked, tool=tool, arguments=arguments, call_id=call_id)
        magnitude = checked.magnitude
        target = checked.agent_tool.target_error_rate
        calibrated = None
        if target is not None:
            cal = calibration_for(agent_id=agent.pk, tool=checked.tool.name)
            calibrated = estimate(cal, confidence=confidence, target=target)
        decision = route_for(
            agent=agent,
            agent_tool=checked.agent_tool,
            tool=checked.tool,
            confidence=confidence,
            magnitude=magnitude,
            flag_reasons=checked.flag_reasons,
            calibrated=calibrated,
        )
        action = _open_action(
            agent,
            run,
            who,
            actor=actor,
            checked=checked,
            decision=decision,
            magnitude=magnitude,
            call_id=call_id,
            confidence=confidence,
            rationale=rationale,
        )
        spot_check_sample(action, checked.agent_tool)  # auto-approved only; it never holds the action back
        return _follow_route(action, decision, run)


def _refused(
    agent: Agent,
    run: Run | None,
    who: Actor | AbstractBaseUser,
    *,
    refusal: GuardRefusal,
    tool: str,
    arguments: Any,
    call_id: str,
) -> RouteOutcome:
    """A guard refusal: fed back to the run as the tool's result, audited and counted."""
    if run is None:
        return RouteOutcome(action=None, refusal=refusal)
    record(
        actor=who,
        event="action.refused",
        target=run,
        agent_id=agent.pk,
        after={"tool": tool, "arguments": arguments, "code": refusal.code, "reason": refusal.message},
    )
    agent_services.step_append(run=run, kind=StepKind.GUARD, payload={"code": refusal.code, "message": refusal.message})
    agent_services.step_append(
        run=run,
        kind=StepKind.TOOL_RESULT,
        payload={
            "call_id": call_id,
            "tool": tool,
            "arguments": arguments,
            "outcome": "refused",
            "code": refusal.code,
            "error": refusal.message,
        },
    )
    counters.bump(agent.pk, guard_refusals=1)
    return RouteOutcome(action=None, refusal=refusal, fed_back=True)


ROUTE_STATUS = {
    Route.AUTO: ActionStatus.AUTO_APPROVED,
    Route.REVIEW: ActionStatus.PENDING,
    Route.DENY: ActionStatus.DENIED,
}


def _open_action(
    agent: Agent,
    run: Run | None,
    who: Actor | AbstractBaseUser,
    *,
    actor: Actor | AbstractBaseUser | None,
    checked: GuardPass,
    decision: RouteDecision,
    magnitude: Decimal,
    call_id: str,
    confidence: float,
    rationale: str,
) -> ActionRequest:
    """The action request for a call that passed the guard, with policy's route and why (audited)."""
    args = checked.tool.dump(checked.args)
    agent_tool = checked.agent_tool
    now = timezone.now()
    sla = timedelta(minutes=agent_tool.sla_minutes)
    stake = checked.tool.stake(checked.args) if checked.tool.stake is not None else None
    risk = assess(
        impact=checked.tool.impact,
        magnitude=magnitude,
        confidence=confidence,
        flags=len(checked.flags),
        stake=stake,
        hard_limit=agent_tool.max_magnitude,
        auto_limit=agent_tool.auto_max_magnitude,
        sla_minutes=agent_tool.sla_minutes,
    )
    action = ActionRequest(
        agent=agent,
        run=run,
        submitted_by=actor if run is None and isinstance(actor, User) else None,
        risk_score=risk.score,
        risk_parts=risk.parts,
        risk_basis=risk.basis,
        findings=[asdict(f) for f in stake.findings] if stake else [],
        warn_at=now + sla / 2,
        due_at=now + sla,
        required_approvals=agent_tool.required_approvals,
        on_timeout=agent_tool.on_timeout,
        reviewer_group_id=agent_tool.reviewer_group_id,
        tool=checked.tool.name,
        caller_executes=checked.tool.caller_executes,
        call_id=call_id,
        arguments=args,
        proposed_arguments=args,
        argument_order=checked.tool.field_names(),
        confidence=confidence,
        rationale=rationale,
        impact=checked.tool.impact,
        magnitude=magnitude,
        route=decision.route,
        route_reason=decision.reason,
        risk_flags=checked.flags,
        status=ROUTE_STATUS[decision.route],
    )
    insert_row(action)  # every routed call adds one: its INSERT is built once (core.prepared)
    record(
        actor=who,
        event="action.routed",
        target=action,
        agent_id=agent.pk,
        after={
            "route": decision.route,
            "reason": decision.reason,
            "tool": checked.tool.name,
            "arguments": args,
            "confidence": confidence,
            "magnitude": str(magnitude),
            "risk_flags": checked.flags,
            "risk": risk.score,
        },
    )
    counters.bump(agent.pk, actions_routed=1, **{f"routed_{decision.route}": 1})
    if run is not None:
        agent_services.step_append(
            run=run,
            kind=StepKind.POLICY,
            payload={"action_id": action.pk, "route": decision.route, "reason": decision.reason},
        )
    return action


def _follow_route(action: ActionRequest, decision: RouteDecision, run: Run | None) -> RouteOutcome:
    """Auto: schedule the execution. Review: into the queue, pushed on commit. Deny: fed back."""
    if decision.route == Route.AUTO:
        execution_schedule(action)
    elif decision.route == Route.REVIEW:
        queue_count_add(agent_id=action.agent_id, tier=1, delta=1)
        push(ACTION_OPENED, action_id=action.pk)
    elif run is not None:
        agent_services.step_append(
            run=run,
            kind=StepKind.TOOL_RESULT,
            payload=action.feedback("denied", error=f"denied by policy: {decision.reason}"),
        )
        return RouteOutcome(action=action, fed_back=True)
    return RouteOutcome(action=action)
