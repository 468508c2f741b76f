"""A real stack for end-to-end tests: a daphne process and a Celery worker process on PostgreSQL + Redis."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.conftest import PASSWORD

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture
def stack(settings, tmp_path) -> Iterator[dict]:
    db = settings.DATABASES["default"]
    unique = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": os.environ["REDIS_URL"],
        "CELERY_QUEUE": f"e2e-{unique}",
        "CHANNEL_PREFIX": f"e2e-{unique}",
        "BACKGROUND_TASKS": "celery",
        "SECRET_KEY": f"e2e-{unique}",
        "STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_POOL_MIN": "1",
    }
    subprocess.run([BIN / "python", "manage.py", "collectstatic", "--noinput", "-v0"], env=env, check=True)
    port = free_port()
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("worker", "web")}  # noqa: SIM115
    worker = subprocess.Popen(
        [BIN / "celery", "-A", "config", "worker", "-Q", env["CELERY_QUEUE"], "-c", "2", "-l", "INFO"],
        env=env,
        stdout=logs["worker"],
        stderr=subprocess.STDOUT,
    )
    web = subprocess.Popen(
        [BIN / "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        env=env,
        stdout=logs["web"],
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, web)
        yield {"base": f"http://127.0.0.1:{port}", "port": port, "logs": tmp_path}
    finally:
        for proc in (web, worker):
            proc.terminate()
        for proc in (web, worker):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for f in logs.values():
            f.close()


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
    hasher = PBKDF2PasswordHasher()
    get_user_model().objects.filter(username=username).update(password=hasher.encode(PASSWORD, hasher.salt()))
