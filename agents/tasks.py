"""Celery tasks: thin, take ids, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from agents.services import runs_sweep, traces_purge


@shared_task(name="agents.purge_traces")
def purge_traces() -> int:
    return traces_purge()


@shared_task(name="agents.sweep_runs")
def sweep_runs() -> dict[str, int]:
    return runs_sweep()
