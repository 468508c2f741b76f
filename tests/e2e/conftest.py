"""A real stack for end-to-end tests: a daphne process and a Celery worker process on PostgreSQL + Redis."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection, connections
from playwright.sync_api import sync_playwright

from tests.conftest import PASSWORD

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> bool:
    """Poll until `predicate()` holds (True) or `timeout` passes (False): for work done by other processes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


async def off_loop(work: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Blocking (ORM) work from a test's event loop, in a thread that hands its database connection back.

    asyncio.to_thread would leave each executor thread holding a pooled connection after the test.
    """
    return await database_sync_to_async(work, thread_sensitive=False)(*args, **kwargs)


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


class Stack:
    """A daphne process, the live relay and Celery worker processes sharing the test database and Redis."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[tuple[subprocess.Popen, int, dict[str, str]]] = []
        self._log_files: list[Any] = []
        self.relay: subprocess.Popen | None = None

    def _spawn(self, name: str, argv: list[Any], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "a")  # noqa: SIM115  (closed in stop())
        self._log_files.append(log)
        # Own process group, so a test can SIGKILL a worker and all its children.
        proc = subprocess.Popen(
            argv, env={**self.env, **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def start_web(self) -> None:
        """daphne, and the relay that delivers its pushes (as `make stack` runs them)."""
        if self.relay is None:
            self.relay = self._spawn("relay", [BIN / "python", "manage.py", "live_relay"])
        # daphne drops a socket its application has not accepted within 5 s; a burst of hundreds of
        # sockets on this 2-core machine takes longer than that to get through (tests/e2e/test_sockets.py).
        argv = ["-b", "127.0.0.1", "-p", str(self.port), "--websocket_connect_timeout", "60", "config.asgi:application"]
        web = self._spawn("web", [BIN / "daphne", *argv])
        wait_for_port(self.port, web)

    def start_worker(self, concurrency: int = 2, **extra_env: str) -> subprocess.Popen:
        """A worker as deploy/Procfile starts one (no mingle, no gossip)."""
        argv = [BIN / "celery", "-A", "config", "worker", "-Q", self.env["CELERY_QUEUE"], "-c", str(concurrency)]
        argv += ["--without-mingle", "--without-gossip"]
        worker = self._spawn("worker", [*argv, "-l", "INFO"], extra_env)
        self.workers.append((worker, concurrency, extra_env))
        return worker

    def restart_exited_workers(self) -> int:
        """What a process supervisor does (systemd Restart=always): start again each worker that exited."""
        restarted = 0
        for worker, concurrency, extra_env in list(self.workers):
            if worker.poll() is not None:
                self.workers.remove((worker, concurrency, extra_env))
                self.start_worker(concurrency, **extra_env)
                restarted += 1
        return restarted

    def start_beat(self) -> subprocess.Popen:
        """celery beat with the production schedule (the sweepers every SWEEP_INTERVAL_SECONDS)."""
        schedule = self.logs / "beat-schedule"
        return self._spawn("beat", [BIN / "celery", "-A", "config", "beat", "-s", str(schedule), "-l", "INFO"])

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [BIN / "python", "manage.py", *args], env=self.env, capture_output=True, text=True, check=True
        )
        return done.stdout

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def stop(self) -> None:
        workers = {worker.pid for worker, _, _ in self.workers}
        for proc in self.procs:
            if proc.poll() is None:
                # The whole group: a prefork worker's children hold database connections too. The test is
                # over, so a worker is killed outright: its warm shutdown took 2-3 s of every test here, and
                # what a worker does when it dies is what tests/e2e/test_faults.py checks. The relay and the
                # web process stop as they do in production (the relay hands its lease back).
                os.killpg(proc.pid, signal.SIGKILL if proc.pid in workers else signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for f in self._log_files:
            f.close()
        _wait_for_other_sessions_to_leave()


# Every process a test starts names its database sessions so (libpq's PGAPPNAME): the test waits for
# those to end, not for its own process's pooled connections, which stay until it exits.
STARTED_BY_TESTS = "countersign-test-process"


def _wait_for_other_sessions_to_leave(timeout: float = 10) -> None:
    """PostgreSQL ends a dead client's backend a moment later; the test database is flushed or dropped after us."""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                [STARTED_BY_TESTS],
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.05)


@pytest.fixture
def stack_env(settings, collected_static) -> dict[str, str]:
    return _stack_env(settings, collected_static)


@pytest.fixture(scope="session")
def collected_static(tmp_path_factory) -> Path:
    """The static files, collected once for every stack of the run (they do not change during it)."""
    root = tmp_path_factory.mktemp("static")
    env = {**os.environ, "STATIC_ROOT": str(root), "SECRET_KEY": "collectstatic", "AUDIT_UNPROTECTED": "1"}
    subprocess.run([BIN / "python", "manage.py", "collectstatic", "--noinput", "-v0"], env=env, check=True)
    return root


def _stack_env(settings, static_root: Path) -> dict[str, str]:
    db = settings.DATABASES["default"]
    unique = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": os.environ["REDIS_URL"],
        "CELERY_QUEUE": f"e2e-{unique}",
        "PGAPPNAME": STARTED_BY_TESTS,
        "CHANNEL_PREFIX": f"e2e-{unique}",
        "BACKGROUND_TASKS": "celery",
        "SECRET_KEY": f"e2e-{unique}",
        "STATIC_ROOT": str(static_root),
        "DATABASE_POOL_MIN": "1",
        # The browser holds an inbox decision this long before sending it (Undo); short for the tests.
        "DECISION_UNDO_SECONDS": "2",
        "HTTPS": "0",  # a loopback stack: plain HTTP
        # Short, so a test can idle past it.
        "CHANNEL_REDIS_SOCKET_TIMEOUT": "4",
        # The same chain key and anchor file as this test's own process, so it verifies what they wrote.
        "AUDIT_CHAIN_KEY": settings.AUDIT_CHAIN_KEY,
        "AUDIT_ANCHOR_FILE": settings.AUDIT_ANCHOR_FILE,
    }
    return env


@pytest.fixture
def stack(stack_env, tmp_path) -> Iterator[Stack]:
    """daphne plus one Celery worker (concurrency 2)."""
    running = Stack(stack_env, tmp_path)
    try:
        running.start_worker()
        running.start_web()
        yield running
    finally:
        running.stop()


@pytest.fixture
def bare_stack(stack_env, tmp_path) -> Iterator[Stack]:
    """daphne only; the test starts and kills workers itself."""
    running = Stack(stack_env, tmp_path)
    try:
        running.start_web()
        yield running
    finally:
        running.stop()


def browser_session(base: str, username: str) -> httpx.Client:
    use_production_password(username)
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=10)
    page = client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = client.post(
        "/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/login/"},
    )
    assert response.status_code == 302, response.text
    return client


