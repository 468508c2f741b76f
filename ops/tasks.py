"""Celery tasks: thin, take ids, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="ops.evaluate_alerts")
def evaluate_alerts() -> dict[str, int]:
    from ops.alerts import alerts_evaluate

    return alerts_evaluate()
