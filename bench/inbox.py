"""Benchmark: the reviewer inbox at scale (PostgreSQL + Redis, one uvicorn process).

Data: 1,000,000 actions of which 100,000 pending, across 20 agents; 100 reviewers,
each reviewing 5 agents (so ~25 reviewers per agent). Prints:
- inbox page response time p50/p95 over HTTP, and SQL queries per page;
- decision POST p50/p95 over HTTP;
- websocket push latency p50/p95 from commit to arrival with 300 connected reviewer sockets.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/countersign_bench \
    REDIS_URL=redis://127.0.0.1:6379/14 SECRET_KEY=bench .venv/bin/python bench/inbox.py
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import statistics
import threading
import time
import uuid
from pathlib import Path

from common import BIN, percentile, setup_django, spawn, summary, wait_port

TOTAL = int(os.environ.get("BENCH_ACTIONS", "1000000"))
PENDING = int(os.environ.get("BENCH_PENDING", "100000"))
AGENTS = 20
REVIEWERS = 100
SOCKETS = int(os.environ.get("BENCH_SOCKETS", "300"))
PORT = 18766


def seed(agent_ids: list[int], reviewer_ids: list[int]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        # Generated in SQL: 1M rows in seconds. The first PENDING rows are pending,
        # the rest decided and executed long ago.
        cursor.execute(
            """
            INSERT INTO approvals_actionrequest (
                agent_id, run_id, tool, call_id, arguments, proposed_arguments, confidence, rationale, impact,
                magnitude, route, route_reason, risk_flags, risk_score, warn_at, due_at, warned_at, tier,
                required_approvals, on_timeout, claimed_by_id, claim_expires_at, submitted_by_id, status,
                result, error, created_at, decided_at, executed_at, risk_parts, risk_basis, findings)
            SELECT (%(agents)s::bigint[])[1 + (g %% %(n_agents)s)], NULL, 'issue_refund', '',
                   jsonb_build_object('order_id', 'ORD-1003', 'amount', (g %% 500)::text, 'reason', 'bench'),
                   jsonb_build_object('order_id', 'ORD-1003', 'amount', (g %% 500)::text, 'reason', 'bench'),
                   0.5 + (g %% 50) / 100.0, 'bench', 'financial', g %% 500, 'review', 'bench', '[]'::jsonb,
                   40 + (g %% 30), now() + ((g %% 120) || ' minutes')::interval,
                   now() + ((g %% 240) || ' minutes')::interval, NULL, 1, 1, 'reject', NULL, NULL, NULL,
                   CASE WHEN g <= %(pending)s THEN 'pending' ELSE 'executed' END,
                   NULL, '', now() - ((g %% 10000) || ' minutes')::interval,
                   CASE WHEN g <= %(pending)s THEN NULL ELSE now() END,
                   CASE WHEN g <= %(pending)s THEN NULL ELSE now() END,
                   '{}'::jsonb, '', '[]'::jsonb
            FROM generate_series(1, %(total)s) AS g
            """,
            {"agents": agent_ids, "n_agents": len(agent_ids), "pending": PENDING, "total": TOTAL},
        )
        cursor.execute(
            """
            INSERT INTO approvals_decision (action_id, reviewer_id, verdict, comment, arguments_before,
                                            arguments_after, created_at)
            SELECT id, (%(reviewers)s::bigint[])[1 + (id %% %(n)s)],
                   CASE WHEN id %% 10 = 0 THEN 'edit' ELSE 'approve' END, '', arguments, arguments, now()
            FROM approvals_actionrequest WHERE status = 'executed'
            """,
            {"reviewers": reviewer_ids, "n": len(reviewer_ids)},
        )
        cursor.execute("ANALYZE approvals_actionrequest; ANALYZE approvals_decision")


def main() -> None:
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    os.environ["CELERY_QUEUE"] = queue
    os.environ["BACKGROUND_TASKS"] = "celery"
    setup_django()
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from websockets.asyncio.client import connect

    from agents.configuration import agent_tool_configure
    from agents.models import Agent
    from agents.services import agent_create, agent_permission_grant
    from approvals.models import ActionRequest
    from approvals.routing import route_tool_call
    from audit.services import Actor

    system = Actor.system("bench")
    agents = []
    for i in range(AGENTS):
        agent = agent_create(slug=f"bench-{i:02d}", actor=system, name=f"Bench {i}", provider="scripted")
        agent_tool_configure(agent=agent, tool="issue_refund", actor=system, mode="review")
        agents.append(agent)
    User = get_user_model()
    reviewers = [User.objects.create_user(username=f"rev{i:03d}") for i in range(REVIEWERS)]
    reviewable: dict[int, list[Agent]] = {}
    for i, reviewer in enumerate(reviewers):
        mine = [agents[(i + k * 4) % AGENTS] for k in range(5)]
        reviewable[reviewer.pk] = mine
        for agent in mine:
            agent_permission_grant(agent=agent, perm="review_agent", to=reviewer, actor=system)
    started = time.perf_counter()
    seed([a.pk for a in agents], [r.pk for r in reviewers])
    print(f"seeded {TOTAL} actions ({PENDING} pending) in {time.perf_counter() - started:.1f} s", flush=True)

    sessions = {}
    for reviewer in reviewers:
        client = Client()
        client.force_login(reviewer)
        sessions[reviewer.pk] = client.cookies["sessionid"].value

    # Queries per page, in process (same code path as over HTTP).
    client = Client()
    client.force_login(reviewers[0])
    client.get("/")
    with CaptureQueriesContext(connection) as first_page:
        response = client.get("/")
    after = re.search(r'after=([0-9_.]+)" id="next-page"', response.content.decode())
    with CaptureQueriesContext(connection) as second_page:
        client.get(f"/?after={after.group(1)}" if after else "/")
    rows_shown = response.content.decode().count('class="row ')

    log = Path("/tmp/bench-inbox-web.log")
    # One web process, as `make stack` runs each of its two (uvicorn).
    argv = [str(BIN / "uvicorn"), "config.asgi:application", "--host", "127.0.0.1", "--port", str(PORT)]
    argv += ["--workers", "1", "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio"]
    argv += ["--lifespan", "off", "--no-access-log", "--timeout-graceful-shutdown", "5"]
    web = spawn(argv, dict(os.environ), log)
    try:
        wait_port(PORT)
        import httpx

        base = f"http://127.0.0.1:{PORT}"
        inbox_p95: list[float] = []
        baseline_p95: list[float] = []
        inbox_ms: list[float] = []
        with httpx.Client(base_url=base, timeout=30) as http:

            def timed(path: str, n: int) -> list[float]:
                out = []
                for i in range(n):
                    reviewer = reviewers[i % REVIEWERS]
                    t0 = time.perf_counter()
                    r = http.get(path, cookies={"sessionid": sessions[reviewer.pk]})
                    out.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200
                return out

            timed("/", 20)  # warm-up
            timed("/notifications/", 20)
            # Interleaved A/B: the inbox, and a trivial authenticated page (the user's notices) as baseline.
            for rep in range(3):
                for name in ("inbox", "baseline") if rep % 2 == 0 else ("baseline", "inbox"):
                    got = timed("/" if name == "inbox" else "/notifications/", 200)
                    (inbox_p95 if name == "inbox" else baseline_p95).append(round(percentile(got, 0.95), 1))
                    if name == "inbox":
                        inbox_ms += got

            # Decision POSTs: each reviewer approves a pending action of one of its agents.
            decide_ms: list[float] = []
            csrf = "benchcsrftoken0123456789abcdef01"  # 32 characters, as Django expects
            for i in range(200):
                reviewer = reviewers[i % REVIEWERS]
                agent = reviewable[reviewer.pk][i % 5]
                action_id = (
                    ActionRequest.objects.filter(agent=agent, status="pending")
                    .order_by("-id")
                    .values_list("pk", flat=True)[i // 20]
                )
                t0 = time.perf_counter()
                r = http.post(
                    f"/actions/{action_id}/decide",
                    data={"verdict": "approve", "csrfmiddlewaretoken": csrf},
                    cookies={"sessionid": sessions[reviewer.pk], "csrftoken": csrf},
                    headers={"Referer": f"{base}/"},
                )
                decide_ms.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 302, (r.status_code, r.text[:300])

        # Websocket push latency with SOCKETS connected reviewer sockets.
        arrivals: dict[int, list[float]] = {}
        ready = threading.Event()
        stop = threading.Event()

        per_socket: dict[int, int] = {}
        errors: dict[int, str] = {}

        async def listen(session: str, idx: int) -> None:
            try:
                await listen_one(session, idx)
            except Exception as exc:  # reported below, not swallowed by gather()
                errors[idx] = repr(exc)

        async def listen_one(session: str, idx: int) -> None:
            async with connect(
                f"ws://127.0.0.1:{PORT}/ws/inbox/",
                additional_headers={"Cookie": f"sessionid={session}", "Origin": base},
                open_timeout=30,
            ) as ws:
                counter["open"] += 1
                if counter["open"] == SOCKETS:
                    ready.set()
                while not stop.is_set():
                    try:
                        message = await asyncio.wait_for(ws.recv(), timeout=0.5)
                    except TimeoutError:
                        continue
                    now = time.perf_counter()
                    match = re.search(r'id="action-(\d+)"', str(message))
                    if match and "afterbegin" in str(message):
                        arrivals.setdefault(int(match.group(1)), []).append(now)
                        per_socket[idx] = per_socket.get(idx, 0) + 1

        counter = {"open": 0}

        def run_sockets() -> None:
            async def all_sockets() -> None:
                tasks = []
                for i in range(SOCKETS):
                    tasks.append(asyncio.create_task(listen(sessions[reviewers[i % REVIEWERS].pk], i)))
                    await asyncio.sleep(0.005)
                await asyncio.gather(*tasks, return_exceptions=True)

            asyncio.run(all_sockets())

        thread = threading.Thread(target=run_sockets, daemon=True)
        thread.start()
        assert ready.wait(120), f"only {counter['open']} sockets opened"
        time.sleep(1)
        commits: dict[int, float] = {}
        for i in range(100):
            agent = agents[i % AGENTS]
            stamp: dict[str, float] = {}
            with transaction.atomic():
                transaction.on_commit(lambda s=stamp: s.__setitem__("t", time.perf_counter()))
                outcome = route_tool_call(
                    agent=agent,
                    run=None,
                    tool="issue_refund",
                    arguments={"order_id": "ORD-1003", "amount": 150, "reason": "push"},
                    confidence=0.9,
                    rationale="bench",
                )
            commits[outcome.action.pk] = stamp["t"]
            time.sleep(0.05)
        time.sleep(3)
        stop.set()
        thread.join(timeout=10)
        push_ms = [
            (arrival - commits[action_id]) * 1000
            for action_id, times in arrivals.items()
            if action_id in commits
            for arrival in times
        ]
        per_action = {
            action_id: sum(1 for i in range(SOCKETS) if agents[k % AGENTS] in reviewable[reviewers[i % REVIEWERS].pk])
            for k, action_id in enumerate(commits)
        }
        expected = sum(per_action.values())
        short = {a: (len(arrivals.get(a, [])), n) for a, n in per_action.items() if len(arrivals.get(a, [])) != n}
    finally:
        web.terminate()
        web.wait(timeout=30)

    print(f"machine: {os.cpu_count()} cores; PostgreSQL + Redis on loopback; one uvicorn process")
    print(f"data: {TOTAL} actions, {PENDING} pending, {AGENTS} agents, {REVIEWERS} reviewers (5 agents each)")
    print(f"inbox page ({rows_shown} rows): {len(first_page)} queries; next page (keyset): {len(second_page)} queries")
    print(f"inbox GET over HTTP:        {summary(inbox_ms)}")
    print(f"inbox GET p95 per repetition:        {inbox_p95} ms (median {statistics.median(inbox_p95)})")
    print(
        f"baseline GET p95 per repetition:     {baseline_p95} ms (median {statistics.median(baseline_p95)})"
        " (/notifications/, same sessions, interleaved)"
    )
    print(f"decision POST over HTTP:    {summary(decide_ms)}")
    print(f"push, commit -> arrival, {SOCKETS} sockets: {summary(push_ms)}; delivered {len(push_ms)}/{expected}")
    silent = [i for i in range(SOCKETS) if i not in per_socket]
    if silent or errors:
        print(f"  sockets that received nothing: {silent}; socket errors: {errors}")
    if short:
        print(f"  actions not delivered to every socket (received, expected): {short}")


if __name__ == "__main__":
    random.seed(1)
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    main()
