"""Writes for users, roles and API tokens."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.db import transaction

from accounts.models import ApiToken, Role, hash_token
from agents.models import Agent
from agents.selectors import agent_perms_on
from agents.services import agent_permission_grant
from audit.services import Actor, record
from core.errors import Forbidden
from live.push import PERMISSIONS_CHANGED, push

# The identity of an agent's own tokens: a user no form can make (Django's usernames have no colon) and
# nobody can log in as (no usable password), holding only the operate right on its agent.
AGENT_IDENTITY = "agent:{slug}"


def api_token_issue(*, user: User, actor: Actor | AbstractBaseUser | None, name: str = "") -> str:
    """Create a token for `user` and return the raw value (shown once, stored hashed)."""
    raw = "cs_" + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name, prefix=raw[:10], key_hash=hash_token(raw))
        record(actor=actor, event="api_token.issued", target=token, after={"user": user.get_username(), "name": name})
    return raw


def agent_token_issue(*, agent: Agent, actor: User, name: str = "") -> tuple[str, User]:
    """A token whose identity is the agent itself: it may operate that agent (submit calls, ask over MCP, act on
    grants) and nothing else, not review or approve. Only whoever configures the agent issues one."""
    if "configure_agent" not in agent_perms_on(actor, agent):
        raise Forbidden("only whoever configures the agent issues its tokens")
    with transaction.atomic():
        identity, made = get_user_model()._default_manager.get_or_create(
            username=AGENT_IDENTITY.format(slug=agent.slug), defaults={"is_active": True}
        )
        if made:
            identity.set_unusable_password()
            identity.save(update_fields=["password"])
            record(actor=actor, event="agent_identity.created", target=identity, agent_id=agent.pk)
        agent_permission_grant(agent=agent, perm="operate_agent", to=identity, actor=actor)
        raw = api_token_issue(user=identity, actor=actor, name=name or f"{agent.slug} (the agent's own)")
    return raw, identity


def role_assign(*, user: AbstractBaseUser, role: Role, actor: Actor | AbstractBaseUser | None) -> None:
    """Put `user` in the group of `role`."""
    with transaction.atomic():
        group, _ = Group.objects.get_or_create(name=role.value)
        if user.groups.filter(pk=group.pk).exists():  # type: ignore[attr-defined]
            return
        user.groups.add(group)  # type: ignore[attr-defined]
        record(actor=actor, event="role.granted", target=user, after={"role": role.value})
        _notify(user)


def role_remove(*, user: AbstractBaseUser, role: Role, actor: Actor | AbstractBaseUser | None) -> None:
    """Take `user` out of the group of `role`."""
    with transaction.atomic():
        group = Group.objects.filter(name=role.value).first()
        if group is None or not user.groups.filter(pk=group.pk).exists():  # type: ignore[attr-defined]
            return
        user.groups.remove(group)  # type: ignore[attr-defined]
        record(actor=actor, event="role.revoked", target=user, before={"role": role.value})
        _notify(user)


def user_set_active(*, user: AbstractBaseUser, actor: Actor | AbstractBaseUser | None, active: bool) -> bool:
    """Deactivate or reactivate `user`, audited. False if it already was so (nothing recorded)."""
    with transaction.atomic():
        # Read under the row lock: two admins saving at once record one change, not two.
        locked = get_user_model()._default_manager.select_for_update().get(pk=user.pk)
        if locked.is_active == active:
            return False
        locked.is_active = active
        # A real save (not QuerySet.update): its post_save is what closes the user's open sockets.
        locked.save(update_fields=["is_active"])
        record(
            actor=actor,
            event="access.user_activated" if active else "access.user_deactivated",
            target=locked,
            before={"is_active": not active},
            after={"is_active": active},
        )
    user.is_active = active
    return True


def _notify(user: AbstractBaseUser) -> None:
    # Group membership can carry per-agent permissions: open sockets recompute their groups.
    push(PERMISSIONS_CHANGED, user_ids=[int(user.pk)])
