"""Soak: N approved actions executed while the worker is SIGKILLed every few seconds.

Creates N pending refunds (one per bench order), approves them all, and lets a
`celery worker` (prefork, concurrency 2) execute them while this script kills
the worker's whole process group with SIGKILL every KILL_EVERY seconds and
starts a new one; the sweeper runs every 2 s as beat would. Counts from the
tool's own side-effect table (refunds) at the end: lost, duplicated, drain time.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/countersign_bench \
    REDIS_URL=redis://127.0.0.1:6379/14 SECRET_KEY=bench .venv/bin/python bench/soak.py
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from decimal import Decimal
from pathlib import Path

from common import BIN, setup_django, spawn

N = int(os.environ.get("SOAK_N", "2000"))
KILL_EVERY = float(os.environ.get("SOAK_KILL_EVERY", "4"))


def main() -> None:
    queue = f"soak-{uuid.uuid4().hex[:6]}"
    os.environ["CELERY_QUEUE"] = queue
    os.environ["BACKGROUND_TASKS"] = "celery"
    setup_django()
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.db.models import Count, Sum

    from agents.models import Agent, AgentTool
    from approvals.decisions import action_request_decide
    from approvals.execution import executions_sweep
    from approvals.models import ActionRequest, ActionStatus, Execution, ExecutionStatus
    from approvals.routing import route_tool_call
    from audit.models import AuditEvent
    from demo.models import Order, Refund

    agent = Agent.objects.get(slug="refund-triage")
    AgentTool.objects.filter(agent=agent, tool="issue_refund").update(timeout_seconds=1)
    reviewer = get_user_model().objects.get(username="reviewer")
    Order.objects.bulk_create(
        [Order(order_id=f"ORD-{5000 + i}", customer=f"Soak {i}", total=Decimal(1000)) for i in range(N)]
    )
    print(f"creating {N} pending refunds ...", flush=True)
    for start in range(0, N, 100):
        with transaction.atomic():
            for i in range(start, min(N, start + 100)):
                route_tool_call(
                    agent=agent,
                    run=None,
                    tool="issue_refund",
                    arguments={"order_id": f"ORD-{5000 + i}", "amount": 150, "reason": "soak"},
                    confidence=0.95,
                    rationale="soak",
                )
    pending = list(ActionRequest.objects.filter(status=ActionStatus.PENDING).order_by("pk"))
    assert len(pending) == N

    worker_env = {**os.environ, "DEMO_TOOL_DELAY_SECONDS": "0.02", "LEASE_SECONDS": "3"}
    log = Path("/tmp/bench-soak-worker.log")
    argv = [str(BIN / "celery"), "-A", "config", "worker", "-Q", queue, "-c", "2", "-l", "WARNING"]
    worker = spawn(argv, worker_env, log)
    time.sleep(3)

    print(f"approving {N} actions; killing the worker every {KILL_EVERY:g} s ...", flush=True)
    started = time.perf_counter()
    for action in pending:
        action_request_decide(action=action, actor=reviewer, verdict="approve")
    kills = 0
    last_kill = last_sweep = time.perf_counter()
    while True:
        now = time.perf_counter()
        done = Execution.objects.filter(status=ExecutionStatus.DONE).count()
        if done >= N:
            break
        if now - last_kill >= KILL_EVERY:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
            kills += 1
            worker = spawn(argv, worker_env, log)
            last_kill = now
        if now - last_sweep >= 2:
            executions_sweep()
            last_sweep = now
        if now - started > 1800:
            print("gave up after 30 minutes")
            break
        time.sleep(0.2)
    drain = time.perf_counter() - started
    worker.terminate()
    worker.wait(timeout=30)

    executed = ActionRequest.objects.filter(status=ActionStatus.EXECUTED).count()
    per_key = Refund.objects.values("idempotency_key").annotate(n=Count("id"))
    duplicated = sum(row["n"] - 1 for row in per_key if row["n"] > 1)
    refunded = Refund.objects.aggregate(total=Sum("amount"))["total"] or Decimal(0)
    expected_total = Decimal(150) * N
    books = Order.objects.filter(order_id__startswith="ORD-5", refunded_total__gt=Decimal(150)).count()
    executed_events = AuditEvent.objects.filter(event="action.executed").count()
    print(f"machine: {os.cpu_count()} cores; PostgreSQL + Redis on loopback; worker prefork concurrency 2")
    print(f"approved actions: {N}; worker SIGKILLs: {kills}")
    print(f"executed: {executed}; lost = {N - executed}")
    print(f"refund rows: {Refund.objects.count()}; duplicated = {duplicated}; orders refunded twice = {books}")
    print(f"refunded total {refunded} (expected {expected_total}); action.executed audit events {executed_events}")
    recovered = AuditEvent.objects.filter(event="execution.recovered").count()
    print(f"executions recovered after a kill (lease expired): {recovered}")
    print(f"time to drain: {drain:.1f} s")


if __name__ == "__main__":
    main()
