"""The whole loop on production components: PostgreSQL, Redis, a Celery worker process, daphne.

Nothing is mocked: the test talks HTTP and websocket to a daphne process, a
separate `celery worker` process runs the agent and executes the approved
action, and both meet through Redis (broker and channel layer).
"""

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
from websockets.sync.client import connect as ws_connect

from accounts.services import api_token_issue
from agents.models import Run
from approvals.models import ActionRequest, Execution
from audit.selectors import verify_chain
from demo.models import Refund
from tests.conftest import PASSWORD, needs_postgres, needs_redis, user

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]

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


def test_run_reaches_the_live_inbox_and_the_approved_action_runs_once(demo, stack):
    base, port = stack["base"], stack["port"]
    operator_token = api_token_issue(user=user("operator"), actor=None)
    reviewer_token = api_token_issue(user=user("reviewer"), actor=None)
    # The daphne process uses the production password hashers, not the tests' fast one.
    get_user_model().objects.filter(username="reviewer2").update(
        password=PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    )
    reviewer2_browser = browser_session(base, "reviewer2")
    cookie = f"sessionid={reviewer2_browser.cookies['sessionid']}"
    api = httpx.Client(base_url=base, timeout=10)

    with ws_connect(
        f"ws://127.0.0.1:{port}/ws/inbox/",
        additional_headers={"Cookie": cookie, "Origin": base},
        open_timeout=10,
    ) as socket_:
        # crm-cleanup is not reviewer2's: its action must not arrive on this socket.
        crm = api.post(
            "/api/v1/agents/crm-cleanup/runs",
            json={"input": {"request": "dupes", "contact_ids": [1, 2]}},
            headers={"Authorization": f"Bearer {operator_token}"},
        )
        assert crm.status_code == 201
        started = time.monotonic()
        created = api.post(
            "/api/v1/agents/refund-triage/runs",
            json={"input": {"ticket": "Arrived broken.", "order_id": "ORD-1005", "amount": 180}},
            headers={"Authorization": f"Bearer {operator_token}"},
        )
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        message = socket_.recv(timeout=15)
        arrived_after = time.monotonic() - started
        action = ActionRequest.objects.get(run_id=run_id)
        assert f'id="action-{action.pk}"' in message
        assert arrived_after < 5, arrived_after

        # The inbox page over HTTP agrees with what was pushed.
        page = reviewer2_browser.get("/")
        assert f'id="action-{action.pk}"' in page.text
        crm_action = ActionRequest.objects.get(agent__slug="crm-cleanup")
        assert f'id="action-{crm_action.pk}"' not in page.text

        decided = api.post(
            f"/api/v1/actions/{action.pk}/decision",
            json={"verdict": "approve"},
            headers={"Authorization": f"Bearer {reviewer_token}"},
        )
        assert decided.status_code == 200, decided.text
        removal = socket_.recv(timeout=15)
        assert f'id="action-{action.pk}" hx-swap-oob="delete"' in removal

        again = api.post(
            f"/api/v1/actions/{action.pk}/decision",
            json={"verdict": "approve"},
            headers={"Authorization": f"Bearer {reviewer_token}"},
        )
        assert again.status_code == 409

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if run.status == "succeeded":
            break
        time.sleep(0.2)
    assert run.status == "succeeded", (run.status, (stack["logs"] / "worker.log").read_text()[-3000:])
    assert Refund.objects.filter(order__order_id="ORD-1005").count() == 1
    assert Execution.objects.filter(action=action, status="done").count() == 1
    assert verify_chain().ok
