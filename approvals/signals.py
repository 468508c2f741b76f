"""Open sockets follow the session: events that can end it make them re-check at once.

These receivers only push a message, on commit; the consumer decides (see
live.consumers.LiveConsumer.session_check). Changes that send no signal (QuerySet.update, a
session row deleted by hand) are caught by the consumer's periodic re-check.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save
from django.dispatch import receiver

from live.groups import session_tag
from live.push import SESSIONS_CHECK, push


@receiver(user_logged_out)
def close_sockets_on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    user_id = int(user.pk)
    # The signal is sent before the session is flushed, so a re-check could still
    # find it alive: name the ended session and its socket closes without asking.
    session = getattr(request, "session", None)
    ended = session_tag(session.session_key) if session is not None and session.session_key else ""
    push(SESSIONS_CHECK, user_ids=[user_id], ended=ended)


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def recheck_sockets_on_user_change(
    sender: Any, instance: Any, created: bool, update_fields: frozenset[str] | None, **kwargs: Any
) -> None:
    # Deactivation and password changes, from the app, django-admin or the shell.
    # A login's last_login stamp changes nothing a socket depends on.
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    user_id = int(instance.pk)
    push(SESSIONS_CHECK, user_ids=[user_id], ended="")
