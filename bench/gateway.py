"""What the MCP gateway adds to an auto-approved tool call, beside calling the upstream directly.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/countersign_bench REDIS_URL=redis://127.0.0.1:6379/14 \
    SECRET_KEY=bench AUDIT_CHAIN_KEY=bench AUDIT_ANCHOR_FILE=/tmp/bench-anchors.log \
    .venv/bin/python bench/gateway.py [--reps 3] [-n 100]

The upstream is an MCP server over streamable HTTP (bench/echo_mcp_server.py, one tool that answers at
once). The product: an MCP client calls `echo__echo` on the agent's endpoint (/mcp/agents/refund-triage/,
one uvicorn web process as `make stack` runs it, and one Celery worker); the call is guarded, routed auto,
audited, executed by the worker against the upstream, and answered. The baseline: the same client calls
`echo` on the upstream directly. Each thread keeps one MCP session open on each side, as an agent does.
Batches alternate (product, baseline) at concurrency 1 and 8; every repetition prints p50 and p95 of each
side, then the median over repetitions and the spread (min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, ROOT, percentile, setup_django, spawn, wait_port


def _client(url: str, token: str | None) -> Any:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(url, http_client=create_mcp_http_client(headers=headers)))


def _batch(url: str, token: str | None, tool: str, total: int, threads: int) -> list[float]:
    """`total` calls split over `threads` threads, each on its own open session; per-call latency in ms."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def work(count: int, offset: int) -> None:
        async def go() -> None:
            async with _client(url, token) as client:
                for i in range(count):
                    started = time.perf_counter()
                    # A distinct text per call: identical calls would join one another at the gateway.
                    result = await client.call_tool(tool, {"text": f"call {offset + i} {time.time_ns()}"})
                    elapsed = (time.perf_counter() - started) * 1000
                    if result.is_error:
                        errors.append(str(result.content))
                    with lock:
                        latencies.append(elapsed)

        asyncio.run(go())

    per = total // threads
    workers = [threading.Thread(target=work, args=(per, k * per)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise SystemExit(f"{len(errors)} calls failed, e.g. {errors[0]}")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("-n", type=int, default=96)
    options = parser.parse_args()

    upstream_port, web_port = 18931, 18932
    os.environ["UPSTREAM_STDIO_COMMANDS"] = ""
    setup_django(fresh=True)
    from django.contrib.auth import get_user_model

    from accounts.services import api_token_issue
    from agents import upstream
    from agents.models import Agent, AgentTool, UpstreamTool

    logs = Path("/tmp/countersign-bench-gateway")
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "BACKGROUND_TASKS": "celery", "LIVE_RELAY": "inline"}
    procs = [
        spawn([str(BIN / "python"), str(ROOT / "bench/echo_mcp_server.py"), str(upstream_port)], env, logs / "up.log")
    ]
    try:
        wait_port(upstream_port)
        upstream_url = f"http://127.0.0.1:{upstream_port}/mcp"
        admin = get_user_model().objects.get(username="admin")
        source = upstream.source_create(actor=admin, slug="echo", kind="mcp_http", url=upstream_url)
        report = upstream.source_sync(source=source, actor=admin)
        assert not report.error, report.error
        tool = UpstreamTool.objects.get(name="echo__echo")
        upstream.upstream_tool_approve(tool=tool, actor=admin, definition_hash_seen=tool.definition_hash)
        AgentTool.objects.create(agent=Agent.objects.get(slug="refund-triage"), tool="echo__echo", mode="auto")
        token = api_token_issue(user=get_user_model().objects.get(username="operator"), actor=None)

        web = [
            str(BIN / "uvicorn"),
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(web_port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--lifespan",
            "off",
            "--no-access-log",
        ]
        procs.append(spawn(web, env, logs / "web.log"))
        worker = [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--concurrency",
            "2",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ]
        procs.append(spawn(worker, env, logs / "worker.log"))
        wait_port(web_port)
        gateway_url = f"http://127.0.0.1:{web_port}/mcp/agents/refund-triage/"
        _batch(gateway_url, token, "echo__echo", 8, 2)  # warm both sides up (imports, pools, the worker)
        _batch(upstream_url, None, "echo", 8, 2)

        print(f"gateway vs direct, {options.n} calls per batch, {options.reps} repetitions, interleaved")
        for threads in (1, 8):
            product: list[tuple[float, float]] = []
            baseline: list[tuple[float, float]] = []
            for rep in range(options.reps):
                p = _batch(gateway_url, token, "echo__echo", options.n, threads)
                b = _batch(upstream_url, None, "echo", options.n, threads)
                product.append((statistics.median(p), percentile(p, 0.95)))
                baseline.append((statistics.median(b), percentile(b, 0.95)))
                print(
                    f"  conc {threads} rep {rep + 1}: gateway p50 {product[-1][0]:.1f} ms p95 {product[-1][1]:.1f} ms"
                    f" | direct p50 {baseline[-1][0]:.1f} ms p95 {baseline[-1][1]:.1f} ms"
                )
            for label, side in (("gateway", product), ("direct", baseline)):
                p50s, p95s = [s[0] for s in side], [s[1] for s in side]
                print(
                    f"conc {threads} {label:8s}: p50 {statistics.median(p50s):.1f} ms ({min(p50s):.1f}-{max(p50s):.1f})"
                    f"  p95 {statistics.median(p95s):.1f} ms ({min(p95s):.1f}-{max(p95s):.1f})"
                )
            added = [p[0] - b[0] for p, b in zip(product, baseline, strict=True)]
            print(
                f"conc {threads} added by the gateway at p50: {statistics.median(added):.1f} ms "
                f"({min(added):.1f}-{max(added):.1f})"
            )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except Exception:
                proc.kill()


if __name__ == "__main__":
    main()
