"""Benchmark: runtime overhead per step (model latency excluded) and runs/s through one worker.

1. In this process, with tasks captured instead of published, every task of N
   runs (refund-triage, auto path: model step, execution, final step) is timed
   one by one; the provider's own latency (the trace's model-call latency) is
   subtracted. Prints p50/p95 per step kind.
2. One `celery worker` process (concurrency 1) on PostgreSQL + Redis runs M
   runs end to end; prints runs per second.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/countersign_bench \
    REDIS_URL=redis://127.0.0.1:6379/14 SECRET_KEY=bench .venv/bin/python bench/runtime.py
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from common import BIN, setup_django, spawn, summary

N_OVERHEAD = int(os.environ.get("BENCH_N", "300"))
N_WORKER = int(os.environ.get("BENCH_WORKER_RUNS", "300"))


def main() -> None:
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    os.environ["CELERY_QUEUE"] = queue
    os.environ["BACKGROUND_TASKS"] = "celery"
    setup_django()
    from django.conf import settings

    import core.background as background
    from agents.models import Agent, Run, Step, StepKind
    from agents.services import run_start

    agent = Agent.objects.get(slug="refund-triage")
    ticket = {"ticket": "Arrived broken.", "order_id": "ORD-1003", "amount": 0.01}

    # 1. Per-step overhead, tasks captured and run here one at a time.
    captured: list[tuple[object, tuple]] = []
    real_enqueue = background.enqueue
    background.enqueue = lambda task, *args, **kw: captured.append((task, args))  # type: ignore[assignment]
    settings.BACKGROUND_TASKS = "celery"
    timings: dict[str, list[float]] = {"model step (route + auto-approve)": [], "execution": [], "final step": []}
    for _ in range(N_OVERHEAD):
        run = run_start(agent=agent, input=ticket, actor=None)
        while captured:
            task, args = captured.pop(0)
            started = time.perf_counter()
            task(*args)
            elapsed = (time.perf_counter() - started) * 1000
            if task.name == "approvals.execute_action":
                timings["execution"].append(elapsed)
                continue
            call = Step.objects.filter(run=run, kind=StepKind.LLM_CALL).order_by("-seq").first()
            provider_ms = call.latency_ms or 0.0 if call else 0.0
            final = Step.objects.filter(run=run, kind=StepKind.FINAL).exists()
            timings["final step" if final else "model step (route + auto-approve)"].append(elapsed - provider_ms)
    background.enqueue = real_enqueue  # type: ignore[assignment]
    assert Run.objects.filter(status="succeeded").count() == N_OVERHEAD

    # 2. Runs per second through one worker process.
    log = Path("/tmp/bench-runtime-worker.log")
    worker = spawn(
        [str(BIN / "celery"), "-A", "config", "worker", "-Q", queue, "-c", "1", "-l", "WARNING"],
        dict(os.environ),
        log,
    )
    time.sleep(3)
    before = Run.objects.filter(status="succeeded").count()
    started = time.perf_counter()
    for _ in range(N_WORKER):
        run_start(agent=agent, input=ticket, actor=None)
    while Run.objects.filter(status="succeeded").count() - before < N_WORKER:
        time.sleep(0.05)
        if time.perf_counter() - started > 600:
            raise TimeoutError("worker did not drain in 10 minutes")
    elapsed = time.perf_counter() - started
    worker.terminate()
    worker.wait(timeout=30)

    print(f"machine: {os.cpu_count()} cores; PostgreSQL + Redis on loopback; scripted provider")
    print(f"runtime overhead per step, provider latency excluded ({N_OVERHEAD} runs, 3 tasks each):")
    for name, values in timings.items():
        print(f"  {name:36s} {summary(values)}")
    print(f"one worker process (concurrency 1): {N_WORKER} runs in {elapsed:.2f} s -> {N_WORKER / elapsed:.1f} runs/s")


if __name__ == "__main__":
    main()
