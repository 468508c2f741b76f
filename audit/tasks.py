"""Celery tasks: thin, take ids, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from audit.services import checkpoint_take


@shared_task(name="audit.checkpoint")
def checkpoint() -> int | None:

    taken = checkpoint_take()
    return taken.seq if taken else None
