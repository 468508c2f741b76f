"""A PostgreSQL restart costs no request: the pool checks each connection before handing it out."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from django.db import connection

from accounts.services import api_token_issue
from agents.models import Run
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.test_faults import wait_until

pytestmark = [
    needs_postgres,
    needs_redis,
    pytest.mark.skipif(not shutil.which("pg_ctlcluster"), reason="restarts the local cluster with pg_ctlcluster"),
    pytest.mark.django_db(transaction=True),
]


def restart_postgres() -> None:
    version = sorted(Path("/etc/postgresql").iterdir(), key=lambda p: [int(x) for x in p.name.split(".")])[-1].name
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
    )
    assert wait_until(
        lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0, timeout=30
    )


def test_requests_and_runs_after_a_postgres_restart_all_succeed(demo, stack):
    operator = api_token_issue(user=user("operator"), actor=None)
    headers = {"Authorization": f"Bearer {operator}"}
    api = httpx.Client(base_url=stack.base, timeout=30)
    # Fill the web process's pool with connections, then pull the database out from under them.
    for _ in range(5):
        assert api.get("/api/v1/actions", headers=headers).status_code == 200
    restart_postgres()
    connection.close()  # this test's own connection died with the restart too

    answers = [api.get("/api/v1/actions", headers=headers).status_code for _ in range(10)]
    assert answers == [200] * 10, answers
    created = api.post(
        "/api/v1/agents/refund-triage/runs",
        json={"input": {"ticket": "Arrived broken.", "order_id": "ORD-1004", "amount": 5}},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert wait_until(lambda: Run.objects.get(pk=created.json()["id"]).status == "succeeded", timeout=30), stack.log(
        "worker"
    )
