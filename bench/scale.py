"""Scale-out figures, each beside a baseline measured in the same run, interleaved, repeated.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/countersign_bench REDIS_URL=redis://127.0.0.1:6379/14 \
    SECRET_KEY=bench AUDIT_CHAIN_KEY=bench AUDIT_ANCHOR_FILE=/tmp/bench-anchors.log \
    .venv/bin/python bench/scale.py routing|sockets|workers|push|decisions [--reps 3] [-n N]

routing  Routed actions per second in-process (guard, policy, the action row, its audit row, the
         push intent; one transaction each), at concurrency 1, 8 threads and 2 forked processes, against two raw-psycopg
         baselines: the issue's (an action row, an HMAC-chained audit row under the same advisory
         lock, and a Redis PUBLISH) and one sending every statement the product sends, by hand.
         Ratio = baseline rate / product rate (the cost).
sockets  The same routing with 0 and with 50 reviewer sockets open on a web process (the relay
         delivers every routed row to all 50), interleaved: the slowdown the sockets cause, and the CPU
         each process spends per action either way (web, relay, the socket clients, PostgreSQL, Redis).
workers  Agent runs per second through 1 and 2 Celery worker processes (one task at a time each, as
         production runs them), on the solo and on the prefork pool, interleaved; once draining a
         backlog of runs started before the clock (the workers alone on the machine), once with this
         process starting the runs while the clock runs; deadlocks counted by PostgreSQL, runs left
         unfinished, the CPU each run costs the workers, PostgreSQL and the process starting runs, the
         cores that makes busy, and what the workers' database sessions waited on (pg_stat_activity,
         sampled every 20 ms: their client, a lock, I/O such as the WAL flush of a commit, or running);
         beside them, two baselines: the same backlog of runs drained by 1 and 2 plain processes with
         no broker (the runs' own work, interleaved with the workers), and the machine's own ceiling,
         two CPU-bound Python processes against one. A rate runs from the first step to the last
         run's end, read from the rows (_rate).
push     Commit -> websocket arrival p95 with 300 reviewer sockets on one daphne (and the relay), beside
         a plain websocket relay fed by one Redis SUBSCRIBE; pushes lost and sequence gaps counted.
decisions  On the `make stack` topology (uvicorn --workers 2, 2 workers, the relay): the p95 of
         decision POSTs sent at 50/s (open loop), beside an authenticated GET of one action at 50/s,
         and the CPU one request costs each process on the machine (what binds). `--pools prefork,solo`
         alternates the decision batches between workers on each Celery pool.

Every figure prints its repetitions, the median and the spread (min-max). `DUMP_LATENCIES=<file>` appends
each request of `decisions` (method, send time, latency) to that file, to see when the slow ones came.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, ROOT, cpu_by_role, cpu_reference, percentile, setup_django, spawn, wait_port

os.environ.setdefault("BACKGROUND_TASKS", "inline")
os.environ.setdefault("LIVE_RELAY", "process")


def spread(values: list[float], digits: int = 1) -> str:
    """Median, min-max and every repetition; a ratio read against a target prints two decimals (digits=2), so a
    median of 1.77 is not shown as 1.8."""
    return (
        f"median {statistics.median(values):.{digits}f}  spread {min(values):.{digits}f}-{max(values):.{digits}f}"
        f"  runs {values}"
    )


def _stop(procs: list[Any]) -> None:
    """Stop the processes a measurement started: all asked at once, then each waited for."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=30)


# --- routing ------------------------------------------------------------------------------


def _in_threads(total: int, threads: int, work: Callable[[int, int], None]) -> float:
    """Run `work(thread, i)` `total` times split over `threads` threads; return the rate per second."""
    per = total // threads
    failures: list[BaseException] = []

    def loop(t: int) -> None:
        try:
            for i in range(per):
                work(t, i)
        except BaseException as error:  # a failed measurement must not pass for a fast one
            failures.append(error)
        finally:
            closing = getattr(work, "close", None)
            if closing is not None:
                closing()  # this thread's database connection goes back to the pool

    pool = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if failures:
        raise failures[0]
    return per * threads / (time.perf_counter() - started)


def _in_processes(total: int, procs: int, make: Callable[[], Callable[[int, int], None]]) -> float:
    """Run `total` calls split over `procs` forked processes, each with its own `make()` and connections.

    The clock starts once every process has built its side and stops when the last one is done, as in
    `_in_threads`. Production routes from several processes (web processes, workers), each one thread.
    """
    import multiprocessing

    from django.db import connections

    for alias in connections:  # each child opens its own: none may share the parent's sockets (or its pool's)
        connections[alias].close()
        if getattr(connections[alias], "pool", None) is not None:
            connections[alias].close_pool()
    context = multiprocessing.get_context("fork")
    ready = context.Barrier(procs + 1)
    done: Any = context.Queue()
    per = total // procs

    def child(p: int) -> None:
        error = ""
        try:
            work = make()
            ready.wait(timeout=120)
            for i in range(per):
                work(p, i)
            closing = getattr(work, "close", None)
            if closing is not None:
                closing()
        except BaseException as failure:  # a failed measurement must not pass for a fast one
            error = repr(failure) or "failed"
            ready.abort()
        done.put(error)

    children = [context.Process(target=child, args=(p,)) for p in range(procs)]
    for process in children:
        process.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"a routing process failed: {[done.get(timeout=30) for _ in children]}") from None
    started = time.perf_counter()
    errors = [done.get(timeout=600) for _ in children]
    elapsed = time.perf_counter() - started
    for process in children:
        process.join(timeout=30)
    if any(errors):
        raise RuntimeError(f"a routing process failed: {errors}")
    return per * procs / elapsed


