"""Celery tasks: thin, take ids, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="approvals.execute_action")
def execute_action(execution_id: int) -> None:
    from approvals.execution import action_execute

    action_execute(execution_id=execution_id)


@shared_task(name="approvals.sweep_executions")
def sweep_executions() -> dict[str, int]:
    from approvals.execution import executions_sweep

    return executions_sweep()


@shared_task(name="approvals.sla_tick")
def sla_tick() -> dict[str, int]:
    from approvals.services import sla_tick as tick

    return tick()
