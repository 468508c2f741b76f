"""Writes for action requests: routing into the queue, decisions, execution."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Case, Count, F, Q, Value, When
from django.utils import timezone

from agents import services as agent_services
from agents.guard import GuardRefusal, guard_edited_call, guard_tool_call, validate_arguments
from agents.models import Agent, AgentTool, Run, StepKind
from agents.policy import Route, route_for
from agents.selectors import users_with_agent_perm
from agents.tools import get_tool
from approvals import broadcast
from approvals.models import (
    EXECUTE_ACTION,
    ActionRequest,
    ActionStatus,
    Approval,
    Decision,
    Execution,
    Notification,
    QueueCount,
    Verdict,
)
from audit.services import Actor, record
from core import counters
from core.background import enqueue_on_commit
from core.errors import Conflict, Forbidden, IllegalTransition, InvalidInput

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
            counters.bump(agent.pk, guard_refusals=1)
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
        agent_tool = checked.agent_tool
        now = timezone.now()
        sla = timedelta(minutes=agent_tool.sla_minutes)
        action = ActionRequest.objects.create(
            agent=agent,
            run=run,
            submitted_by=actor if run is None and isinstance(actor, User) else None,
            risk_score=risk_score(impact=checked.tool.impact, confidence=confidence, flags=checked.flags),
            warn_at=now + sla / 2,
            due_at=now + sla,
            required_approvals=agent_tool.required_approvals,
            on_timeout=agent_tool.on_timeout,
            reviewer_group_id=agent_tool.reviewer_group_id,
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
        counters.bump(agent.pk, actions_routed=1, **{f"routed_{decision.route}": 1})
        if run is not None:
            agent_services.step_append(
                run=run,
                kind=StepKind.POLICY,
                payload={"action_id": action.pk, "route": decision.route, "reason": decision.reason},
            )
        if decision.route == Route.AUTO:
            _schedule_execution(action)
        elif decision.route == Route.REVIEW:
            queue_count_add(agent_id=agent.pk, tier=1, delta=1)
            transaction.on_commit(lambda: broadcast.action_opened(action.pk))
        elif run is not None:
            agent_services.step_append(
                run=run,
                kind=StepKind.TOOL_RESULT,
                payload=action.feedback("denied", error=f"denied by policy: {decision.reason}"),
            )
            return RouteOutcome(action=action, fed_back=True)
        return RouteOutcome(action=action)


def queue_count_add(*, agent_id: int, tier: int, delta: int) -> None:
    """Keep the pending count of one queue in step, inside the transaction that moved the action."""
    if not QueueCount.objects.filter(agent_id=agent_id, tier=tier).update(pending=F("pending") + delta):
        try:
            with transaction.atomic():
                QueueCount.objects.create(agent_id=agent_id, tier=tier, pending=delta)
        except IntegrityError:
            # Another transaction created it first: add to that row.
            QueueCount.objects.filter(agent_id=agent_id, tier=tier).update(pending=F("pending") + delta)


def action_leave_pending(
    *, action: ActionRequest, to_status: str, expect: dict[str, Any] | None = None, **fields: Any
) -> bool:
    """The one way out of `pending`: a compare-and-set, with the queue count kept in step.

    The expected state is `pending` at the tier the caller saw (plus `expect`);
    False when another transaction got there first.
    """
    won = ActionRequest.objects.filter(
        pk=action.pk, status=ActionStatus.PENDING, tier=action.tier, **(expect or {})
    ).update(status=to_status, claimed_by=None, claim_expires_at=None, **fields)
    if won:
        queue_count_add(agent_id=action.agent_id, tier=action.tier, delta=-1)
    return bool(won)


def queue_counts_rebuild() -> int:
    """Recompute every queue count from the actions (repair; not needed in normal operation)."""
    with transaction.atomic():
        QueueCount.objects.all().delete()
        rows = (
            ActionRequest.objects.filter(status=ActionStatus.PENDING).values("agent_id", "tier").annotate(n=Count("id"))
        )
        created = QueueCount.objects.bulk_create(
            [QueueCount(agent_id=row["agent_id"], tier=row["tier"], pending=row["n"]) for row in rows]
        )
    return len(created)


IMPACT_WEIGHT = {"read": 0, "write": 20, "financial": 40, "destructive": 60}


def risk_score(*, impact: str, confidence: float, flags: list[str]) -> int:
    """0-100: impact, then doubt, then risk flags. The inbox shows the riskiest first."""
    score = IMPACT_WEIGHT.get(impact, 20) + round((1 - max(0.0, min(1.0, confidence))) * 30) + 10 * len(flags)
    return min(100, score)


def action_request_decide(
    *,
    action: ActionRequest,
    actor: User,
    verdict: str,
    arguments: Any = None,
    comment: str = "",
) -> Decision | None:
    """Approve, reject (with a reason), edit-and-approve, or escalate a pending action.

    Returns the Decision when the action is decided; None when an approval was
    recorded toward a quorum or the action was escalated.
    """
    if verdict not in Verdict.values and verdict != ESCALATE:
        raise InvalidInput(f"verdict must be one of {', '.join([*Verdict.values, ESCALATE])}", code="invalid_verdict")
    comment = (comment or "").strip()
    if verdict == Verdict.REJECT and not comment:
        raise InvalidInput("a rejection needs a reason (comment)", code="reason_required")
    if action.tier == 0 and verdict in (Verdict.EDIT, ESCALATE):
        raise InvalidInput("a configuration change is approved or rejected as proposed", code="invalid_verdict")
    if verdict == ESCALATE:
        if arguments is not None:
            raise InvalidInput("arguments are only accepted with verdict 'edit'", code="unexpected_arguments")
        action_request_escalate(action=action, actor=actor, reason=comment or "escalated by a reviewer")
        return None
    new_arguments, magnitude = action.arguments, action.magnitude
    if verdict == Verdict.EDIT:
        new_arguments, magnitude = validated_edit(action, arguments)
    elif arguments is not None:
        raise InvalidInput("arguments are only accepted with verdict 'edit'", code="unexpected_arguments")
    if verdict in (Verdict.APPROVE, Verdict.EDIT):
        _check_separation_of_duties(action, actor)
        if action.required_approvals > 1:
            return _approve_toward_quorum(
                action=action,
                actor=actor,
                verdict=verdict,
                arguments=new_arguments,
                magnitude=magnitude,
                comment=comment,
            )
    return _decide(
        action=action, actor=actor, verdict=verdict, new_arguments=new_arguments, magnitude=magnitude, comment=comment
    )


ESCALATE = "escalate"


def validated_edit(action: ActionRequest, arguments: Any) -> tuple[dict[str, Any], Decimal]:
    """Edited arguments and their magnitude, checked as the guard checks the agent's and by the tool itself."""
    checked = guard_edited_call(agent=action.agent, tool_name=action.tool, arguments=arguments)
    if isinstance(checked, GuardRefusal):
        raise InvalidInput(checked.message, code=checked.code, details=checked.details)
    edited: dict[str, Any] = checked.args.model_dump(mode="json")
    return edited, checked.tool.magnitude(checked.args)


