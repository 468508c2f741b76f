"""Who may do what: the reads behind the access pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from agents.models import Agent, AgentGroupObjectPermission, AgentUserObjectPermission

AGENT_PERMS = [
    ("review_agent", "review"),
    ("review_escalated_agent", "review escalations"),
    ("operate_agent", "operate"),
    ("configure_agent", "configure"),
]


@dataclass(frozen=True)
class Holder:
    username: str
    via: str  # "direct" or the group's name


def holders_of(agent: Agent) -> dict[str, list[Holder]]:
    """For each per-agent permission: who holds it, and how (two queries in all)."""
    result: dict[str, list[Holder]] = {codename: [] for codename, _ in AGENT_PERMS}
    direct = AgentUserObjectPermission.objects.filter(content_object=agent, user__is_active=True).values_list(
        "permission__codename", "user__username"
    )
    for codename, username in direct:
        result.setdefault(codename, []).append(Holder(username, "direct"))
    via_group = AgentGroupObjectPermission.objects.filter(
        content_object=agent, group__user__is_active=True
    ).values_list("permission__codename", "group__user__username", "group__name")
    for codename, username, group in via_group:
        result.setdefault(codename, []).append(Holder(username, group))
    for holders in result.values():
        holders.sort(key=lambda h: (h.username, h.via))
    return result


def rights_of(user: AbstractBaseUser) -> dict[str, Any]:
    """A user's roles, global permissions and per-agent permissions."""
    User = get_user_model()
    user = User.objects.prefetch_related("groups").get(pk=user.pk)
    per_agent: dict[str, set[str]] = {}
    for slug, codename in AgentUserObjectPermission.objects.filter(user=user).values_list(
        "content_object__slug", "permission__codename"
    ):
        per_agent.setdefault(slug, set()).add(codename)
    for slug, codename in AgentGroupObjectPermission.objects.filter(group__user=user).values_list(
        "content_object__slug", "permission__codename"
    ):
        per_agent.setdefault(slug, set()).add(codename)
    return {
        "subject": user,
        "roles": [g.name for g in user.groups.all()],
        "global": sorted(user.get_all_permissions()) if not user.is_superuser else ["(superuser: everything)"],
        "per_agent": {slug: sorted(codes) for slug, codes in sorted(per_agent.items())},
    }
