"""Bearer-token authentication for the JSON API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from accounts.models import ApiToken, hash_token
from core.prepared import PreparedRead

# How stale a token's "last used" may be: writing it on every call cost each API request a
# commit of its own (about 1 ms, a quarter of a decision's database time).
LAST_USED_RESOLUTION = timedelta(minutes=1)


@PreparedRead
def _live_token(key_hash: str) -> QuerySet[ApiToken]:
    """The token with this hash, not revoked, with its user if active. Every API call reads it: prepared."""
    live = ApiToken.objects.filter(key_hash=key_hash, revoked_at__isnull=True, user__is_active=True)
    return live.select_related("user")


def user_for_token(token: str) -> Any:
    """The active user holding `token` (not revoked), or None. Marks the token used, to the minute."""
    found = _live_token.first(key_hash=hash_token(token))
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
