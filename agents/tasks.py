"""Celery tasks: thin, take ids, safe to run twice; a transient database error retries them."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from core.transient import retry_on_transient


@shared_task(name="agents.advance_run", bind=True, max_retries=None)
def advance_run(self: Any, run_id: int) -> None:
    from agents.runtime import run_advance

    with retry_on_transient(self):
        run_advance(run_id=run_id)


@shared_task(name="agents.purge_traces")
def purge_traces() -> int:
    from agents.services import traces_purge

    return traces_purge()


@shared_task(name="agents.sweep_runs")
def sweep_runs() -> dict[str, int]:
    from agents.services import runs_sweep

    return runs_sweep()