def _check_separation_of_duties(action: ActionRequest, actor: User) -> None:
    started_by = action.run.created_by_id if action.run is not None else action.submitted_by_id
    if started_by is not None and started_by == actor.pk:
        raise Forbidden(
            "you started this work, so someone else must approve it (separation of duties)",
            code="separation_of_duties",
        )


def _decide(
    *,
    action: ActionRequest,
    actor: User,
    verdict: str,
    new_arguments: dict[str, Any],
    magnitude: Decimal,
    comment: str,
) -> Decision:
    to_status = ActionStatus.REJECTED if verdict == Verdict.REJECT else ActionStatus.APPROVED
    now = timezone.now()
    with transaction.atomic():
        # The race: two reviewers decide at once. Only the UPDATE that still
        # sees `pending` touches the row; the other waits for that commit,
        # re-reads, matches nothing, and is told who won.
        claim = dict(ActionRequest.objects.filter(pk=action.pk).values("claimed_by_id", "claimed_at").first() or {})
        # The tier is part of the expected state: an action escalated since the
        # reviewer loaded it is no longer theirs to decide at this tier.
        if not action_leave_pending(
            action=action, to_status=to_status, decided_at=now, arguments=new_arguments, magnitude=magnitude
        ):
            raise _already_decided(action.pk, tier=action.tier)
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
        mine = claim.get("claimed_by_id") == actor.pk
        _count_decision(action, verdict=verdict, claimed_by_actor=claim.get("claimed_at") if mine else None)
        record(
            actor=actor,
            event="action.decided",
            target=action,
            agent_id=action.agent_id,
            before={"status": ActionStatus.PENDING, "arguments": before},
            after={"status": to_status, "verdict": verdict, "comment": comment, "arguments": new_arguments}
            | ({"magnitude": str(magnitude)} if verdict == Verdict.EDIT else {}),
        )
        _after_decision(action, to_status=to_status, reason=comment, arguments_before=before, actor=actor)
    return decision


