"""Shared set-up for benchmark scripts: a fresh PostgreSQL database, Django, the demo data."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def recreate_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(*, fresh: bool = True) -> None:
    url = os.environ.get("DATABASE_URL", "")
    if not (url.startswith("postgres") and os.environ.get("REDIS_URL")):
        sys.exit("needs DATABASE_URL=postgres://... and REDIS_URL=redis://...")
    if fresh:
        recreate_database(url)
    os.environ.setdefault("STATIC_ROOT", "/tmp/countersign-bench-static")
    os.environ.setdefault("HTTPS", "0")  # a loopback benchmark: plain HTTP
    import django

    django.setup()
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)
    if fresh:
        from demo.seed import seed_all

        call_command("migrate", verbosity=0)
        seed_all(password="bench-password")


def cpu_reference() -> str:
    """How fast this machine runs plain Python. Machines of the same kind (2 cores) differ, and the product's
    Python-bound side moves more with that than a baseline bound by PostgreSQL: this line lets runs be compared."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
    except OSError:
        pass
    times = []
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(5_000_000):
            total += i
        times.append(time.perf_counter() - started)
    return f"{model}; 5M Python additions in {statistics.median(times) * 1000:.0f} ms (median of 3)"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values):.2f} ms  p95 {percentile(values, 0.95):.2f} ms  "
        f"max {max(values):.2f} ms  (n={len(values)})"
    )


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(port)


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_by_role(roles: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far (user + system, living processes) by each role, read from /proc.

    `roles` names the session id of each group of processes a benchmark spawned (spawn() starts a new
    session, so a server's forked workers and a Celery worker's pool child count with it). PostgreSQL's
    and Redis's processes count as "postgres" and "redis"; this process as "load generator".
    A process that exits between two readings takes its CPU with it, so read around a steady phase.
    """
    by_session = {sid: name for name, sid in roles.items()}
    used: dict[str, float] = dict.fromkeys([*roles, "postgres", "redis", "load generator"], 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        session, seconds = int(fields[3]), (int(fields[11]) + int(fields[12])) / TICKS
        if int(entry.name) == os.getpid():
            used["load generator"] += seconds
        elif session in by_session:
            used[by_session[session]] += seconds
        elif comm.startswith("postgres"):
            used["postgres"] += seconds
        elif comm.startswith("redis-server"):
            used["redis"] += seconds
    return used
