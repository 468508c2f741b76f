"""Deciding a pending action: approve, reject, edit then approve, quorum, escalation, timeouts."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents import services as agent_services
from agents.guard import GuardRefusal, guard_edited_call, validate_arguments
from agents.models import AgentTool
from agents.tools import get_tool
from approvals.models import (
    ActionRequest,
    ActionStatus,
    Approval,
    Decision,
    Verdict,
)
from approvals.notices import notify_reviewers
from approvals.prompt_release import prompt_release_check
from approvals.queue import action_leave_pending, execution_schedule, queue_count_add
from approvals.webhooks import DECISION, webhook_queue
from audit.services import Actor, record
from core import counters
from core.errors import Conflict, Forbidden, IllegalTransition, InvalidInput
from core.prepared import PreparedRead
from live.push import ACTION_CHANGED, ACTION_CLOSED, ACTION_ESCALATED, push

logger = logging.getLogger(__name__)


class AlreadyDecided(Conflict):
    code = "already_decided"


def action_request_decide(
    *,
    action: ActionRequest,
    actor: User,
    verdict: str,
    arguments: Any = None,
    comment: str = "",
    override_reason: str = "",
) -> Decision | None:
    """Approve, reject (with a reason), edit-and-approve, or escalate a pending action.

    Returns the Decision when the action is decided; None when an approval was
    recorded toward a quorum or the action was escalated. `override_reason` is the
    written reason to approve a prompt version that regresses on the golden set
    (approvals.prompt_release); without one, such an approval is refused.
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
    with transaction.atomic():
        if verdict in (Verdict.APPROVE, Verdict.EDIT):
            _check_separation_of_duties(action, actor)
            if action.tier == 0:
                # In the decision's transaction: an override is audited with it, or not at all.
                prompt_release_check(action=action, actor=actor, override_reason=override_reason)
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
            action=action,
            actor=actor,
            verdict=verdict,
            new_arguments=new_arguments,
            magnitude=magnitude,
            comment=comment,
        )


ESCALATE = "escalate"


def validated_edit(action: ActionRequest, arguments: Any) -> tuple[dict[str, Any], Decimal]:
    """Edited arguments and their magnitude, checked as the guard checks the agent's and by the tool itself."""
    checked = guard_edited_call(agent=action.agent, tool_name=action.tool, arguments=arguments)
    if isinstance(checked, GuardRefusal):
        raise InvalidInput(checked.message, code=checked.code, details=checked.details)
    edited: dict[str, Any] = checked.tool.dump(checked.args)
    return edited, checked.magnitude


def _check_separation_of_duties(action: ActionRequest, actor: User) -> None:
    started_by = action.run.created_by_id if action.run is not None else action.submitted_by_id
    if started_by is not None and started_by == actor.pk:
        raise Forbidden(
            "you started this work, so someone else must approve it (separation of duties)",
            code="separation_of_duties",
        )


@PreparedRead
def _claim_of(action_id: int) -> QuerySet[Any, tuple[int | None, datetime | None]]:
    """Who holds the action's claim, since when (the decision's latency counts from it). Prepared: every
    decision reads it."""
    return ActionRequest.objects.filter(pk=action_id).values_list("claimed_by_id", "claimed_at")


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
    # Always inside the caller's transaction (action_request_decide, a quorum), and an error here
    # ends it: no savepoint of its own (two round trips per decision).
    with transaction.atomic(savepoint=False):
        # The race: two reviewers decide at once. Only the UPDATE that still
        # sees `pending` touches the row; the other waits for that commit,
        # re-reads, matches nothing, and is told who won.
        claimed_by_id, claimed_at = _claim_of.first(action_id=action.pk) or (None, None)
        # The tier is part of the expected state: an action escalated since the
        # reviewer loaded it is no longer theirs to decide at this tier.
        if not action_leave_pending(
            action=action, to_status=to_status, decided_at=now, arguments=new_arguments, magnitude=magnitude
        ):
            raise already_decided(action.pk, tier=action.tier)
        before = action.arguments
        decision = Decision.objects.create(
            action=action,
            reviewer=actor,
            verdict=verdict,
            comment=comment,
            arguments_before=before,
            arguments_after=new_arguments,
        )
        # What the compare-and-set wrote, on the instance (no re-read: the CAS expected the rest).
        action.status, action.decided_at = to_status, now
        action.arguments, action.magnitude = new_arguments, magnitude
        action.claimed_by, action.claim_expires_at = None, None
        _count_decision(action, verdict=verdict, claimed_by_actor=claimed_at if claimed_by_id == actor.pk else None)
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
        execution_schedule(action)
    else:
        _declined(action, actor=actor)
        if action.run is not None:
            outcome = "rejected" if to_status == ActionStatus.REJECTED else to_status
            agent_services.run_feed_back(
                run=action.run, payload=action.feedback(outcome, arguments=arguments_before, error=reason)
            )
    if action.tier > 0:  # an agent's call, not a configuration change
        webhook_queue(action, event=DECISION)
    push(ACTION_CLOSED, action_id=action.pk)


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
            raise already_decided(locked.pk, tier=action.tier)
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
            push(ACTION_CHANGED, action_id=locked.pk)
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
            raise already_decided(locked.pk)
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
        push(ACTION_ESCALATED, action_id=locked.pk, from_tier=locked.tier)
    locked.refresh_from_db()
    return locked


MAX_TIER = 2


def decide_by_timeout(action: ActionRequest, *, to_status: str) -> None:
    reason = "no decision within the SLA: " + (
        "approved by policy" if to_status == ActionStatus.APPROVED else "rejected (fail closed)"
    )
    with transaction.atomic():
        now = timezone.now()
        if not action_leave_pending(action=action, to_status=to_status, expect={"due_at__lte": now}, decided_at=now):
            raise already_decided(action.pk)
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


def action_request_withdraw(*, action: ActionRequest, actor: User, reason: str) -> bool:
    """The agent takes back a request still waiting for a person; False if it no longer waits."""
    if action.run_id is not None:
        # A run waits on its actions' outcomes: those are cancelled with the run (runtime.services.run_cancel).
        raise IllegalTransition("an action of a run is cancelled with its run")
    with transaction.atomic():
        # Compare-and-set: a reviewer deciding at the same moment wins or loses as a whole.
        if not action_leave_pending(action=action, to_status=ActionStatus.CANCELLED, error=reason):
            return False
        record(
            actor=actor,
            event="action.withdrawn",
            target=action,
            agent_id=action.agent_id,
            before={"status": ActionStatus.PENDING},
            after={"status": ActionStatus.CANCELLED, "reason": reason},
        )
        push(ACTION_CLOSED, action_id=action.pk)
    return True


def already_decided(action_id: int, *, tier: int | None = None) -> Conflict:
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
