"""Server-sent events of an agent's decisions, read over a real connection from daphne (with a worker)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from accounts.services import api_token_issue
from tests.conftest import needs_postgres, needs_redis, user

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    event: dict[str, Any] = {}
    for line in lines:
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value


def _auth(username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_token_issue(user=user(username), actor=None)}"}


def test_decisions_stream_as_they_commit_and_a_reconnect_resumes_after_the_last_event(demo, stack):
    base = stack.base
    operator = _auth("operator")
    pending = []
    for order in ("ORD-1020", "ORD-1021"):
        body = {"tool": "issue_refund", "arguments": {"order_id": order, "amount": 150, "reason": "x"}, "confidence": 1}
        response = httpx.post(f"{base}/api/v1/agents/refund-triage/actions", json=body, headers=operator, timeout=10)
        assert response.status_code == 201 and response.json()["status"] == "pending", response.text
        pending.append(response.json()["id"])
    url = f"{base}/api/v1/agents/refund-triage/decisions/stream"
    seen: list[dict[str, Any]] = []
    opened = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", url, params={"seconds": 60}, headers=operator, timeout=70) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for event in _events(stream.iter_lines()):
                seen.append(event)
                if len(seen) == 2:
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(timeout=20)
    reviewer = _auth("reviewer")
    for action_id, verdict in zip(
        pending, ({"verdict": "reject", "comment": "No."}, {"verdict": "approve"}), strict=True
    ):
        decided = httpx.post(f"{base}/api/v1/actions/{action_id}/decision", json=verdict, headers=reviewer, timeout=10)
        assert decided.status_code == 200, decided.text
    listener.join(timeout=40)
    assert [e["data"]["id"] for e in seen] == pending
    assert seen[0]["event"] == "decision" and seen[0]["data"]["decision"]["comment"] == "No."
    assert seen[1]["data"]["decision"]["verdict"] == "approve"

    # A reconnect with the last id it saw gets only what came after (here: at once, then the stream ends).
    with httpx.stream(
        "GET", url, params={"seconds": 0}, headers={**operator, "Last-Event-ID": seen[0]["id"]}, timeout=20
    ) as again:
        replayed = list(_events(again.iter_lines()))
    assert [e["data"]["id"] for e in replayed] == [pending[1]]

    # Only who may operate the agent: a reviewer (their inbox applies each row's rights) or an auditor gets 404.
    for username in ("reviewer", "auditor"):
        stranger = httpx.get(url, params={"seconds": 0}, headers=_auth(username), timeout=10)
        assert stranger.status_code == 404
