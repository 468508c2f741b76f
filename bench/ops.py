"""Benchmark: the operator pages at scale (PostgreSQL + Redis, one daphne process).

Data: 20 agents, 1,000,000 runs and 3,000,000 steps over 30 days, generated in SQL, plus the
hourly aggregates, latency histograms and calibration buckets those runs would have produced
(in production they are maintained as work happens; here one SQL pass builds them from the
generated rows), some halted runs, open breakers and pending actions near their SLA.
Prints p50/p95 over HTTP for the exceptions page and the per-agent page (24h, 7d, 30d).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/countersign_bench \
    REDIS_URL=redis://127.0.0.1:6379/14 SECRET_KEY=bench .venv/bin/python bench/ops.py
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from common import BIN, setup_django, spawn, summary, wait_port

RUNS = int(os.environ.get("BENCH_RUNS", "1000000"))
AGENTS = 20
PORT = 18767


def seed(agent_ids: list[int]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO agents_run (agent_id, input, status, priority, created_by_id, step_count, result, halt_reason,
                created_at, started_at, finished_at, tokens_used, cost, running_seconds, tokens_at_resume,
                cost_at_resume, prompt_version_id, step_token, outcome)
            SELECT (%(agents)s::bigint[])[1 + (g %% %(n)s)], '{}'::jsonb,
                   CASE WHEN g %% 1000 = 0 THEN 'halted' WHEN g %% 17 = 0 THEN 'failed' ELSE 'succeeded' END,
                   0, NULL, 2, 'ok', CASE WHEN g %% 1000 = 0 THEN 'step limit reached' ELSE '' END,
                   now() - ((g %% 43200) || ' minutes')::interval, now() - ((g %% 43200) || ' minutes')::interval,
                   now() - ((g %% 43200) || ' minutes')::interval + ((g %% 90) || ' seconds')::interval,
                   1500, 0.0012, 1.5, 0, 0, NULL, '',
                   CASE WHEN g %% 1000 = 0 THEN 'halted' WHEN g %% 17 = 0 THEN 'failed' ELSE 'done' END
            FROM generate_series(1, %(runs)s) AS g
            """,
            {"agents": agent_ids, "n": len(agent_ids), "runs": RUNS},
        )
        cursor.execute(
            """
            INSERT INTO agents_step (run_id, seq, kind, payload, latency_ms, tokens_in, tokens_out, cost, created_at)
            SELECT r.id, s.seq, (ARRAY['llm_call', 'proposal', 'final'])[s.seq], '{}'::jsonb, 12.5, 500, 100, 0.0004,
                   r.created_at
            FROM agents_run r CROSS JOIN generate_series(1, 3) AS s(seq)
            """
        )
        # The aggregates the services maintain, built once from the generated history.
        cursor.execute(
            """
            INSERT INTO ops_agenthourstat (agent_id, hour, runs_started, runs_done, runs_failed, runs_halted,
                runs_cancelled, actions_routed, routed_auto, routed_review, routed_deny, guard_refusals,
                decisions_approve, decisions_edit, decisions_reject, decisions_expired, escalations, executions,
                execution_failures, auto_executed, undos, tokens, cost, review_seconds)
            SELECT agent_id, date_trunc('hour', created_at), count(*),
                   count(*) FILTER (WHERE outcome = 'done'), count(*) FILTER (WHERE status = 'failed'),
                   count(*) FILTER (WHERE status = 'halted'), 0,
                   count(*), count(*) * 7 / 10, count(*) * 3 / 10, 0, 0,
                   count(*) * 2 / 10, count(*) / 20, count(*) / 20, 0, 0, count(*), count(*) / 50,
                   count(*) * 7 / 10, 0, sum(tokens_used), sum(cost), count(*) * 12.0
            FROM agents_run GROUP BY 1, 2
            """
        )
        cursor.execute(
            """
            INSERT INTO ops_latencybucket (agent_id, hour, metric, bucket, count)
            SELECT agent_id, date_trunc('hour', created_at), 'run_duration',
                   width_bucket(extract(epoch FROM finished_at - created_at), ARRAY[0.1, 0.25, 0.5, 1, 2, 5, 10, 30,
                   60, 120, 300, 600, 1800, 3600, 14400, 86400]::float8[]), count(*)
            FROM agents_run GROUP BY 1, 2, 3, 4
            """
        )
        cursor.execute(
            """
            INSERT INTO ops_calibrationbucket (agent_id, tool, day, bin, reviewed, agreed, edited, rejected,
                confidence_sum, brier_sum)
            SELECT a, 'issue_refund', (now() - (d || ' days')::interval)::date, b, 40, 4 * b, 2, 40 - 4 * b - 2,
                   40 * (b + 0.5) / 10.0, 40 * 0.2
            FROM unnest(%(agents)s::bigint[]) AS a, generate_series(0, 29) AS d, generate_series(1, 9) AS b
            """,
            {"agents": agent_ids},
        )
        cursor.execute("ANALYZE")


