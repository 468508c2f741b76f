"""Spot checks: a share of auto-approved actions sampled for a person to grade after the fact, and the grading.

Sampling never blocks or delays anything: the action runs exactly as it would have, and
the grade arrives whenever a reviewer gets to it. The grades feed calibration, each
standing for 1 / rate auto-approved calls (approvals.models.SpotCheck.weight).
"""

from __future__ import annotations

import secrets

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from agents.models import AgentTool
from approvals.models import ActionRequest, ActionStatus, Grade, SpotCheck
from approvals.selectors import spot_checks_reviewable_by
from audit.services import record
from core.errors import Conflict, Forbidden, InvalidInput

# The operating system's randomness, not a seeded generator: an agent that could predict
# which of its calls are checked could behave only on those.
_draw = secrets.SystemRandom()

COMMENT_MAX = 5000


class AlreadyGraded(Conflict):
    code = "already_graded"


def spot_check_sample(action: ActionRequest, agent_tool: AgentTool) -> SpotCheck | None:
    """Sample an auto-approved action for a spot check with the tool's spot_check_rate (in the routing transaction).

    Not audited (the routing row already is, and one more row per sampled call would
    double the audit volume); the grade is.
    """
    rate = agent_tool.spot_check_rate
    if action.status != ActionStatus.AUTO_APPROVED or rate <= 0 or _draw.random() >= rate:
        return None
    return SpotCheck.objects.create(action=action, agent_id=action.agent_id, tool=action.tool, rate=rate)


def spot_check_grade(*, spot_check_id: int, actor: User, grade: str, comment: str = "") -> SpotCheck:
    """Grade a spot check once: fine, should have been edited, or should have been rejected (with a reason)."""
    if grade not in Grade.values:
        raise InvalidInput(f"grade must be one of {', '.join(Grade.values)}", code="invalid_grade")
    comment = (comment or "").strip()
    if grade != Grade.FINE and not comment:
        raise InvalidInput("say what should have been different (comment)", code="reason_required")
    if len(comment) > COMMENT_MAX:
        raise InvalidInput(f"the comment is longer than {COMMENT_MAX} characters", code="comment_too_long")
    with transaction.atomic():
        check = spot_checks_reviewable_by(actor).select_related("action__run", "agent").filter(pk=spot_check_id).first()
        if check is None:
            raise Forbidden("you may not review this agent's actions", code="not_a_reviewer")
        action = check.action
        started_by = action.run.created_by_id if action.run is not None else action.submitted_by_id
        if started_by is not None and started_by == actor.pk:
            raise Forbidden(
                "you started this work, so someone else must grade it (separation of duties)",
                code="separation_of_duties",
            )
        # The race: two reviewers grade at once. Only the UPDATE that still sees no
        # grade writes; the other waits for that commit, matches nothing, and is told who won.
        now = timezone.now()
        won = SpotCheck.objects.filter(pk=check.pk, grade="").update(
            grade=grade, comment=comment, graded_by=actor, graded_at=now
        )
        if not won:
            raise already_graded(check.pk)
        record(
            actor=actor,
            event="spot_check.graded",
            target=action,
            agent_id=check.agent_id,
            after={
                "spot_check": check.pk,
                "tool": check.tool,
                "rate": check.rate,
                "grade": grade,
                "comment": comment,
                "action_status": action.status,
            },
        )
    check.grade, check.comment, check.graded_by, check.graded_at = grade, comment, actor, now
    return check


def already_graded(spot_check_id: int) -> AlreadyGraded:
    current = SpotCheck.objects.filter(pk=spot_check_id).select_related("graded_by").first()
    who = current.graded_by.get_username() if current and current.graded_by else "someone else"
    grade = current.get_grade_display() if current else ""
    return AlreadyGraded(
        f"already graded by {who} ({grade})" if grade else f"already graded by {who}",
        details={"graded_by": who, "grade": current.grade if current else ""},
    )
