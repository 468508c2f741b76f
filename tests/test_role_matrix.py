"""Least privilege, walked as a matrix: every role against every page and API endpoint.

Admins configure and manage access, operators run things, reviewers decide,
auditors read. Each cell is the HTTP status that role must get.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client

from accounts.services import api_token_issue
from agents.breakers import breaker_for
from agents.services import run_start
from approvals.models import ActionRequest
from audit.models import AuditEvent
from tests.conftest import refund_input, user

pytestmark = pytest.mark.django_db

ROLES = ["admin", "admin2", "reviewer", "operator", "auditor", "outsider", "anonymous"]

# (method, path template, {role: status}); roles left out get the "other" status.
PAGES = [
    ("get", "/", {"anonymous": 302, "other": 200}),
    ("get", "/agents/", {"anonymous": 302, "other": 200}),
    ("get", "/tools/", {"anonymous": 302, "other": 200}),
    ("get", "/changes/", {"anonymous": 302, "other": 200}),
    ("get", "/notifications/", {"anonymous": 302, "other": 200}),
    ("get", "/spot-checks/", {"anonymous": 302, "other": 200}),
    (
        "get",
        "/runs/{run}/",
        {"admin": 200, "admin2": 200, "reviewer": 200, "operator": 200, "anonymous": 302, "other": 404},
    ),
    ("get", "/actions/{action}/", {"admin": 200, "reviewer": 200, "anonymous": 302, "other": 404}),
    ("get", "/agents/refund-triage/configure", {"admin": 200, "admin2": 200, "anonymous": 302, "other": 404}),
    ("get", "/audit/", {"admin": 200, "admin2": 200, "auditor": 200, "anonymous": 302, "other": 403}),
    ("get", "/audit/export.csv", {"admin": 200, "admin2": 200, "auditor": 200, "anonymous": 302, "other": 403}),
    ("get", "/access/", {"admin": 200, "admin2": 200, "auditor": 200, "anonymous": 302, "other": 403}),
    (
        "get",
        "/access/agents/refund-triage/",
        {"admin": 200, "admin2": 200, "auditor": 200, "anonymous": 302, "other": 403},
    ),
    ("post", "/actions/{action}/claim", {"admin": 302, "reviewer": 302, "anonymous": 302, "other": 404}),
    ("post", "/runs/{run}/cancel", {"admin": 302, "operator": 302, "anonymous": 302, "other": 404}),
    ("post", "/agents/refund-triage/pause", {"admin": 302, "operator": 302, "anonymous": 302, "other": 404}),
    ("post", "/breakers/{breaker}/reset", {"admin": 302, "operator": 302, "anonymous": 302, "other": 404}),
    ("post", "/agents/refund-triage/prompt", {"admin": 302, "admin2": 302, "anonymous": 302, "other": 404}),
    ("post", "/access/roles", {"admin": 302, "admin2": 302, "anonymous": 302, "other": 403}),
    ("get", "/actions/{action}/decide", {"anonymous": 405, "other": 405}),
    ("get", "/ops/", {"anonymous": 302, "other": 200}),
    ("get", "/ops/agents/refund-triage/", {"admin": 200, "operator": 200, "anonymous": 302, "other": 404}),
    ("get", "/ops/alerts/", {"anonymous": 302, "other": 200}),
    ("get", "/ops/agents/refund-triage/trust", {"admin": 200, "operator": 200, "anonymous": 302, "other": 404}),
    ("post", "/ops/agents/refund-triage/trust/refit", {"admin": 302, "operator": 302, "anonymous": 302, "other": 404}),
    (
        "post",
        "/ops/agents/refund-triage/trust/issue_refund/adopt",
        {"admin": 302, "admin2": 302, "anonymous": 302, "other": 404},
    ),
    (
        "get",
        "/exports/interventions.jsonl?agent=refund-triage",
        {"admin": 200, "admin2": 200, "reviewer": 200, "operator": 200, "auditor": 200, "anonymous": 302, "other": 404},
    ),
]

API = [
    ("get", "/api/v1/actions", {"anonymous": 401, "other": 200}),
    (
        "get",
        "/api/v1/runs/{run}",
        {"admin": 200, "admin2": 200, "reviewer": 200, "operator": 200, "anonymous": 401, "other": 404},
    ),
    (
        "get",
        "/api/v1/actions/{action}",
        {"admin": 200, "reviewer": 200, "operator": 200, "anonymous": 401, "other": 404},
    ),
    # Only whoever operates the agent acts on grants (this action has none: 409 for them).
    (
        "post",
        "/api/v1/actions/{action}/grant/redeem",
        {"admin": 409, "operator": 409, "anonymous": 401, "other": 404},
    ),
    ("post", "/api/v1/agents/refund-triage/runs", {"admin": 201, "operator": 201, "anonymous": 401, "other": 404}),
    # The agent's own token: whoever configures it (its reviewers and operators see the agent, may not: 403).
    # Its webhook: whoever configures or operates it.
    (
        "post",
        "/api/v1/agents/refund-triage/tokens",
        {"admin": 201, "admin2": 201, "reviewer": 403, "operator": 403, "anonymous": 401, "other": 404},
    ),
    (
        "get",
        "/api/v1/agents/refund-triage/webhook",
        {"admin": 200, "admin2": 200, "operator": 200, "anonymous": 401, "other": 404},
    ),
    ("post", "/api/v1/actions/{action}/claim", {"admin": 200, "reviewer": 200, "anonymous": 401, "other": 404}),
    ("post", "/api/v1/runs/{run}/cancel", {"admin": 200, "operator": 200, "anonymous": 401, "other": 404}),
    ("get", "/metrics", {"anonymous": 401, "other": 200}),
]

PAYLOADS = {
    "/agents/refund-triage/prompt": {"text": "A new prompt.", "note": "matrix"},
    "/access/roles": {"username": "reviewer2", "role": "Auditor", "action": "assign"},
    "/agents/refund-triage/pause": {"paused": "1"},
    "/api/v1/agents/refund-triage/runs": {"input": refund_input(amount=300)},
    "/api/v1/actions/{action}/grant/redeem": {"grant": "not-a-grant", "arguments": {}},
}


@pytest.fixture
def world(demo, commit):
    get_user_model().objects.create_user(username="outsider")
    with commit():
        run = run_start(agent=demo["refund-triage"], input=refund_input(amount=300), actor=None)
    action = ActionRequest.objects.get(run=run)
    breaker = breaker_for(demo["refund-triage"], "issue_refund")
    return {"run": run.pk, "action": action.pk, "breaker": breaker.pk}


def expected(table: dict[str, int], role: str) -> int:
    return table.get(role, table["other"])


def browser(role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(user(role))
    return client


@contextmanager
def _undone() -> Iterator[None]:
    """One cell's request, undone before the next: every cell meets the same world.

    Marked as a test's own block (as Django's TestCase marks its atomics), so the request's writes are
    flushed as they are in any test (core.transactions) and a failing one still fails the cell.
    """
    block = transaction.atomic()
    block._from_testcase = True  # type: ignore[attr-defined]
    with block:
        yield
        transaction.set_rollback(True)


# One test per role walks every page and every endpoint (the world is built once per role, not once per
# cell: 260 builds were two minutes of the suite), and names every cell that answered otherwise.
def _walk(world: dict[str, int], role: str, cells: list[Any], send: Callable[[str, str, str], Any]) -> None:
    wrong = []
    for method, path, table in cells:
        url = path.format(**world)
        with _undone():
            response = send(method, url, path)
        if response.status_code != expected(table, role):
            wrong.append(
                f"{method} {url}: {response.status_code}, not {expected(table, role)} {response.content[:200]!r}"
            )
    assert not wrong, f"{role}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("role", ROLES)
def test_pages(world, role):
    def send(method: str, url: str, path: str) -> Any:
        client = browser(role)
        return client.get(url) if method == "get" else client.post(url, PAYLOADS.get(path, {}))

    _walk(world, role, PAGES, send)


@pytest.mark.parametrize("role", ROLES)
def test_api(world, role):
    def send(method: str, url: str, path: str) -> Any:
        token = None if role == "anonymous" else api_token_issue(user=user(role), actor=None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method == "get":
            return Client().get(url, headers=headers)
        body = json.dumps(PAYLOADS.get(path, {}))
        return Client().post(url, body, content_type="application/json", headers=headers)

    _walk(world, role, API, send)


def test_refused_access_is_audited(world):

    browser("operator").get("/audit/")
    refused = AuditEvent.objects.get(event="access.refused")
    assert refused.actor_label == "operator"
    assert refused.after["path"] == "/audit/"