def use_production_password(username: str) -> None:
    """The daphne process uses the production password hashers, not the tests' fast one."""
    get_user_model().objects.filter(username=username).update(password=_production_hash())


@cache
def _production_hash() -> str:
    """PASSWORD hashed once per run (a million PBKDF2 rounds: a third of a second each time here); the server
    still checks it at every login, as it checks any password."""
    hasher = PBKDF2PasswordHasher()
    return hasher.encode(PASSWORD, hasher.salt())


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture
def browser(monkeypatch):

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM
    # calls are still plain synchronous ones (Django documents this switch for such tools).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()
        # ORM calls made while Playwright's loop runs open their own connection
        # (another context as far as Django is concerned): close it, or the
        # test database cannot be dropped at the end of the session.
        connections.close_all()


def log_in(browser, base: str, username: str, *, lands: str = "/", errors: list[str] | None = None):
    use_production_password(username)
    page = browser.new_context().new_page()
    if errors is not None:  # what the browser console reports as an error, and uncaught exceptions
        page.on("console", lambda msg: errors.append(f"{username}: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"{username}: {exc}"))
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{lands}")
    if page.locator("#live-status").count():  # a live page: wait until its websocket is open
        page.wait_for_selector("#live-status.on", timeout=10_000)
    return page


def start_refund(base: str, token: str, order: str, amount: int) -> int:
    """Start a refund-triage run over the API as the holder of `token`; its id."""
    response = httpx.post(
        f"{base}/api/v1/agents/refund-triage/runs",
        json={"input": {"ticket": "Arrived broken.", "order_id": order, "amount": amount}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def review_in_turn(base: str, token: str, decisions: list[dict[str, Any]]) -> threading.Thread:
    """A reviewer working through the inbox over the API: each call that arrives gets the next decision."""
    headers = {"Authorization": f"Bearer {token}"}
    pending: list[dict[str, Any]] = []

    def arrived() -> bool:
        page = httpx.get(f"{base}/api/v1/actions", params={"status": "pending"}, headers=headers, timeout=10)
        pending[:] = page.json()["items"]
        return bool(pending)

    def review() -> None:
        for decision in decisions:
            assert wait_until(arrived, timeout=60)
            answer = httpx.post(
                f"{base}/api/v1/actions/{pending[0]['id']}/decision", json=decision, headers=headers, timeout=10
            )
            assert answer.status_code == 200, answer.text

    reviewer = threading.Thread(target=review, daemon=True)
    reviewer.start()
    return reviewer
