"""Urgent runs overtake routine ones in a real worker's queue (Redis priorities)."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from agents.models import Run, RunPriority
from agents.services import run_start
from config.celery import app
from tests.conftest import needs_postgres, needs_redis, refund_input

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]


def test_an_urgent_run_overtakes_queued_routine_runs(demo, bare_stack):
    queue = bare_stack.env["CELERY_QUEUE"]
    # Publish from this process to the stack's queue while no worker is running.

    app.conf.task_default_queue = queue
    try:
        with override_settings(BACKGROUND_TASKS="celery"):
            routine = [
                run_start(agent=demo["refund-triage"], input=refund_input(amount=300), actor=None) for _ in range(6)
            ]
            urgent = run_start(
                agent=demo["refund-triage"], input=refund_input(amount=300), actor=None, priority=RunPriority.URGENT
            )
    finally:
        app.conf.task_default_queue = "countersign"
    bare_stack.start_worker(concurrency=1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and Run.objects.filter(started_at__isnull=True).exists():
        time.sleep(0.2)
    order = list(Run.objects.order_by("started_at").values_list("pk", flat=True))
    assert len(order) == 7, bare_stack.log("worker")
    # The urgent run, published last, is started first (prefetch is 1 message per worker).
    assert order[0] == urgent.pk, (order, [r.pk for r in routine])
