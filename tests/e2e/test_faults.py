"""Exactly once under faults: a real worker is SIGKILLed in the middle of executing."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from django.utils import timezone

from accounts.services import api_token_issue
from agents.models import AgentTool, Run
from approvals.models import ActionRequest, Execution, ExecutionStatus
from audit.models import AuditEvent
from audit.selectors import verify_chain
from demo.models import Refund
from tests.conftest import needs_postgres, needs_redis, user

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]


def wait_until(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def test_worker_killed_mid_execution_the_action_still_runs_exactly_once(demo, bare_stack):
    stack = bare_stack
    # A 1 s tool timeout and a 1 s margin make the lease of a claimed execution 2 s.
    AgentTool.objects.filter(tool="issue_refund").update(timeout_seconds=1)
    operator = api_token_issue(user=user("operator"), actor=None)
    reviewer = api_token_issue(user=user("reviewer"), actor=None)
    api = httpx.Client(base_url=stack.base, timeout=10)

    # The first worker holds each effect's transaction open for 30 s: long enough to be killed in it.
    doomed = stack.start_worker(concurrency=1, DEMO_TOOL_DELAY_SECONDS="30", EXECUTION_LEASE_MARGIN_SECONDS="1")
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
    time.sleep(1.0)  # inside the effect's transaction now (the refund row is written, not committed)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)

    execution = Execution.objects.get(action=action)
    assert execution.status == ExecutionStatus.RUNNING
    assert Refund.objects.count() == 0  # the killed transaction rolled back

    stack.start_worker(concurrency=1)
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).lease_until < timezone.now(), timeout=10)
    # The sweeper (what celery beat runs every few seconds) finds the expired lease.
    assert "retried: 1" in stack.manage("sweep")
    assert wait_until(lambda: Run.objects.get(pk=run_id).status == "succeeded", timeout=30), stack.log("worker")

    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.DONE
    assert execution.attempts == 2
    assert Refund.objects.filter(idempotency_key=execution.idempotency_key).count() == 1
    assert Refund.objects.count() == 1
    assert AuditEvent.objects.filter(event="action.executed", target_id=str(action.pk)).count() == 1
    assert AuditEvent.objects.filter(event="execution.recovered", target_id=str(action.pk)).count() == 1
    assert verify_chain().ok
