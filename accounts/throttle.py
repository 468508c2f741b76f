"""Login throttling: repeated failures for one username from one address lock it out for a while."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


def _key(request: HttpRequest, username: str) -> str:
    address = request.META.get("REMOTE_ADDR", "")
    digest = hashlib.sha256(f"{address}|{username.lower()}".encode()).hexdigest()
    return f"login-failures:{digest}"


def is_locked(request: HttpRequest, username: str) -> bool:
    return int(cache.get(_key(request, username), 0)) >= settings.LOGIN_FAILURE_LIMIT


def note_failure(request: HttpRequest, username: str) -> None:
    key = _key(request, username)
    # add() starts the window; incr() counts within it (atomic on Redis).
    cache.add(key, 0, timeout=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW_SECONDS)


def clear(request: HttpRequest, username: str) -> None:
    cache.delete(_key(request, username))
