"""Benchmark: the reviewer inbox at scale (PostgreSQL + Redis, one uvicorn process).

Data: 1,000,000 actions of which 100,000 pending, across 20 agents; 100 reviewers,
each reviewing 5 agents (so ~25 reviewers per agent). Prints:
- inbox page response time p50/p95 over HTTP, and SQL queries per page;
- decision POST p50/p95 over HTTP.
Push latency is `bench/scale.py push` (with the relay process the outbox needs).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/countersign_bench \
    REDIS_URL=redis://127.0.0.1:6379/14 SECRET_KEY=bench .venv/bin/python bench/inbox.py
"""

from __future__ import annotations

import os
import random
import re
import statistics
import time
import uuid
from pathlib import Path

from common import BIN, cpu_reference, percentile, setup_django, spawn, summary, wait_port

TOTAL = int(os.environ.get("BENCH_ACTIONS", "1000000"))
PENDING = int(os.environ.get("BENCH_PENDING", "100000"))
AGENTS = 20
REVIEWERS = 100
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
                result, error, created_at, decided_at, executed_at, risk_parts, risk_basis, findings,
                caller_executes, argument_order)
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
                   '{}'::jsonb, '', '[]'::jsonb, false, '[]'::jsonb
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
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from agents.configuration import agent_tool_configure
    from agents.models import Agent
    from agents.services import agent_create, agent_permission_grant
    from approvals.models import ActionRequest
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

    finally:
        web.terminate()
        web.wait(timeout=30)

    print(f"machine: {os.cpu_count()} cores; PostgreSQL + Redis on loopback; one uvicorn process")
    print(f"CPU: {cpu_reference()}")
    print(f"data: {TOTAL} actions, {PENDING} pending, {AGENTS} agents, {REVIEWERS} reviewers (5 agents each)")
    print(f"inbox page ({rows_shown} rows): {len(first_page)} queries; next page (keyset): {len(second_page)} queries")
    print(f"inbox GET over HTTP:        {summary(inbox_ms)}")
    print(f"inbox GET p95 per repetition:        {inbox_p95} ms (median {statistics.median(inbox_p95)})")
    print(
        f"baseline GET p95 per repetition:     {baseline_p95} ms (median {statistics.median(baseline_p95)})"
        " (/notifications/, same sessions, interleaved)"
    )
    print(f"decision POST over HTTP:    {summary(decide_ms)}")


if __name__ == "__main__":
    random.seed(1)
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    main()
