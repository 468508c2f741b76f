"""Celery tasks: thin, take ids, safe to run twice; a transient database error retries them."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from core.transient import retry_on_transient


@shared_task(name="approvals.execute_action", bind=True, max_retries=None)
def execute_action(self: Any, execution_id: int) -> None:
    from approvals.execution import action_execute

    with retry_on_transient(self):
        action_execute(execution_id=execution_id)


@shared_task(name="approvals.sweep_executions")
def sweep_executions() -> dict[str, int]:
    from approvals.execution import executions_sweep

    return executions_sweep()


@shared_task(name="approvals.sla_tick")
def sla_tick() -> dict[str, int]:
    from approvals.services import sla_tick as tick

    return tick()
