"""Exactly once under faults: a real worker is SIGKILLed in the middle of executing."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from accounts.services import api_token_issue
from agents.models import Run
from approvals.models import ActionRequest, Execution, ExecutionStatus
from audit.models import AuditEvent
from audit.selectors import verify_chain
from demo.models import Refund
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import wait_until

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]


def test_worker_killed_mid_execution_the_action_still_runs_exactly_once(demo, bare_stack):
    stack = bare_stack
    operator = api_token_issue(user=user("operator"), actor=None)
    reviewer = api_token_issue(user=user("reviewer"), actor=None)
    api = httpx.Client(base_url=stack.base, timeout=10)

    # The first worker holds each effect's transaction open for 30 s: long enough to be killed in it.
    # Everything else is the production default: a 15 s lease renewed by a heartbeat, beat sweeping every 5 s.
    doomed = stack.start_worker(concurrency=1, DEMO_TOOL_DELAY_SECONDS="30")
    created = api.post(
        "/api/v1/agents/refund-triage/runs",
        json={"input": {"ticket": "Arrived broken.", "order_id": "ORD-1003", "amount": 250}},
        headers={"Authorization": f"Bearer {operator}"},
    )
    assert created.status_code == 201
    run_id = created.json()["id"]
    assert wait_until(lambda: ActionRequest.objects.filter(run_id=run_id, status="pending").exists()), stack.log(
        "worker"
    )
    action = ActionRequest.objects.get(run_id=run_id)
    decided = api.post(
        f"/api/v1/actions/{action.pk}/decision",
        json={"verdict": "approve"},
        headers={"Authorization": f"Bearer {reviewer}"},
    )
    assert decided.status_code == 200

    assert wait_until(lambda: Execution.objects.filter(action=action, status=ExecutionStatus.RUNNING).exists())
    claimed = Execution.objects.get(action=action)
    # The heartbeat keeps the lease ahead while the effect runs (a fixed lease would have run out by now).
    assert wait_until(lambda: Execution.objects.get(pk=claimed.pk).lease_until > claimed.lease_until, timeout=10)
    assert Refund.objects.count() == 0  # inside the effect's transaction (written, not committed)
    os.killpg(doomed.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    doomed.wait(timeout=10)

    execution = Execution.objects.get(action=action)
    assert execution.status == ExecutionStatus.RUNNING
    assert Refund.objects.count() == 0  # the killed transaction rolled back

    stack.start_worker(concurrency=1)
    stack.start_beat()
    assert wait_until(lambda: Run.objects.get(pk=run_id).status == "succeeded", timeout=60), stack.log("worker")
    settle = time.monotonic() - killed_at
    print(f"settle time after SIGKILL: {settle:.1f} s")
    # LEASE_SECONDS (15) + SWEEP_INTERVAL_SECONDS (5) + the retry's own work.
    assert settle < 30, settle

    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.DONE
    assert execution.attempts == 2
    assert Refund.objects.filter(idempotency_key=execution.idempotency_key).count() == 1
    assert Refund.objects.count() == 1
    assert AuditEvent.objects.filter(event="action.executed", target_id=str(action.pk)).count() == 1
    assert AuditEvent.objects.filter(event="execution.recovered", target_id=str(action.pk)).count() == 1
    assert verify_chain().ok