def product_router() -> Callable[[int, int], None]:
    from django.db import connection

    from agents.models import Agent
    from approvals.routing import route_tool_call

    agent = Agent.objects.get(slug="crm-cleanup")  # destructive: every call waits for review

    def route(t: int, i: int) -> None:
        outcome = route_tool_call(
            agent=agent,
            run=None,
            tool="delete_contacts",
            arguments={"ids": [1 + (t * 7 + i) % 200]},
            confidence=0.9,
            rationale="bench",
        )
        assert outcome.action is not None

    def close() -> None:
        connection.close()  # the calling thread's connection, back to the pool

    route.close = close  # type: ignore[attr-defined]
    return route


BASELINE_DDL = """
CREATE TABLE IF NOT EXISTS bench_action (
    id bigserial PRIMARY KEY, agent_id int NOT NULL, tool text NOT NULL, arguments jsonb NOT NULL,
    confidence double precision NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS bench_audit (
    seq bigint PRIMARY KEY, event text NOT NULL, target text NOT NULL, payload jsonb NOT NULL,
    prev_hash text NOT NULL, hash text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS bench_push (
    id bigserial PRIMARY KEY, event text NOT NULL, ids jsonb NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS bench_queue (
    agent_id int NOT NULL, tier int NOT NULL, pending int NOT NULL, PRIMARY KEY (agent_id, tier));
CREATE TABLE IF NOT EXISTS bench_hour (
    agent_id int NOT NULL, hour timestamptz NOT NULL, routed int NOT NULL, routed_review int NOT NULL,
    PRIMARY KEY (agent_id, hour));
"""

# What the product reads and writes besides the action and audit rows, by hand (`--same-statements`): the
# agent's tool with whether its breaker is quiet, the demo tool's stake (a count over live contacts), the
# push intent (an outbox row), the queue count and the hourly counter (upserts). The product's tables are
# read, the writes go to tables shaped like its own.
SAME_READS = (
    (
        "SELECT t.id, t.mode, t.max_magnitude, NOT EXISTS (SELECT 1 FROM agents_circuitbreaker b WHERE"
        " b.agent_id = t.agent_id AND b.tool = t.tool AND NOT (b.state = 'closed' AND b.consecutive_failures = 0))"
        " FROM agents_agenttool t WHERE t.agent_id = %s AND t.tool = %s AND t.enabled"
    ),
    ("SELECT count(id), count(id) FILTER (WHERE id IN (%s)) FROM demo_contact WHERE deleted_at IS NULL"),  # one id
)


