"""Celery tasks: thin, take ids, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="agents.advance_run")
def advance_run(run_id: int) -> None:
    from agents.runtime import run_advance

    run_advance(run_id=run_id)


@shared_task(name="agents.purge_traces")
def purge_traces() -> int:
    from agents.services import traces_purge

    return traces_purge()


@shared_task(name="agents.sweep_runs")
def sweep_runs() -> dict[str, int]:
    from agents.services import runs_sweep

    return runs_sweep()
