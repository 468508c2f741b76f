"""Celery tasks of the run loop: thin, take ids, safe to run twice; a transient database error retries them."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from core.transient import retry_on_transient
from runtime.loop import run_advance


# The name predates this app; queued messages carry it.
@shared_task(name="agents.advance_run", bind=True, max_retries=None)
def advance_run(self: Any, run_id: int) -> None:
    with retry_on_transient(self):
        run_advance(run_id=run_id)
