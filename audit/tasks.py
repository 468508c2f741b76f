"""Celery tasks: thin, take ids, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="audit.checkpoint")
def checkpoint() -> int | None:
    from audit.services import checkpoint_take

    taken = checkpoint_take()
    return taken.seq if taken else None