def baseline_router(*, same_statements: bool = False) -> Callable[[int, int], None]:
    """The same work by hand: action row, chained audit row under one advisory lock, PUBLISH.

    `same_statements`: also every other statement the product sends for a routed call (SAME_READS, the
    outbox row, the two counter upserts), in one transaction; the push intent is the outbox row, no PUBLISH.
    """
    import psycopg
    import redis

    from agents.models import Agent

    url = os.environ["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(BASELINE_DDL)
    agent_id = Agent.objects.get(slug="crm-cleanup").pk
    key = b"bench-chain-key"
    local = threading.local()
    publisher = redis.Redis.from_url(os.environ["REDIS_URL"])

    def route(t: int, i: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(url)
        ids = [1 + (t * 7 + i) % 200]
        with conn.transaction():
            if same_statements:
                tool = conn.execute(SAME_READS[0], [agent_id, "delete_contacts"]).fetchone()
                stake = conn.execute(SAME_READS[1], ids).fetchone()
                assert tool is not None and stake is not None
            row = conn.execute(
                "INSERT INTO bench_action (agent_id, tool, arguments, confidence, status)"
                " VALUES (%s, %s, %s, %s, 'pending') RETURNING id",
                [agent_id, "delete_contacts", json.dumps({"ids": ids}), 0.9],
            ).fetchone()
            if same_statements:
                conn.execute(
                    "INSERT INTO bench_push (event, ids, created_at) VALUES ('queue.changed', %s, now()),"
                    " ('action.opened', %s, now())",
                    [json.dumps({"agent_id": agent_id, "tier": 1}), json.dumps({"action_id": row[0]})],
                )
                conn.execute(
                    "INSERT INTO bench_queue (agent_id, tier, pending) VALUES (%s, 1, 1) ON CONFLICT (agent_id, tier)"
                    " DO UPDATE SET pending = bench_queue.pending + EXCLUDED.pending",
                    [agent_id],
                )
                conn.execute(
                    "INSERT INTO bench_hour (agent_id, hour, routed, routed_review) VALUES (%s, date_trunc('hour',"
                    " now()), 1, 1) ON CONFLICT (agent_id, hour) DO UPDATE SET routed = bench_hour.routed + 1,"
                    " routed_review = bench_hour.routed_review + 1",
                    [agent_id],
                )
            conn.execute("SELECT pg_advisory_xact_lock(4242)")
            head = conn.execute("SELECT seq, hash FROM bench_audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (head[0] + 1, head[1]) if head else (1, "")
            payload = json.dumps({"tool": "delete_contacts", "route": "review"}, sort_keys=True)
            digest = hmac.new(key, f"{seq}|{prev}|action.proposed|{row[0]}|{payload}".encode(), hashlib.sha256)
            conn.execute(
                "INSERT INTO bench_audit (seq, event, target, payload, prev_hash, hash)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [seq, "action.proposed", str(row[0]), payload, prev, digest.hexdigest()],
            )
        if not same_statements:
            publisher.publish("bench.inbox", f'<article id="action-{row[0]}"></article>')

    return route


PROCESSES = 2  # one per core here: routing's concurrency in production is processes, each one thread


def routing(reps: int, total: int) -> None:
    setup_django()
    makers: dict[str, Callable[[], Callable[[int, int], None]]] = {
        "product": product_router,
        "baseline": baseline_router,
        "same statements": lambda: baseline_router(same_statements=True),
    }
    sides = {name: make() for name, make in makers.items()}
    modes = ("1 thread", "8 threads", f"{PROCESSES} processes")
    results: dict[tuple[str, str], list[float]] = {}
    for rep in range(reps):
        for mode in modes:
            order = list(makers)
            if rep % 2:
                order.reverse()  # interleaved, alternating which goes first
            for name in order:
                if mode == "1 thread":
                    rate = _in_threads(total, 1, sides[name])
                elif mode == "8 threads":
                    rate = _in_threads(total, 8, sides[name])
                else:
                    rate = _in_processes(total, PROCESSES, makers[name])
                results.setdefault((name, mode), []).append(round(rate, 1))
    print(f"routing, in-process, {total} actions per measurement, {reps} repetitions, interleaved")
    print("  baseline: raw psycopg, the action row + the chained audit row + a Redis PUBLISH (the issue's)")
    print("  same statements: raw psycopg, every statement the product sends for the call (SAME_READS etc.)")
    print(f"  concurrency: 1 thread; 8 threads in one process; {PROCESSES} processes of one thread each (forked)")
    for mode in modes:
        prod = results[("product", mode)]
        print(f"  {mode:11s}: product          {spread(prod)} actions/s")
        for name in ("baseline", "same statements"):
            base = results[(name, mode)]
            ratios = [round(b / p, 2) for b, p in zip(base, prod, strict=True)]
            print(f"  {mode:11s}: {name:16s} {spread(base)} actions/s")
            print(f"  {mode:11s}: cost against {name} (its rate / product's) {spread(ratios, 2)}")
    for name in makers:
        for mode in modes[1:]:
            growth = [round(b / a, 2) for a, b in zip(results[(name, "1 thread")], results[(name, mode)], strict=True)]
            print(f"  {name} growth 1 thread -> {mode}: {spread(growth, 2)}x")


# --- sockets ------------------------------------------------------------------------------

SOCKET_CLIENT = r"""
import asyncio, re, sys, websockets
url, cookie, origin, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
marker = re.compile(r'data-group="([^"]+)" data-epoch="([^"]+)" data-seq="(\d+)"')
action = re.compile(r'<article[^>]* id="action-(\d+)"')
async def one(counts, gaps, rows):
    async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": origin}, max_size=None) as ws:
        last = {}
        counts.append(0)
        me = len(counts) - 1
        seen = set()
        rows.append(seen)
        async for frame in ws:
            seen.update(action.findall(frame))
            for group, epoch, seq in marker.findall(frame):
                seq = int(seq)
                if group in last and last[group] == (epoch, seq - 1) or group not in last:
                    pass
                else:
                    gaps.append((group, last[group], (epoch, seq)))
                last[group] = (epoch, seq)
                counts[me] += 1
async def main():
    counts, gaps, rows = [], [], []
    tasks = [asyncio.create_task(one(counts, gaps, rows)) for _ in range(n)]
    while len(counts) < n:
        await asyncio.sleep(0.05)
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print("rows", sum(len(r) for r in rows), "frames", sum(counts), "gaps", len(gaps), flush=True)
asyncio.run(main())
"""


def sockets(reps: int, total: int, n_sockets: int = 50) -> None:
    import subprocess

    setup_django()
    from django.contrib.auth import get_user_model
    from django.test import Client

    reviewer = get_user_model().objects.get(username="reviewer")
    client = Client()
    client.force_login(reviewer)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    logs = Path("/tmp/countersign-bench")
    logs.mkdir(exist_ok=True)
    port = 18766
    env = {**os.environ, "BACKGROUND_TASKS": "celery"}
    web = spawn(_web_argv(port), env, logs / "web.log")
    relay = spawn([str(BIN / "python"), "manage.py", "live_relay"], env, logs / "relay.log")
    wait_port(port)
    product = product_router()
    url, origin = f"ws://127.0.0.1:{port}/ws/inbox/", f"http://127.0.0.1:{port}"
    with_sockets: list[float] = []
    without: list[float] = []
    cpu: dict[str, list[float]] = {"open": [], "closed": []}
    # Every process's CPU per action, from the start of routing to 2 s after it (the relay's last frames).
    by_role: dict[str, dict[str, list[float]]] = {"open": {}, "closed": {}}

    def note_roles(mode: str, start: dict[str, float], roles: dict[str, int]) -> None:
        for role, seconds in cpu_by_role(roles).items():
            by_role[mode].setdefault(role, []).append(round((seconds - start[role]) * 1000 / total, 2))

    delivered: list[str] = []
    try:
        for rep in range(reps):
            for mode in ("open", "closed") if rep % 2 == 0 else ("closed", "open"):
                if mode == "closed":
                    roles = {"web": web.pid, "relay": relay.pid}
                    start, before = cpu_by_role(roles), time.process_time()
                    without.append(round(_in_threads(total, 1, product), 1))
                    cpu["closed"].append(round((time.process_time() - before) * 1000 / total, 2))
                    time.sleep(2.0)  # as with sockets open: the window ends 2 s after routing
                    note_roles("closed", start, roles)
                    continue
                clients = subprocess.Popen(
                    [str(BIN / "python"), "-c", SOCKET_CLIENT, url, cookie, origin, str(n_sockets)],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # its own session: cpu_by_role counts it as "clients"
                )
                assert clients.stdout is not None and clients.stdin is not None
                assert clients.stdout.readline().strip() == "open"
                roles = {"web": web.pid, "relay": relay.pid, "clients": clients.pid}
                start, before = cpu_by_role(roles), time.process_time()
                with_sockets.append(round(_in_threads(total, 1, product), 1))
                cpu["open"].append(round((time.process_time() - before) * 1000 / total, 2))
                time.sleep(2.0)  # let the relay finish delivering before counting
                note_roles("open", start, roles)
                clients.stdin.write("\n")
                clients.stdin.flush()
                delivered.append(clients.stdout.readline().strip())
                clients.wait(timeout=30)
    finally:
        _stop([web, relay])
    print(f"routing, in-process, concurrency 1, {total} actions per measurement, {reps} repetitions, interleaved")
    print(f"  0 reviewer sockets:  {spread(without)} actions/s")
    print(f"  {n_sockets} reviewer sockets: {spread(with_sockets)} actions/s")
    slow = [round(100 * (1 - w / o), 1) for w, o in zip(with_sockets, without, strict=True)]
    print(f"  slowdown: {spread(slow)} %")
    print(f"  routing process CPU per action, 0 sockets:  {spread(cpu['closed'])} ms")
    print(f"  routing process CPU per action, {n_sockets} sockets: {spread(cpu['open'])} ms")
    print("  CPU per action of every process, from routing's start to 2 s after it (ms):")
    for role in by_role["open"]:
        closed = spread(by_role["closed"][role], 2) if role in by_role["closed"] else "(not running)"
        print(f"    {role:15s} {n_sockets} sockets: {spread(by_role['open'][role], 2)}; 0 sockets: {closed}")
    print(
        f"  delivered to the {n_sockets} sockets per repetition: {delivered} "
        f"(rows: distinct action rows each socket saw, summed; expected {total} x {n_sockets})"
    )


# --- push latency ---------------------------------------------------------------------------

# Clients that stamp each frame's arrival: a frame names its action (`action-<id>`); each client
# prints "<id> <time.time()>" for the first frame of each id, and "gaps N" for its sequence numbers.
STAMPING_CLIENT = r"""
import asyncio, re, sys, time, websockets
url, cookie, origin, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
action = re.compile(r'id="action-(\d+)"')
marker = re.compile(r'data-group="([^"]+)" data-epoch="([^"]+)" data-seq="(\d+)"')
arrivals, gaps = {}, [0]
async def one(i, opened):
    headers = {"Cookie": cookie, "Origin": origin} if cookie else {}
    async with websockets.connect(url, additional_headers=headers, max_size=None, open_timeout=120) as ws:
        opened.append(i)
        last = {}
        async for frame in ws:
            now = time.time()
            for group, epoch, seq in marker.findall(frame):
                if group in last and last[group] != (epoch, int(seq) - 1):
                    gaps[0] += 1
                last[group] = (epoch, int(seq))
            for found in action.findall(frame):
                arrivals.setdefault((i, found), now)
async def main():
    opened = []
    for i in range(n):
        asyncio.create_task(one(i, opened))
    while len(opened) < n:
        await asyncio.sleep(0.05)
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for (i, found), at in arrivals.items():
        print(found, at)
    print("gaps", gaps[0], flush=True)
asyncio.run(main())
"""

# The baseline: the plainest websocket relay there is, one Redis SUBSCRIBE fanned out to every socket.
PLAIN_RELAY = r"""
import asyncio, sys, redis.asyncio as redis, websockets
port, url = int(sys.argv[1]), sys.argv[2]
clients = set()
async def handler(ws):
    clients.add(ws)
    try:
        await ws.wait_closed()
    finally:
        clients.discard(ws)
async def pump():
    pubsub = redis.Redis.from_url(url).pubsub()
    await pubsub.subscribe("bench.inbox")
    async for message in pubsub.listen():
        if message["type"] == "message":
            websockets.broadcast(clients, message["data"].decode())
async def main():
    async with websockets.serve(handler, "127.0.0.1", port, max_size=None):
        await pump()
asyncio.run(main())
"""


def _stamped(clients: Any, sent: dict[str, float]) -> tuple[list[float], int]:
    """Latencies (ms) of every (socket, action) arrival, and the sequence gaps the clients counted."""
    clients.stdin.write("\n")
    clients.stdin.flush()
    arrivals: dict[str, list[float]] = {}
    gaps = 0
    for line in clients.stdout:
        word, value = line.split()
        if word == "gaps":
            gaps = int(value)
            break
        arrivals.setdefault(word, []).append(float(value))
    clients.wait(timeout=60)
    latencies = [(at - sent[key]) * 1000 for key, ats in arrivals.items() if key in sent for at in ats]
    return latencies, gaps


def push(reps: int, total: int, n_sockets: int = 300) -> None:
    """Commit -> browser push with `n_sockets` open, beside a plain Redis-PUBLISH websocket relay."""
    import subprocess

    import redis

    setup_django()
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="reviewer"))
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    logs = Path("/tmp/countersign-bench")
    logs.mkdir(exist_ok=True)
    port, plain_port = 18768, 18769
    env = {**os.environ, "BACKGROUND_TASKS": "celery", "LIVE_RELAY": "process"}
    procs = [
        spawn(_web_argv(port), env, logs / "push-web.log"),
        spawn([str(BIN / "python"), "manage.py", "live_relay", "--poll", "0.5"], env, logs / "push-relay.log"),
        spawn(
            [str(BIN / "python"), "-c", PLAIN_RELAY, str(plain_port), os.environ["REDIS_URL"]], env, logs / "plain.log"
        ),
    ]
    route = product_router()
    publisher = redis.Redis.from_url(os.environ["REDIS_URL"])
    results: dict[str, list[float]] = {"product": [], "baseline": []}
    lost: dict[str, list[int]] = {"product": [], "baseline": []}
    gaps_seen = []
    memory: dict[str, float] = {}  # KiB per socket, each server's first opening (a process reuses what it freed)
    try:
        wait_port(port)
        wait_port(plain_port)
        time.sleep(2)
        counter = [0]
        for rep in range(reps):
            for name in ("baseline", "product") if rep % 2 == 0 else ("product", "baseline"):
                target = f"ws://127.0.0.1:{port}/ws/inbox/" if name == "product" else f"ws://127.0.0.1:{plain_port}/"
                server = procs[0] if name == "product" else procs[2]
                before = _rss_kib(server.pid)
                clients = subprocess.Popen(
                    [
                        str(BIN / "python"),
                        "-c",
                        STAMPING_CLIENT,
                        target,
                        cookie if name == "product" else "",
                        f"http://127.0.0.1:{port}",
                        str(n_sockets),
                    ],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert clients.stdout is not None and clients.stdin is not None
                assert clients.stdout.readline().strip() == "open"
                time.sleep(1.0)
                memory.setdefault(name, round((_rss_kib(server.pid) - before) / n_sockets, 1))
                sent: dict[str, float] = {}
                for _ in range(total):
                    counter[0] += 1
                    if name == "product":
                        stamp: dict[str, float] = {}
                        with transaction.atomic():
                            transaction.on_commit(lambda s=stamp: s.__setitem__("t", time.time()))
                            route(0, counter[0])
                        key = str(_last_action_id())
                        sent[key] = stamp["t"]
                    else:
                        key = str(10_000_000 + counter[0])  # digits, like an action id
                        sent[key] = time.time()
                        publisher.publish("bench.inbox", f'<article id="action-{key}"></article>')
                    time.sleep(0.1)  # one at a time: latency, not throughput
                time.sleep(3.0)
                latencies, gaps = _stamped(clients, sent)
                results[name].append(round(percentile(latencies, 0.95), 1))
                lost[name].append(total * n_sockets - len(latencies))  # every socket should see every push
                if name == "product":
                    gaps_seen.append(gaps)
    finally:
        _stop(procs)
    print(f"commit -> push, {n_sockets} sockets, {total} pushes one at a time per measurement, {reps} reps")
    print(f"  product p95:  {spread(results['product'])} ms; lost {lost['product']}; gaps {gaps_seen}")
    print(f"  baseline p95: {spread(results['baseline'])} ms; lost {lost['baseline']} (plain Redis-PUBLISH relay)")
    print(
        f"  server memory per open socket: product {memory['product']} KiB, baseline {memory['baseline']} KiB "
        "(resident set growth while each server first opened its sockets; one measurement each)"
    )


def _web_argv(port: int) -> list[str]:
    """One web process: `make stack`'s uvicorn (BENCH_SERVER=uvicorn, the default; deploy/Procfile's flags) or
    daphne (`make demo`)."""
    if os.environ.get("BENCH_SERVER", "uvicorn") == "daphne":
        return [
            str(BIN / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "--websocket_connect_timeout",
            "120",
            "config.asgi:application",
        ]
    return [
        str(BIN / "uvicorn"),
        "config.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        "websockets-sansio",
        "--lifespan",
        "off",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "5",
        "--ws-per-message-deflate",
        "false",
    ]


def _rss_kib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    return 0.0


def _last_action_id() -> int:
    from approvals.models import ActionRequest

    return int(ActionRequest.objects.order_by("-id").values_list("pk", flat=True)[0])


# --- workers ------------------------------------------------------------------------------


def _deadlocks() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


class _Waits:
    """What the database sessions of the workers were doing, sampled every 20 ms from pg_stat_activity while the
    clock runs: waiting on their client (the worker's Python, or the worker waiting for a core), on a lock, on
    I/O (the WAL flush of a commit), or running. The shares say whether two workers wait on each other."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _Waits:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psycopg

        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            me = conn.info.backend_pid
            while not self._stop.wait(0.02):
                rows = conn.execute(
                    "SELECT state, wait_event_type FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend' AND pid <> %s AND state <> 'idle'",
                    [me],
                ).fetchall()
                for state, wait in rows:
                    kind = "client" if state.startswith("idle in") or wait == "Client" else (wait or "running")
                    self.counts[kind] = self.counts.get(kind, 0) + 1

    def shares(self) -> dict[str, float]:
        total = sum(self.counts.values()) or 1
        return {kind: 100 * n / total for kind, n in self.counts.items()}


# What every benchmarked agent run is asked: the demo's refund triage on its auto path (no reviewer).
RUN_INPUT = {"ticket": "Arrived broken.", "order_id": "ORD-1003", "amount": 0.01}


def _runs_through(
    workers: int, runs: int, queue: str, logs: Path, pool: str, *, backlog: bool
) -> tuple[float, int, int, dict[str, float], dict[str, float]]:
    """Start `workers` worker processes (one task at a time each, on `pool`) and time `runs` agent runs through
    them; also the CPU ms per run of each role (workers, PostgreSQL, this starter), and what the workers'
    database sessions waited on (_Waits).

    `backlog`: the runs are started before the clock, and the workers, idle on another queue until then,
    are told to take them all at once (Celery's add_consumer): the workers' throughput, with nothing else on
    the machine. Otherwise this process starts the runs while the clock runs, sharing the two cores.
    """
    from celery import current_app

    from agents.models import Agent, Run
    from agents.services import run_start

    agent = Agent.objects.get(slug="refund-triage")
    listen = f"{queue}-idle" if backlog else queue
    names = [f"w{n}-{uuid.uuid4().hex[:4]}@bench" for n in range(workers)]
    procs = []
    for n in range(workers):
        log = logs / f"worker-{workers}-{n}.log"
        log.write_text("")
        argv = [str(BIN / "celery"), "-A", "config", "worker", "-Q", listen, "-P", pool, "-c", "1", "-n", names[n]]
        argv += ["--without-mingle", "--without-gossip"]  # as deploy/Procfile starts them
        procs.append((spawn([*argv, "-l", "INFO"], dict(os.environ), log), log))
    roles = {f"worker {n}": proc.pid for n, (proc, _) in enumerate(procs)}
    try:
        deadline = time.monotonic() + 60
        while not all(" ready." in log.read_text() for _, log in procs):
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not start")
            time.sleep(0.1)
        if not all(f"({pool})" in log.read_text() for _, log in procs):  # the banner names the pool in use
            raise RuntimeError(f"a worker is not on the {pool} pool: {logs}")
        deadlocks = _deadlocks()
        started_ids = []
        if backlog:
            started_ids = [run_start(agent=agent, input=RUN_INPUT, actor=None).pk for _ in range(runs)]
        before = cpu_by_role(roles)
        with _Waits() as waits:
            if backlog:
                replies = current_app.control.add_consumer(queue, destination=names, reply=True, timeout=10)
                if len(replies) != workers:
                    raise RuntimeError(f"not every worker took the queue: {replies}")
            else:
                for _ in range(runs):
                    started_ids.append(run_start(agent=agent, input=RUN_INPUT, actor=None).pk)
            pending = Run.objects.filter(pk__in=started_ids).exclude(status="succeeded")
            give_up = time.monotonic() + 600
            while pending.exists() and time.monotonic() < give_up:
                time.sleep(0.1)  # the rate comes from the rows' timestamps (_rate), not from this poll
        after = cpu_by_role(roles)
        used = {role: (after[role] - before[role]) * 1000 / runs for role in after}
        cpu = {
            "workers": sum(used[role] for role in roles),
            "postgres": used["postgres"],
            "starter (this process)": used["load generator"],
        }
        return _rate(started_ids), _deadlocks() - deadlocks, pending.count(), cpu, waits.shares()
    finally:
        _stop([proc for proc, _ in procs])


def _rate(run_ids: list[int]) -> float:
    """Runs per second from the first step any of them took to the last one's end (the rows' timestamps).

    Not from the moment the workers are told to take the queue: a worker notices a queue added under it only
    when its pending BRPOP on the idle queue returns (kombu's Redis transport, brpop_timeout 1 s), so that
    clock would add 0-1 s of waiting for the broker to the workers' throughput, more of it on the shorter
    two-worker measurement."""
    from django.db.models import Max, Min

    from agents.models import Run, Step

    first = Step.objects.filter(run_id__in=run_ids).aggregate(at=Min("created_at"))["at"]
    last = Run.objects.filter(pk__in=run_ids).aggregate(at=Max("finished_at"))["at"]
    if first is None or last is None or last <= first:
        raise RuntimeError("the runs did not finish: no rate")
    return len(run_ids) / (last - first).total_seconds()


# One plain process draining agent runs with no broker: each run's steps and its execution run one after the
# other in this process (BACKGROUND_TASKS=inline), through the same task functions the workers run, the
# connection handed back between runs as config.celery does between tasks.
_DRAIN = r"""
import sys
sys.path.insert(0, sys.argv[1])
import django
django.setup()
from celery import current_app
from django.db import close_old_connections
advance = current_app.tasks["agents.advance_run"]
ids = [int(i) for i in sys.argv[2].split(",")]
print("ready", flush=True)
sys.stdin.readline()
for run_id in ids:
    advance(run_id)
    close_old_connections()
"""


def _runs_in_processes(count: int, runs: int, queue: str) -> tuple[float, int]:
    """The workers' baseline: the same backlog of runs through `count` plain Python processes, no Celery.

    Returns the rate (_rate) and the runs left unfinished. The runs are started as for the workers, and their
    queued tasks are then taken off the broker, so no worker meets them later."""
    import subprocess

    import redis

    from agents.models import Agent, Run
    from agents.services import run_start

    agent = Agent.objects.get(slug="refund-triage")
    ids = [run_start(agent=agent, input=RUN_INPUT, actor=None).pk for _ in range(runs)]
    broker = redis.Redis.from_url(os.environ["REDIS_URL"])
    # The queue's lists, one per priority step (settings: sep ":"); nothing consumes the queue meanwhile.
    broker.delete(queue, *(f"{queue}:{step}" for step in range(10)))
    env = {**os.environ, "BACKGROUND_TASKS": "inline"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DRAIN, str(ROOT), ",".join(map(str, ids[n::count]))],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(count)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a draining process did not start")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            if proc.wait(timeout=600) != 0:
                raise RuntimeError("a draining process failed")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    left = Run.objects.filter(pk__in=ids).exclude(status="succeeded").count()
    return _rate(ids), left


# Pure Python work for about half a second: what one core does alone, and two cores side by side.
_SPIN = "s = 0\nfor i in range(15_000_000):\n    s += i"


def _machine_parallelism() -> float:
    """How much more two CPU-bound processes get done than one, on this machine now: the ceiling of any
    two-worker ratio (2.0 on two free cores; less where the cores are shared or the machine's speed moves)."""
    import subprocess

    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", _SPIN], check=True)
    one = time.perf_counter() - started
    started = time.perf_counter()
    pair = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(2)]
    for proc in pair:
        proc.wait()
    return 2 * one / (time.perf_counter() - started)


def workers(reps: int, total: int) -> None:
    """Runs/s through 1 and 2 solo workers and 1 and 2 prefork `-c 1` workers, interleaved: on a backlog of runs
    started before the clock (the workers alone), and with the runs started while the clock runs."""
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    os.environ["CELERY_QUEUE"] = queue
    os.environ["BACKGROUND_TASKS"] = "celery"
    setup_django()
    from django.conf import settings

    settings.BACKGROUND_TASKS = "celery"
    logs = Path("/tmp/countersign-bench")
    logs.mkdir(exist_ok=True)
    setups = [
        (mode, pool, count) for mode in ("backlog", "started") for pool in ("solo", "prefork") for count in (1, 2)
    ]
    rates: dict[tuple[str, str, int], list[float]] = {setup: [] for setup in setups}
    cpu: dict[tuple[str, str, int], list[dict[str, float]]] = {setup: [] for setup in setups}
    waited: dict[tuple[str, str, int], list[dict[str, float]]] = {setup: [] for setup in setups}
    deadlocks = stuck = 0
    ceiling: list[float] = []  # the machine's own two-process ratio, once per repetition
    plain: dict[int, list[float]] = {1: [], 2: []}  # the same runs in plain processes, no broker
    for rep in range(reps):
        ceiling.append(round(_machine_parallelism(), 2))
        order = [*setups, ("plain", "", 1), ("plain", "", 2)]
        for mode, pool, count in order if rep % 2 == 0 else reversed(order):
            if mode == "plain":
                rate, left = _runs_in_processes(count, total, queue)
                plain[count].append(round(rate, 2))
                stuck += left
                continue
            rate, dead, left, used, waits = _runs_through(count, total, queue, logs, pool, backlog=mode == "backlog")
            rates[(mode, pool, count)].append(round(rate, 2))
            cpu[(mode, pool, count)].append(used)
            waited[(mode, pool, count)].append(waits)
            deadlocks += dead
            stuck += left
    print(f"agent runs (auto path, 3 tasks each) through Celery workers, {total} runs per measurement, {reps} reps")
    print("  runs/s from the first step to the last run's end (the rows' timestamps; see _rate)")
    for setup in setups:
        mode, pool, count = setup
        shares = {role: statistics.median(rep[role] for rep in cpu[setup]) for role in cpu[setup][0]}
        parts = ", ".join(f"{role} {ms:.1f}" for role, ms in shares.items())
        print(f"  {mode:8s} {count} {pool} worker(s): {spread(rates[setup])} runs/s; CPU ms per run: {parts}")
        # The machine's cores in use: CPU per run (every role) times runs per second.
        busy = [sum(rep.values()) * rate / 1000 for rep, rate in zip(cpu[setup], rates[setup], strict=True)]
        kinds = sorted({kind for rep in waited[setup] for kind in rep})
        shares = ", ".join(
            f"{kind} {statistics.median(rep.get(kind, 0.0) for rep in waited[setup]):.1f}%" for kind in kinds
        )
        print(f"      cores busy (workers, PostgreSQL, starter): {spread([round(b, 2) for b in busy])}")
        print(f"      the workers' database sessions, sampled: {shares}")
    for mode in ("backlog", "started"):
        for pool in ("solo", "prefork"):
            one, two = rates[(mode, pool, 1)], rates[(mode, pool, 2)]
            ratio = [round(b / a, 2) for a, b in zip(one, two, strict=True)]
            print(f"  {mode}: 2 {pool} workers / 1: {spread(ratio, 2)}x")
        gain = [round(a / b, 2) for a, b in zip(rates[(mode, "solo", 1)], rates[(mode, "prefork", 1)], strict=True)]
        print(f"  {mode}: 1 solo worker / 1 prefork -c 1 worker: {spread(gain, 2)}x")
    print(f"  the same backlog in plain processes, no broker: 1 {spread(plain[1])} runs/s, 2 {spread(plain[2])} runs/s")
    ratio = [round(b / a, 2) for a, b in zip(plain[1], plain[2], strict=True)]
    print(f"  baseline: 2 plain processes / 1 (the runs' own work, no Celery): {spread(ratio, 2)}x")
    print(f"  machine baseline: 2 CPU-bound Python processes / 1 (pure Python, no I/O): {spread(ceiling, 2)}x")
    print(f"  deadlocks {deadlocks}; runs left unfinished {stuck}")


# --- decisions ----------------------------------------------------------------------------


FAILED_REQUESTS: list[str] = []  # requests not answered 200, printed with the figures (never dropped silently)


def _open_loop(base: str, token: str, rate: float, requests: list[tuple[str, str, dict | None]]) -> list[float]:
    """Send `requests` at a fixed `rate` (open loop: the schedule does not wait for answers); latencies in ms.

    A request not answered 200 (a 503 when the server is saturated, a reset connection) counts in
    FAILED_REQUESTS and as a latency of the whole time waited, so it can only make the p95 worse.
    """
    import asyncio

    import httpx

    async def run() -> list[float]:
        latencies: list[float] = []
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:

            async def one(method: str, path: str, body: dict | None) -> None:
                started = time.perf_counter()
                try:
                    response = await client.request(method, path, json=body)
                except httpx.TransportError as error:
                    FAILED_REQUESTS.append(f"{method} {path}: {type(error).__name__}")
                else:
                    if response.status_code != 200:  # 503 when the pool is exhausted: counted, never dropped
                        FAILED_REQUESTS.append(f"{method} {path}: {response.status_code}")
                latencies.append((time.perf_counter() - started) * 1000)
                if os.environ.get("DUMP_LATENCIES"):
                    with open(os.environ["DUMP_LATENCIES"], "a") as dump:
                        dump.write(f"{method} {started:.4f} {latencies[-1]:.1f}\n")

            tasks = []
            t0 = time.perf_counter()
            for i, (method, path, body) in enumerate(requests):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(method, path, body)))
            await asyncio.gather(*tasks)
        return latencies

    return asyncio.run(run())


def _decision_workers(pool: str, queue: str, env: dict[str, str], logs: Path) -> list[Any]:
    """The topology's two Celery workers (one task at a time each) on `pool`."""
    argv = [str(BIN / "celery"), "-A", "config", "worker", "-Q", queue, "-P", pool, "-c", "1", "-l", "WARNING"]
    argv += ["--without-mingle", "--without-gossip"]  # as deploy/Procfile starts them
    for n in range(2):
        (logs / f"decide-worker-{pool}-{n}.log").write_text("")  # this start's banner only
    return [spawn([*argv, "-n", f"d{n}@%h"], env, logs / f"decide-worker-{pool}-{n}.log") for n in range(2)]


def _check_pool(pool: str, logs: Path) -> None:
    """The workers' start-up banner names the pool they run: a comparison of pools must not compare one with itself."""
    for n in range(2):
        log = logs / f"decide-worker-{pool}-{n}.log"
        deadline = time.monotonic() + 60
        while "concurrency:" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)  # the banner is printed once the worker has imported everything
        if f"({pool})" not in log.read_text():
            raise RuntimeError(f"decision worker {n} is not on the {pool} pool")


def decisions(reps: int, total: int, rate: float = 50.0, pools: tuple[str, ...] = ("prefork",)) -> None:
    """Decision POST p95 at `rate`/s on the production topology, beside a trivial authenticated GET;
    with several `pools`, the decision batches alternate between workers on each pool."""
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    os.environ["CELERY_QUEUE"] = queue
    os.environ["BACKGROUND_TASKS"] = "celery"
    setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from accounts.services import api_token_issue

    settings.BACKGROUND_TASKS = "inline"  # the pending actions below are made here, not by workers
    route = product_router()
    from approvals.models import ActionRequest

    need = total * reps * len(pools) + 50 * (1 + reps * len(pools)) + 10  # the batches and their warm-ups
    for i in range(need):
        route(0, i)
    pending = list(ActionRequest.objects.filter(status="pending").order_by("id").values_list("pk", flat=True))
    token = api_token_issue(user=get_user_model().objects.get(username="reviewer"), actor=None)
    logs = Path("/tmp/countersign-bench")
    logs.mkdir(exist_ok=True)
    port = 18767
    env = {**os.environ, "BACKGROUND_TASKS": "celery", "LIVE_RELAY": "process"}
    web_argv = [str(BIN / "uvicorn"), "config.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    web_argv += ["--workers", "2", "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--lifespan", "off"]
    procs = [spawn(web_argv, env, logs / "web.log")]
    procs.append(spawn([str(BIN / "python"), "manage.py", "live_relay"], env, logs / "relay.log"))
    pool_now, workers = pools[0], _decision_workers(pools[0], queue, env, logs)
    sides = ["baseline", *[f"decision, {pool}" for pool in pools]]
    cpu: dict[str, list[dict[str, float]]] = {side: [] for side in sides}  # CPU ms per request, by role
    results: dict[str, list[float]] = {side: [] for side in sides}
    backlog: dict[str, list[float]] = {side: [] for side in sides}  # seconds until executions and pushes caught up
    base = f"http://127.0.0.1:{port}"
    try:
        wait_port(port)
        time.sleep(3)  # both web processes and the workers up
        _check_pool(pool_now, logs)
        _open_loop(base, token, rate, [("GET", f"/api/v1/actions/{pending[-1]}", None)] * 50)  # warm up
        cursor = _warm_up(base, token, rate, pending, 0)
        _drained()
        for rep in range(reps):
            for side in sides if rep % 2 == 0 else reversed(sides):
                if side == "baseline":
                    batch = [("GET", f"/api/v1/actions/{pending[-1]}", None)] * total
                else:
                    pool = side.split(", ")[1]
                    if pool != pool_now:
                        _stop(workers)
                        pool_now, workers = pool, _decision_workers(pool, queue, env, logs)
                        time.sleep(3)  # the workers up
                        _check_pool(pool, logs)
                        cursor = _warm_up(base, token, rate, pending, cursor)
                        _drained()
                    ids = pending[cursor : cursor + total]
                    cursor += total
                    batch = [("POST", f"/api/v1/actions/{i}/decision", {"verdict": "approve"}) for i in ids]
                roles = {"web": procs[0].pid, "relay": procs[1].pid, "worker 0": workers[0].pid}
                roles["worker 1"] = workers[1].pid
                before = cpu_by_role(roles)
                latencies = _open_loop(base, token, rate, batch)
                results[side].append(round(percentile(latencies, 0.95), 1))
                backlog[side].append(round(_drained(), 1))
                after = cpu_by_role(roles)  # the batch and what it left to do (executions, pushes)
                cpu[side].append({role: (after[role] - before[role]) * 1000 / len(batch) for role in after})
    finally:
        _stop([*procs, *workers])
    print(f"make-stack topology (uvicorn --workers 2, 2 workers -c 1, relay), {total} requests at {rate:.0f}/s")
    print(f"  {reps} reps, sides interleaved, order alternating")
    for side in sides:
        what = "authenticated GET of one action (baseline)" if side == "baseline" else f"decision POST ({side[10:]})"
        print(f"  {what} p95: {spread(results[side])} ms; backlog after each batch {backlog[side]} s")
    print(f"  requests not answered 200, all runs: {len(FAILED_REQUESTS)} {FAILED_REQUESTS[:5]}")
    # Where a request's CPU goes (every process on the machine, the batch and its backlog): what binds.
    for side in sides:
        shares = {role: statistics.median(rep[role] for rep in cpu[side]) for role in cpu[side][0]}
        parts = ", ".join(f"{role} {ms:.1f}" for role, ms in sorted(shares.items(), key=lambda kv: -kv[1]))
        print(f"  CPU ms per request, {side}, median over reps: total {sum(shares.values()):.1f}: {parts}")


def _warm_up(base: str, token: str, rate: float, pending: list[int], cursor: int, count: int = 50) -> int:
    """Decisions not measured, after a start: both web processes' and each worker's first requests and tasks
    (imports, pools, prepared statements) are not the steady state the figure is about."""
    ids = pending[cursor : cursor + count]
    _open_loop(base, token, rate, [("POST", f"/api/v1/actions/{i}/decision", {"verdict": "approve"}) for i in ids])
    return cursor + count


def _drained(timeout: float = 300.0) -> float:
    """Wait until every execution has finished and the outbox is empty, so the next batch starts on an idle
    system (a saturated batch's backlog would otherwise be measured as the next one's latency)."""
    from approvals.models import Execution, ExecutionStatus
    from live.models import Push

    started = time.perf_counter()
    busy = [ExecutionStatus.PENDING, ExecutionStatus.RUNNING]
    while time.perf_counter() - started < timeout:
        if not Execution.objects.filter(status__in=busy).exists() and not Push.objects.exists():
            break
        time.sleep(0.2)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["routing", "sockets", "workers", "decisions", "push"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("-n", type=int, default=400)
    parser.add_argument("--rate", type=float, default=50.0, help="decisions: requests per second")
    parser.add_argument("--pools", default="prefork", help="decisions: worker pools to alternate (prefork,solo)")
    parser.add_argument("--sockets", type=int, default=None, help="push: sockets (300); sockets: sockets (50)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; PostgreSQL and Redis on loopback; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"CPU: {cpu_reference()}")
    print(f"web server (push, sockets): {os.environ.get('BENCH_SERVER', 'uvicorn')}, one process")
    modes = {"routing": routing, "sockets": sockets, "workers": workers, "decisions": decisions, "push": push}
    if args.what == "decisions":
        decisions(args.reps, args.n, args.rate, tuple(args.pools.split(",")))
    elif args.what in ("push", "sockets") and args.sockets:
        modes[args.what](args.reps, args.n, args.sockets)
    else:
        modes[args.what](args.reps, args.n)


if __name__ == "__main__":
    main()
