"""Logins and failed logins go on the audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db import transaction
from django.dispatch import receiver

from accounts import throttle
from audit.services import Actor, record


@receiver(user_logged_in)
def audit_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if request is not None:
        throttle.clear(request, user.get_username())
    with transaction.atomic():
        record(actor=user, event="auth.login", target=user)


@receiver(user_login_failed)
def audit_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    username = str(credentials.get("username", ""))[:150]
    if request is not None:
        throttle.note_failure(request, username)
    with transaction.atomic():
        record(actor=Actor.system("anonymous"), event="auth.login_failed", after={"username": username})
