"""Celery tasks: thin, take ids, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from gateway.services import gateway_tasks_purge


@shared_task(name="gateway.purge_tasks")
def purge_tasks() -> int:
    return gateway_tasks_purge()