def main() -> None:
    os.environ["CELERY_QUEUE"] = f"bench-{uuid.uuid4().hex[:6]}"
    os.environ["BACKGROUND_TASKS"] = "celery"
    setup_django()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from agents.breakers import breaker_for
    from agents.configuration import agent_tool_configure
    from agents.models import BreakerState, CircuitBreaker
    from agents.services import agent_create, agent_permission_grant
    from audit.services import Actor

    system = Actor.system("bench")
    agents = []
    operator = get_user_model().objects.create_user(username="bench-operator")
    for i in range(AGENTS):
        agent = agent_create(slug=f"ops-{i:02d}", actor=system, name=f"Ops {i}", provider="scripted")
        agent_tool_configure(agent=agent, tool="issue_refund", actor=system, mode="review")
        agent_permission_grant(agent=agent, perm="operate_agent", to=operator, actor=system)
        agents.append(agent)
    started = time.perf_counter()
    seed([a.pk for a in agents])
    print(
        f"seeded {RUNS} runs, {3 * RUNS} steps and their aggregates in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    for agent in agents[:3]:
        breaker = breaker_for(agent, "issue_refund")
        CircuitBreaker.objects.filter(pk=breaker.pk).update(state=BreakerState.OPEN, consecutive_failures=5)
    client = Client()
    client.force_login(operator)
    session = client.cookies["sessionid"].value

    web = spawn(
        [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(PORT), "config.asgi:application"],
        dict(os.environ),
        Path("/tmp/bench-ops-web.log"),
    )
    results: dict[str, list[float]] = {}
    try:
        wait_port(PORT)
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", cookies={"sessionid": session}, timeout=60) as http:
            pages = {"exceptions": "/ops/"}
            for window in ("24h", "7d", "30d"):
                pages[f"agent page {window}"] = f"/ops/agents/ops-{{i:02d}}/?window={window}"
            for name, path in pages.items():
                timings = []
                for i in range(110):
                    url = path.format(i=i % AGENTS)
                    t0 = time.perf_counter()
                    response = http.get(url)
                    elapsed = (time.perf_counter() - t0) * 1000
                    assert response.status_code == 200, (url, response.status_code)
                    if i >= 10:
                        timings.append(elapsed)
                results[name] = timings
        exceptions_body = httpx.get(f"http://127.0.0.1:{PORT}/ops/", cookies={"sessionid": session}).text
    finally:
        web.terminate()
        web.wait(timeout=30)
    print(f"machine: {os.cpu_count()} cores; PostgreSQL + Redis on loopback; one daphne process")
    print(f"data: {RUNS} runs, {3 * RUNS} steps, {AGENTS} agents, 30 days")
    for name, timings in results.items():
        print(f"  {name:22s} {summary(timings)}")
    print(f"exceptions page lists {exceptions_body.count('data-kind=')} rows (halted runs capped at 50)")


if __name__ == "__main__":
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    main()
