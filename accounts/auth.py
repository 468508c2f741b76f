"""Bearer-token authentication for the JSON API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from accounts.models import ApiToken, hash_token

# How stale a token's "last used" may be: writing it on every call cost each API request a
# commit of its own (about 1 ms, a quarter of a decision's database time).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def user_for_token(token: str) -> Any:
    """The active user holding `token` (not revoked), or None. Marks the token used, to the minute."""
    found = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_token(token), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if found is None:
        return None
    # last_used_at is a convenience, not an audit fact: kept to the minute.
    now = timezone.now()
    if found.last_used_at is None or now - found.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=now)
    return found.user


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = user_for_token(token)
        if user is not None:
            request.user = user
        return user
