"""Benchmark: proposed actions routed per second, and commit -> websocket arrival latency.

Needs PostgreSQL and Redis. Creates (drops first) the database `countersign_bench`, starts a
daphne process on the Redis channel layer, connects one reviewer websocket, then:

1. routes N proposed tool calls (guard + policy + ActionRequest persisted + audit event +
   broadcast on commit) one transaction each, and prints the rate;
2. routes M more one at a time and measures, per action, the time from COMMIT to the
   websocket message arriving at the connected client (p50/p95).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/countersign_bench \
    REDIS_URL=redis://127.0.0.1:6379/14 SECRET_KEY=bench .venv/bin/python bench/routing.py
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("BACKGROUND_TASKS", "inline")
os.environ.setdefault("HTTPS", "0")  # a loopback benchmark: plain HTTP

N_THROUGHPUT = int(os.environ.get("BENCH_N", "1000"))
N_LATENCY = int(os.environ.get("BENCH_LATENCY_N", "300"))


def recreate_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    url = os.environ["DATABASE_URL"]
    assert url.startswith("postgres") and os.environ.get("REDIS_URL"), "needs DATABASE_URL and REDIS_URL"
    recreate_database(url)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import transaction
    from django.test import Client
    from websockets.sync.client import connect

    from agents.models import Agent
    from approvals.routing import route_tool_call
    from demo.seed import seed_all

    call_command("migrate", verbosity=0)
    seed_all(password="bench-password")
    agent = Agent.objects.get(slug="crm-cleanup")  # destructive: every call is routed to review
    reviewer = get_user_model().objects.get(username="reviewer")
    client = Client()
    client.force_login(reviewer)
    session = client.cookies["sessionid"].value

    port = 18765
    env = {**os.environ, "BACKGROUND_TASKS": "celery"}
    web = subprocess.Popen(
        [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        arrivals: dict[int, float] = {}
        received = threading.Event()
        expected = {"n": 0}
        ws = connect(
            f"ws://127.0.0.1:{port}/ws/inbox/",
            additional_headers={"Cookie": f"sessionid={session}", "Origin": f"http://127.0.0.1:{port}"},
        )

        def reader() -> None:
            try:
                for message in ws:
                    now = time.perf_counter()
                    match = re.search(r'id="action-(\d+)"', str(message))
                    if match:
                        arrivals[int(match.group(1))] = now
                        if len(arrivals) >= expected["n"]:
                            received.set()
            except Exception:
                pass

        threading.Thread(target=reader, daemon=True).start()
        time.sleep(0.5)

        def route_one(i: int) -> int:
            outcome = route_tool_call(
                agent=agent,
                run=None,
                tool="delete_contacts",
                arguments={"ids": [1 + i % 200]},
                confidence=0.9,
                rationale="bench",
            )
            assert outcome.action is not None
            return outcome.action.pk

        # 1. throughput
        expected["n"] = N_THROUGHPUT
        started = time.perf_counter()
        for i in range(N_THROUGHPUT):
            route_one(i)
        elapsed = time.perf_counter() - started
        received.wait(timeout=60)
        delivered = len(arrivals)

        # 2. latency: one action at a time, commit timestamp taken by the first on_commit callback
        arrivals.clear()
        received.clear()
        commits: dict[int, float] = {}
        latencies: list[float] = []
        for i in range(N_LATENCY):
            stamp: dict[str, float] = {}
            with transaction.atomic():
                transaction.on_commit(lambda s=stamp: s.__setitem__("t", time.perf_counter()))
                action_id = route_one(i)
            commits[action_id] = stamp["t"]
            deadline = time.perf_counter() + 5
            while action_id not in arrivals and time.perf_counter() < deadline:
                time.sleep(0.0005)
            if action_id in arrivals:
                latencies.append((arrivals[action_id] - commits[action_id]) * 1000)
        ws.close()
    finally:
        web.terminate()
        web.wait(timeout=10)

    print(f"machine: {os.cpu_count()} cores; PostgreSQL + Redis on loopback; one daphne process")
    print(f"routed (guard + policy + persisted + audited + broadcast), one transaction each: {N_THROUGHPUT}")
    rate = N_THROUGHPUT / elapsed
    print(f"  elapsed {elapsed:.2f} s -> {rate:.0f} actions/s; pushes delivered {delivered}/{N_THROUGHPUT}")
    print(f"commit -> websocket arrival, {len(latencies)}/{N_LATENCY} measured:")
    print(
        f"  p50 {statistics.median(latencies):.2f} ms  p95 {percentile(latencies, 0.95):.2f} ms  "
        f"max {max(latencies):.2f} ms"
    )


if __name__ == "__main__":
    main()
