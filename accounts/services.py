"""Writes for users, roles and API tokens."""

from __future__ import annotations

import secrets

from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.db import transaction

from accounts.models import ApiToken, Role, hash_token
from audit.services import Actor, record


def api_token_issue(*, user: User, actor: Actor | AbstractBaseUser | None, name: str = "") -> str:
    """Create a token for `user` and return the raw value (shown once, stored hashed)."""
    raw = "cs_" + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name, prefix=raw[:10], key_hash=hash_token(raw))
        record(actor=actor, event="api_token.issued", target=token, after={"user": user.get_username(), "name": name})
    return raw


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


def _notify(user: AbstractBaseUser) -> None:
    # Group membership can carry per-agent permissions: open sockets recompute their groups.
    from approvals import broadcast

    user_id = int(user.pk)
    transaction.on_commit(lambda: broadcast.permissions_changed([user_id]))
