"""The SLA job: warn at half time, and at expiry escalate or apply the tool's default."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from approvals.decisions import MAX_TIER, action_request_escalate, decide_by_timeout
from approvals.models import (
    ActionRequest,
    ActionStatus,
)
from approvals.notices import notify_reviewers
from audit.services import Actor, record
from core.errors import Conflict
from live.push import ACTION_CHANGED, push

logger = logging.getLogger(__name__)


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
                push(ACTION_CHANGED, action_id=action.pk)
                counts["warned"] += 1
    for action in ActionRequest.objects.filter(status=ActionStatus.PENDING, due_at__lte=now).select_related("run")[
        :500
    ]:
        try:
            if action.on_timeout == "escalate" and action.tier < MAX_TIER:
                action_request_escalate(action=action, actor=Actor.system("sla"), reason="no decision within the SLA")
                counts["escalated"] += 1
            elif action.on_timeout == "approve":
                decide_by_timeout(action, to_status=ActionStatus.APPROVED)
                counts["auto_approved"] += 1
            else:
                decide_by_timeout(action, to_status=ActionStatus.EXPIRED)
                counts["expired"] += 1
        except Conflict:
            continue  # decided meanwhile
    return counts
