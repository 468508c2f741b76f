"""Who may do what: the reads behind the access pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.utils import timezone
from django.utils.crypto import constant_time_compare

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


@dataclass(frozen=True)
class SessionCheck:
    """Whether a long-lived connection opened under a session may stay open, and for how long at most."""

    ok: bool
    reason: str = ""
    expires_at: datetime | None = None  # None: the session store does not say (re-check periodically)


def _session_data(store: SessionBase) -> tuple[dict[str, Any] | None, datetime | None]:
    if isinstance(store, DatabaseSessionStore):  # db and cached_db: the row holds the expiry
        row = (
            store.model.objects.filter(session_key=store.session_key, expire_date__gt=timezone.now())
            .values_list("session_data", "expire_date")
            .first()
        )
        if row is None:
            return None, None
        return store.decode(row[0]), row[1]
    data = store.load()  # other stores drop expired sessions themselves (cache TTL)
    return data or None, None


def session_still_valid(*, session_key: str, user_id: int, auth_hash: str) -> SessionCheck:
    """What Django checks on every request, re-checked for a connection that outlives requests.

    `auth_hash` is the user's session auth hash when the connection opened: a password
    change since then ends it, even when update_session_auth_hash kept this session alive
    (the page reconnects through a fresh handshake). Reads only; nothing is written.
    """
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data, expires_at = _session_data(store)
    # Logout flushes the session; a login as someone else cycles it to another user.
    if data is None or data.get(SESSION_KEY) != str(user_id):
        return SessionCheck(ok=False, reason="session ended")
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None or not user.is_active:
        return SessionCheck(ok=False, reason="user deactivated")
    current = user.get_session_auth_hash()
    if not (
        constant_time_compare(data.get(HASH_SESSION_KEY, ""), current) and constant_time_compare(auth_hash, current)
    ):
        return SessionCheck(ok=False, reason="password changed")
    return SessionCheck(ok=True, expires_at=expires_at)
