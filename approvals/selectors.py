"""Reads over action requests. Each owns its permission filter and keeps queries flat."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from agents.selectors import agents_with_perm
from approvals.models import ActionRequest, ActionStatus

User = AbstractBaseUser | AnonymousUser


def actions_reviewable_by(user: User) -> QuerySet[ActionRequest]:
    """Actions of the agents `user` may review; anyone else gets an empty set (so 404s)."""
    return ActionRequest.objects.filter(agent__in=agents_with_perm(user, "review_agent")).select_related(
        "agent", "run", "decision__reviewer"
    )


def inbox_for(user: User, *, before: int | None = None, limit: int = 50) -> list[ActionRequest]:
    """Pending actions the user may review, newest first, keyset-paginated on id."""
    qs = actions_reviewable_by(user).filter(status=ActionStatus.PENDING).order_by("-id")
    if before is not None:
        qs = qs.filter(id__lt=before)
    return list(qs[:limit])


def reviewable_agent_ids(user: User) -> list[int]:
    return list(agents_with_perm(user, "review_agent").values_list("pk", flat=True))
