"""Two real worker processes, concurrent runs, decisions and executions: no deadlock, no stuck run.

Runs are started over HTTP from several threads while reviewers approve from
several others; two Celery worker processes (two children each) take the
steps and executions. PostgreSQL's own deadlock counter for the database must
not move, every run must finish, no request may answer 5xx, and every approved
or automatic refund must be issued exactly once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection

from accounts.services import api_token_issue
from agents.models import Run
from approvals.models import ActionRequest
from audit.selectors import verify_chain
from demo.models import Refund
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import wait_until

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]

RUNS = 48


def deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


@pytest.mark.parametrize("kill_a_worker", [False, True], ids=["steady", "a-worker-sigkilled"])
def test_two_workers_concurrent_runs_and_decisions_never_deadlock_or_strand(demo, bare_stack, kill_a_worker):
    stack = bare_stack
    doomed = stack.start_worker(concurrency=2)
    stack.start_worker(concurrency=2)
    stack.start_beat()  # the sweepers, as in production
    operator = api_token_issue(user=user("operator"), actor=None)
    reviewers = [api_token_issue(user=user(name), actor=None) for name in ("reviewer", "reviewer2")]
    before = deadlocks()
    statuses: list[int] = []

    def start(i: int) -> int:
        # A third run automatically; hedging lowers the confidence of the rest, which wait for a person.
        ticket = "Arrived broken." if i % 3 == 0 else "Maybe it arrived broken?"
        with httpx.Client(base_url=stack.base, timeout=30) as api:
            response = api.post(
                "/api/v1/agents/refund-triage/runs",
                json={"input": {"ticket": ticket, "order_id": f"ORD-{1001 + i % 50}", "amount": 5}},
                headers={"Authorization": f"Bearer {operator}"},
            )
        statuses.append(response.status_code)
        return int(response.json()["id"])

    def approve_pending(token: str) -> None:
        try:
            _approve_pending(token)
        finally:
            connection.close()  # this thread's pooled connection goes back to the pool

    def _approve_pending(token: str) -> None:
        with httpx.Client(base_url=stack.base, timeout=30) as api:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                pending = list(
                    ActionRequest.objects.filter(status="pending", agent__slug="refund-triage").values_list(
                        "pk", flat=True
                    )
                )
                started_all = all_started.is_set()
                if started_all and not pending and not Run.objects.exclude(status__in=["succeeded", "failed"]):
                    return
                for pk in pending:
                    response = api.post(
                        f"/api/v1/actions/{pk}/decision",
                        json={"verdict": "approve"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    statuses.append(response.status_code)
                time.sleep(0.05)

    all_started = threading.Event()
    with ThreadPoolExecutor(max_workers=8) as pool:
        deciders = [pool.submit(approve_pending, token) for token in reviewers]
        run_ids = list(pool.map(start, range(RUNS)))
        all_started.set()
        if kill_a_worker:
            # Mid-flight: steps and executions of the killed worker are handed on by the sweepers.
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=10)
            stack.start_worker(concurrency=2)
        for decider in deciders:
            decider.result()

    finished = wait_until(lambda: Run.objects.filter(pk__in=run_ids, status="succeeded").count() == RUNS, timeout=90)
    stuck = Run.objects.filter(pk__in=run_ids).exclude(status="succeeded").count()
    print(f"runs: {RUNS}, stuck: {stuck}, deadlocks: {deadlocks() - before}, requests: {len(statuses)}")
    assert finished, (stuck, stack.log("worker"))
    assert deadlocks() - before == 0, stack.log("worker")
    assert "deadlock detected" not in stack.log("worker")
    assert all(status < 500 for status in statuses), sorted(set(statuses))
    # Each run issued its refund exactly once (approved by whichever reviewer won, or automatically):
    # no approved action ended without its effect, none had it twice.
    actions = ActionRequest.objects.filter(run_id__in=run_ids)
    assert actions.count() == RUNS
    approved_without_effect = actions.exclude(execution__idempotency_key__in=Refund.objects.values("idempotency_key"))
    print(f"approved actions without their effect: {approved_without_effect.count()}")
    assert approved_without_effect.count() == 0
    assert set(actions.values_list("status", flat=True)) == {"executed"}, list(
        actions.exclude(status="executed").values_list("error", flat=True)
    )
    assert Refund.objects.count() == RUNS
    assert Refund.objects.values("idempotency_key").distinct().count() == RUNS
    assert verify_chain().ok
