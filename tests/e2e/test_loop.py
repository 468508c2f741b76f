"""The whole loop on production components: PostgreSQL, Redis, a Celery worker process, daphne.

Nothing is mocked: the test talks HTTP and websocket to a daphne process, a
separate `celery worker` process runs the agent and executes the approved
action, and both meet through Redis (broker and channel layer).
"""

from __future__ import annotations

import time

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from accounts.services import api_token_issue
from agents.models import Run
from approvals.models import ActionRequest, Execution
from audit.selectors import verify_chain
from demo.models import Refund
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import browser_session

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]


def test_run_reaches_the_live_inbox_and_the_approved_action_runs_once(demo, stack):
    base, port = stack.base, stack.port
    operator_token = api_token_issue(user=user("operator"), actor=None)
    reviewer_token = api_token_issue(user=user("reviewer"), actor=None)
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
        message = _next_row(socket_)
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
        removal = _next_row(socket_)
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
    assert run.status == "succeeded", (run.status, stack.log("worker"))
    assert Refund.objects.filter(order__order_id="ORD-1005").count() == 1
    assert Execution.objects.filter(action=action, status="done").count() == 1
    assert verify_chain().ok


def _next_row(socket_, timeout: float = 15.0) -> str:
    """The next message that carries an inbox row (the socket also carries queue counts and sequence numbers)."""
    deadline = time.monotonic() + timeout
    while 'id="action-' not in (message := socket_.recv(timeout=max(0.1, deadline - time.monotonic()))):
        pass
    return message
