"""Celery tasks: thin, take ids, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from ops.alerts import alerts_evaluate


@shared_task(name="ops.evaluate_alerts")
def evaluate_alerts() -> dict[str, int]:

    return alerts_evaluate()
