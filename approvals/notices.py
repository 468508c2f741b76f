"""Telling reviewers (in the app, and by e-mail when configured) that something waits for them."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction

from agents.selectors import users_with_agent_perm
from approvals.models import (
    ActionRequest,
    Notification,
)
from live.push import NOTIFICATIONS_CHANGED, push

logger = logging.getLogger(__name__)


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
    push(NOTIFICATIONS_CHANGED, user_ids=ids)
