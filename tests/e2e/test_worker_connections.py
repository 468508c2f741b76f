"""A prefork worker keeps its pooled PostgreSQL connections from one task to the next.

Celery's Django fixup closes Django's connection pool after every task on prefork unless it may reuse
connections (CELERY_DB_REUSE_MAX): every task then opened three new sessions, and a worker spent twice the
CPU of the same task on solo. Between tasks the connection goes back to the pool (config.celery).
"""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from django.db import connection

from accounts.services import api_token_issue
from agents.models import Run
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import wait_until

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]

RUNS = 10  # three tasks each (a step, the execution, the last step): 30 tasks


# The worker names its sessions so (libpq's PGAPPNAME): the test waits for exactly those to end.
WORKER_APP = "countersign-test-worker-connections"


def sessions_opened() -> int:
    """PostgreSQL's count of sessions opened on this database so far (a session that ended has reported its own)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def worker_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [WORKER_APP])
        return int(cursor.fetchone()[0])


def test_a_prefork_worker_reuses_its_pooled_connections_across_tasks(demo, bare_stack):
    stack = bare_stack
    operator = api_token_issue(user=user("operator"), actor=None)
    with httpx.Client(base_url=stack.base, timeout=30) as api:  # the web process's pool, warmed
        assert api.get("/login/").status_code == 200
    before = sessions_opened()
    # prefork, the default pool: one pool child
    worker = stack.start_worker(concurrency=1, PGAPPNAME=WORKER_APP)
    assert wait_until(lambda: " ready." in stack.log("worker"), timeout=60), stack.log("worker")
    ids = []
    with httpx.Client(base_url=stack.base, timeout=30) as api:
        for i in range(RUNS):
            response = api.post(
                "/api/v1/agents/refund-triage/runs",
                json={"input": {"ticket": "Arrived broken.", "order_id": f"ORD-{1001 + i}", "amount": 5}},
                headers={"Authorization": f"Bearer {operator}"},
            )
            assert response.status_code == 201, response.text
            ids.append(int(response.json()["id"]))
    assert wait_until(lambda: Run.objects.filter(pk__in=ids, status="succeeded").count() == RUNS, timeout=90), (
        list(Run.objects.filter(pk__in=ids).values_list("status", flat=True)),
        stack.log("worker"),
    )
    assert worker.poll() is None
    # The worker stops, and its sessions end: each reports its count as it ends.
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=30)
    assert wait_until(lambda: worker_sessions() == 0, timeout=30)
    opened = sessions_opened() - before
    # The worker's child opens a pool (one connection, another for the lease heartbeat); the web process
    # may grow its pool by one or two. Before the fix: three per task, about 90.
    assert opened < 12, f"{opened} PostgreSQL sessions opened for {RUNS * 3} tasks"