def _count_decision(action: ActionRequest, *, verdict: str, claimed_by_actor: Any) -> None:
    if action.tier == 0:
        return  # configuration changes are not agent decisions
    now = timezone.now()
    counters.bump(
        action.agent_id,
        **{f"decisions_{verdict}": 1},
        review_seconds=(now - claimed_by_actor).total_seconds() if claimed_by_actor else 0.0,
    )
    counters.observe(action.agent_id, "decision_latency", (now - action.created_at).total_seconds())
    counters.calibrate(agent_id=action.agent_id, tool=action.tool, confidence=action.confidence, verdict=verdict)


def _after_decision(
    action: ActionRequest, *, to_status: str, reason: str, arguments_before: Any, actor: User | Actor
) -> None:
    if to_status == ActionStatus.APPROVED:
        _schedule_execution(action)
    else:
        _declined(action, actor=actor)
        if action.run is not None:
            outcome = "rejected" if to_status == ActionStatus.REJECTED else to_status
            agent_services.run_feed_back(
                run=action.run, payload=action.feedback(outcome, arguments=arguments_before, error=reason)
            )
    transaction.on_commit(lambda: broadcast.action_closed(action.pk))


def _declined(action: ActionRequest, *, actor: User | Actor) -> None:
    # What a proposal held is released with it (a prompt version stops being "proposed").
    tool = get_tool(action.tool)
    if tool is None or tool.declined is None:
        return
    args = validate_arguments(tool, action.arguments)
    if not isinstance(args, GuardRefusal):
        tool.declined(args, actor)


def _approve_toward_quorum(
    *, action: ActionRequest, actor: User, verdict: str, arguments: dict[str, Any], magnitude: Decimal, comment: str
) -> Decision | None:
    with transaction.atomic():
        # Lock the action: approvals toward one quorum are counted one at a time.
        locked = ActionRequest.objects.select_for_update().get(pk=action.pk)
        if locked.status != ActionStatus.PENDING or locked.tier != action.tier:
            raise _already_decided(locked.pk, tier=action.tier)
        if verdict == Verdict.APPROVE and action.arguments != locked.arguments:
            # Edited by someone else since this reviewer loaded it: they approve what they saw, not this.
            raise Conflict(
                "the arguments were edited since you opened this action; review them again",
                code="arguments_changed",
            )
        if arguments != locked.arguments:
            # An edit: earlier approvals were of other arguments and no longer count.
            dropped = list(locked.approvals.values_list("reviewer__username", flat=True))
            locked.approvals.all().delete()
            ActionRequest.objects.filter(pk=locked.pk).update(arguments=arguments, magnitude=magnitude)
            record(
                actor=actor,
                event="action.edited",
                target=locked,
                agent_id=locked.agent_id,
                before={"arguments": locked.arguments, "magnitude": str(locked.magnitude)},
                after={"arguments": arguments, "magnitude": str(magnitude), "approvals_dropped": dropped},
            )
            locked.arguments = arguments
        if locked.approvals.filter(reviewer=actor).exists():
            raise Conflict("you have already approved this action; another reviewer must", code="already_approved")
        Approval.objects.create(action=locked, reviewer=actor, arguments=arguments)
        count = locked.approvals.count()
        record(
            actor=actor,
            event="action.approval_recorded",
            target=locked,
            agent_id=locked.agent_id,
            after={"approvals": count, "required": locked.required_approvals, "comment": comment},
        )
        if count < locked.required_approvals:
            transaction.on_commit(lambda: broadcast.action_changed(locked.pk))
            return None
        approvers = ", ".join(locked.approvals.order_by("id").values_list("reviewer__username", flat=True))
        return _decide(
            action=locked,
            actor=actor,
            verdict=verdict,
            new_arguments=arguments,
            magnitude=magnitude,
            comment=(comment + " " if comment else "") + f"(approved by {approvers})",
        )


