"""Claims: an advisory lease a reviewer takes on a pending action, visible to everyone."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from approvals.decisions import already_decided
from approvals.models import (
    ActionRequest,
    ActionStatus,
)
from audit.services import record
from core.errors import Conflict
from live.push import ACTION_CHANGED, push

logger = logging.getLogger(__name__)
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
                raise already_decided(action.pk)
            holder = current.claimed_by.get_username() if current.claimed_by else "someone"
            raise Conflict(
                f"{holder} is working on this until {current.claim_expires_at:%H:%M:%S} UTC",
                code="claimed",
                details={"claimed_by": holder},
            )
        record(actor=actor, event="action.claimed", target=action, agent_id=action.agent_id, after={"minutes": minutes})
        push(ACTION_CHANGED, action_id=action.pk)
    action.refresh_from_db()
    return action


def action_request_release(*, action: ActionRequest, actor: User) -> None:
    """Give up a claim."""
    with transaction.atomic():
        if ActionRequest.objects.filter(pk=action.pk, claimed_by=actor).update(claimed_by=None, claim_expires_at=None):
            record(actor=actor, event="action.released", target=action, agent_id=action.agent_id)
            push(ACTION_CHANGED, action_id=action.pk)
