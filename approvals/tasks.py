"""Celery tasks: thin, take ids, safe to run twice; a transient database error retries them."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from approvals.calibration import calibration_refit_all
from approvals.execution import action_execute, executions_sweep
from approvals.grants import grants_sweep
from approvals.models import EXECUTE_ACTION
from approvals.sla import sla_tick as tick
from approvals.webhooks import DELIVER, webhook_deliver, webhooks_sweep
from core.transient import retry_on_transient


@shared_task(name=EXECUTE_ACTION, bind=True, max_retries=None)
def execute_action(self: Any, execution_id: int) -> None:
    with retry_on_transient(self):
        action_execute(execution_id=execution_id)


@shared_task(name="approvals.sweep_executions")
def sweep_executions() -> dict[str, int]:
    return executions_sweep()


@shared_task(name="approvals.sweep_grants")
def sweep_grants() -> dict[str, int]:
    return grants_sweep()


@shared_task(name=DELIVER, bind=True, max_retries=None)
def deliver_webhook(self: Any, delivery_id: int) -> str:
    with retry_on_transient(self):
        return webhook_deliver(delivery_id=delivery_id)


@shared_task(name="approvals.sweep_webhooks")
def sweep_webhooks() -> dict[str, int]:
    return webhooks_sweep()


@shared_task(name="approvals.sla_tick")
def sla_tick() -> dict[str, int]:
    return tick()


@shared_task(name="approvals.refit_calibration")
def refit_calibration() -> int:
    return calibration_refit_all()