def action_request_escalate(*, action: ActionRequest, actor: User | Actor, reason: str) -> ActionRequest:
    """Send a pending action to the second tier, with a fresh SLA."""
    with transaction.atomic():
        locked = ActionRequest.objects.select_for_update().get(pk=action.pk)
        if locked.status != ActionStatus.PENDING:
            raise _already_decided(locked.pk)
        if locked.tier >= MAX_TIER:
            raise Conflict("the action is already at the highest tier", code="highest_tier")
        minutes = (
            AgentTool.objects.filter(agent_id=locked.agent_id, tool=locked.tool)
            .values_list("sla_minutes", flat=True)
            .first()
        )
        sla = timedelta(minutes=minutes or 60)
        now = timezone.now()
        ActionRequest.objects.filter(pk=locked.pk).update(
            tier=locked.tier + 1,
            warn_at=now + sla / 2,
            due_at=now + sla,
            warned_at=None,
            claimed_by=None,
            claim_expires_at=None,
        )
        dropped = list(locked.approvals.values_list("reviewer__username", flat=True))
        locked.approvals.all().delete()
        queue_count_add(agent_id=locked.agent_id, tier=locked.tier, delta=-1)
        queue_count_add(agent_id=locked.agent_id, tier=locked.tier + 1, delta=1)
        counters.bump(locked.agent_id, escalations=1)
        record(
            actor=actor,
            event="action.escalated",
            target=locked,
            agent_id=locked.agent_id,
            before={"tier": locked.tier},
            after={"tier": locked.tier + 1, "reason": reason, "approvals_dropped": dropped},
        )
        notify_reviewers(locked, tier=locked.tier + 1, text=f"Escalated to you: {locked.tool} ({reason})")
        transaction.on_commit(partial(broadcast.action_escalated, locked.pk, from_tier=locked.tier))
    locked.refresh_from_db()
    return locked


MAX_TIER = 2
CLAIM_MINUTES = 5


def action_request_claim(*, action: ActionRequest, actor: User, minutes: int = CLAIM_MINUTES) -> ActionRequest:
    """Take an advisory lease on a pending action so others see it is being worked on."""
    now = timezone.now()
    with transaction.atomic():
        taken = (
            ActionRequest.objects.filter(pk=action.pk, status=ActionStatus.PENDING)
            .filter(Q(claimed_by__isnull=True) | Q(claim_expires_at__lt=now) | Q(claimed_by=actor))
            .update(
                claimed_by=actor,
                claim_expires_at=now + timedelta(minutes=minutes),
                claimed_at=Case(
                    When(claimed_by=actor, claim_expires_at__gte=now, then=F("claimed_at")), default=Value(now)
                ),
            )
        )
        if not taken:
            current = ActionRequest.objects.select_related("claimed_by").get(pk=action.pk)
            if current.status != ActionStatus.PENDING:
                raise _already_decided(action.pk)
            holder = current.claimed_by.get_username() if current.claimed_by else "someone"
            raise Conflict(
                f"{holder} is working on this until {current.claim_expires_at:%H:%M:%S} UTC",
                code="claimed",
                details={"claimed_by": holder},
            )
        record(actor=actor, event="action.claimed", target=action, agent_id=action.agent_id, after={"minutes": minutes})
        transaction.on_commit(lambda: broadcast.action_changed(action.pk))
    action.refresh_from_db()
    return action


def action_request_release(*, action: ActionRequest, actor: User) -> None:
    """Give up a claim."""
    with transaction.atomic():
        if ActionRequest.objects.filter(pk=action.pk, claimed_by=actor).update(claimed_by=None, claim_expires_at=None):
            record(actor=actor, event="action.released", target=action, agent_id=action.agent_id)
            transaction.on_commit(lambda: broadcast.action_changed(action.pk))


def notify_reviewers(action: ActionRequest, *, tier: int, text: str) -> None:
    """In-app notice (and e-mail when configured) to the people who may decide at `tier`."""

    perm = {0: "configure_agent", 1: "review_agent"}.get(tier, "review_escalated_agent")
    holders = users_with_agent_perm(action.agent, perm)
    if tier == 1 and action.reviewer_group_id is not None:
        holders = holders.filter(groups=action.reviewer_group_id)
    users = list(holders)
    url = f"/actions/{action.pk}/"
    Notification.objects.bulk_create([Notification(user=u, text=text[:500], url=url) for u in users])
    emails = [u.email for u in users if u.email]
    if emails and settings.EMAIL_NOTIFICATIONS:
        transaction.on_commit(
            lambda: send_mail(
                subject=f"[Countersign] {text[:80]}",
                message=f"{text}\n\n{settings.COUNTERSIGN_BASE_URL}{url}",
                from_email=None,
                recipient_list=emails,
                fail_silently=True,
            )
        )
    ids = [u.pk for u in users]
    transaction.on_commit(lambda: broadcast.notifications_changed(ids))


def sla_tick() -> dict[str, int]:
    """Warn at half time; at expiry escalate, or apply the default (reject unless configured). Idempotent."""
    now = timezone.now()
    counts = {"warned": 0, "escalated": 0, "expired": 0, "auto_approved": 0}
    for action in ActionRequest.objects.filter(status=ActionStatus.PENDING, warned_at__isnull=True, warn_at__lte=now)[
        :500
    ]:
        with transaction.atomic():
            if ActionRequest.objects.filter(pk=action.pk, status=ActionStatus.PENDING, warned_at__isnull=True).update(
                warned_at=now
            ):
                record(
                    actor=Actor.system("sla"),
                    event="action.sla_warning",
                    target=action,
                    agent_id=action.agent_id,
                    after={"due_at": action.due_at},
                )
                notify_reviewers(action, tier=action.tier, text=f"Half the time is gone: {action.tool} is due soon")
                transaction.on_commit(partial(broadcast.action_changed, action.pk))
                counts["warned"] += 1
    for action in ActionRequest.objects.filter(status=ActionStatus.PENDING, due_at__lte=now).select_related("run")[
        :500
    ]:
        try:
            if action.on_timeout == "escalate" and action.tier < MAX_TIER:
                action_request_escalate(action=action, actor=Actor.system("sla"), reason="no decision within the SLA")
                counts["escalated"] += 1
            elif action.on_timeout == "approve":
                _decide_by_timeout(action, to_status=ActionStatus.APPROVED)
                counts["auto_approved"] += 1
            else:
                _decide_by_timeout(action, to_status=ActionStatus.EXPIRED)
                counts["expired"] += 1
        except Conflict:
            continue  # decided meanwhile
    return counts


def _decide_by_timeout(action: ActionRequest, *, to_status: str) -> None:
    reason = "no decision within the SLA: " + (
        "approved by policy" if to_status == ActionStatus.APPROVED else "rejected (fail closed)"
    )
    with transaction.atomic():
        now = timezone.now()
        if not action_leave_pending(action=action, to_status=to_status, expect={"due_at__lte": now}, decided_at=now):
            raise _already_decided(action.pk)
        if to_status == ActionStatus.EXPIRED:
            counters.bump(action.agent_id, decisions_expired=1)
        record(
            actor=Actor.system("sla"),
            event="action.expired" if to_status == ActionStatus.EXPIRED else "action.approved_on_timeout",
            target=action,
            agent_id=action.agent_id,
            before={"status": ActionStatus.PENDING},
            after={"status": to_status, "reason": reason},
        )
        action.status = to_status
        _after_decision(
            action, to_status=to_status, reason=reason, arguments_before=action.arguments, actor=Actor.system("sla")
        )


def _already_decided(action_id: int, *, tier: int | None = None) -> Conflict:
    current = ActionRequest.objects.filter(pk=action_id).select_related("decision__reviewer").first()
    if current is None:
        return IllegalTransition("the action no longer exists")
    if tier is not None and current.status == ActionStatus.PENDING and current.tier != tier:
        return AlreadyDecided(
            "the action was escalated to another tier while you had it open",
            details={"decided_by": None, "action_status": current.status, "tier": current.tier},
        )
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
    enqueue_on_commit(EXECUTE_ACTION, execution.pk)
