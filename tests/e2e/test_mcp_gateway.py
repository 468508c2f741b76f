"""Each agent's MCP endpoint, driven by the official MCP SDK's client against a live stack (daphne + a worker)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from accounts.services import api_token_issue
from agents import upstream
from agents.models import AgentTool, UpstreamTool
from approvals.models import ActionRequest, ActionStatus
from demo.models import Refund
from gateway.models import GatewayCall
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import BIN, wait_until

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]

HOLD = 6


@pytest.fixture
def stack_env(stack_env: dict[str, str]) -> dict[str, str]:
    # A short hold, progress every second: a held call's whole life fits in a test.
    return {
        **stack_env,
        "GATEWAY_HOLD_SECONDS": str(HOLD),
        "GATEWAY_PROGRESS_SECONDS": "1",
        "UPSTREAM_STDIO_COMMANDS": str(BIN / "mcp-server-git"),
    }


def _client(base: str, token: str, slug: str = "refund-triage") -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    return Client(streamable_http_client(f"{base}/mcp/agents/{slug}/", http_client=http))


def call(base: str, token: str, tool: str, arguments: dict[str, Any], **kwargs: Any) -> Any:
    """One tools/call over a fresh connection; the result, and the progress notifications seen."""
    progress: list[tuple[float, str | None]] = []

    async def note(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    async def go() -> Any:
        async with _client(base, token) as client:
            return await client.call_tool(tool, arguments, progress_callback=note, **kwargs)

    return asyncio.run(go()), progress


def text(result: Any) -> str:
    return "\n".join(block.text for block in result.content)


def decide(base: str, action_id: int, body: dict[str, Any]) -> None:
    token = api_token_issue(user=user("reviewer"), actor=None)
    response = httpx.post(
        f"{base}/api/v1/actions/{action_id}/decision",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def in_background(work: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    return thread, out


def test_an_auto_call_runs_once_in_a_worker_and_returns_its_result(demo, stack):
    token = api_token_issue(user=user("operator"), actor=None)
    result, _ = call(stack.base, token, "issue_refund", {"order_id": "ORD-1005", "amount": 50, "reason": "broken"})
    assert not result.is_error, text(result)
    refund = Refund.objects.get(order__order_id="ORD-1005")
    assert result.structured_content["refund_id"] == refund.pk and refund.amount == 50
    action = ActionRequest.objects.get(pk=result.meta["countersign/action"])
    assert action.status == ActionStatus.EXECUTED and action.route == "auto"
    assert action.submitted_by == user("operator")
    assert GatewayCall.objects.get(action=action).answered_at is not None


def test_a_reviewed_call_is_held_with_progress_and_answered_with_the_edited_result(demo, stack):
    token = api_token_issue(user=user("operator"), actor=None)
    asked = {"order_id": "ORD-1006", "amount": 150, "reason": "broken"}
    thread, out = in_background(lambda: call(stack.base, token, "issue_refund", asked))
    assert wait_until(lambda: ActionRequest.objects.filter(status="pending", arguments__order_id="ORD-1006").exists())
    action = ActionRequest.objects.get(arguments__order_id="ORD-1006")
    decide(stack.base, action.pk, {"verdict": "edit", "arguments": {**asked, "amount": 120}, "comment": "partial"})
    thread.join(timeout=HOLD + 20)
    result, progress = out[0]
    assert not result.is_error, text(result)
    assert "edited the arguments" in text(result) and result.meta["countersign/edited"] is True
    assert Decimal(result.structured_content["amount"]) == 120
    assert Refund.objects.get(order__order_id="ORD-1006").amount == 120
    assert all(message and f"request #{action.pk}" in message for _, message in progress)


def test_past_the_hold_it_is_pending_and_an_identical_retry_joins_and_gets_the_rejection(demo, stack):
    token = api_token_issue(user=user("operator"), actor=None)
    asked = {"order_id": "ORD-1007", "amount": 150, "reason": "broken"}
    pending, progress = call(stack.base, token, "issue_refund", asked)
    assert not pending.is_error, text(pending)
    action = ActionRequest.objects.get(arguments__order_id="ORD-1007")
    assert f"request #{action.pk}" in text(pending) and "call issue_refund again" in text(pending).lower()
    assert len(progress) >= HOLD - 2  # about one a second while held

    decide(stack.base, action.pk, {"verdict": "reject", "comment": "Already refunded by phone."})
    # The same call, its keys in another order: it joins the request instead of opening a second one.
    again, _ = call(stack.base, token, "issue_refund", {"reason": "broken", "amount": 150.0, "order_id": "ORD-1007"})
    assert again.is_error
    assert "Rejected by reviewer: Already refunded by phone." in text(again)
    assert ActionRequest.objects.filter(arguments__order_id="ORD-1007").count() == 1
    assert not Refund.objects.filter(order__order_id="ORD-1007").exists()


def test_it_lists_the_tools_refuses_bad_calls_and_keeps_outsiders_out(demo, stack, outsider):
    # One stack for the three: each costs seconds to start.
    token = api_token_issue(user=user("operator"), actor=None)

    async def go() -> Any:
        async with _client(stack.base, token) as client:
            return await client.list_tools()

    tools = {tool.name: tool for tool in asyncio.run(go()).tools}
    enabled = set(AgentTool.objects.filter(agent__slug="refund-triage", enabled=True).values_list("tool", flat=True))
    assert set(tools) == enabled
    refund = tools["issue_refund"]
    assert refund.input_schema["properties"]["order_id"]["type"] == "string"
    assert refund.annotations.read_only_hint is False

    # Bad calls are tool errors, and write nothing.
    before = ActionRequest.objects.count()
    wrong, _ = call(stack.base, token, "issue_refund", {"order_id": "nope", "amount": 5, "reason": "x"})
    assert wrong.is_error and "invalid_arguments" in text(wrong)
    hostile, _ = call(stack.base, token, "issue_refund", {"order_id": "ORD-1008\x00", "amount": 5, "reason": "x"})
    assert hostile.is_error and "invalid_request" in text(hostile)
    unsure, _ = call(
        stack.base,
        token,
        "issue_refund",
        {"order_id": "ORD-1008", "amount": 5, "reason": "x"},
        meta={"countersign/confidence": 7},
    )
    assert unsure.is_error and "countersign/confidence" in text(unsure)
    unknown, _ = call(stack.base, token, "delete_contacts", {"ids": [1]})  # another agent's tool
    assert unknown.is_error
    assert ActionRequest.objects.count() == before
    assert not GatewayCall.objects.exists()

    # Outsiders: 401 without a valid token, 404 for an agent they may not drive (or none), no hint.
    url = f"{stack.base}/mcp/agents/refund-triage/"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}

    def post(path: str = url, token: str | None = None) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(path, json=body, headers={**headers, **auth}, timeout=10)

    assert post().status_code == 401
    assert post(token="cs_not-a-token").status_code == 401
    assert post().headers["www-authenticate"].startswith("Bearer")
    stranger = post(token=api_token_issue(user=outsider, actor=None))
    nowhere = post(f"{stack.base}/mcp/agents/no-such-agent/", token=api_token_issue(user=user("operator"), actor=None))
    assert stranger.status_code == nowhere.status_code == 404
    assert stranger.json() == nowhere.json()
    # A reviewer decides refund-triage's actions but does not drive the agent: no endpoint for them.
    reviewer = post(token=api_token_issue(user=user("reviewer"), actor=None))
    assert reviewer.status_code == 404


def test_an_upstream_servers_read_tool_runs_and_its_write_tool_waits_for_a_person(demo, stack, settings, tmp_path):
    """mcp-server-git behind Countersign: git_status runs at once; git_commit waits for a person, then commits once."""
    git = str(BIN / "mcp-server-git")
    settings.UPSTREAM_STDIO_COMMANDS = [git]
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "T"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    (repo / "notes.txt").write_text("hello\n")
    subprocess.run(["git", "-C", str(repo), "add", "notes.txt"], check=True)

    admin = user("admin")
    source = upstream.source_create(actor=admin, slug="git", kind="mcp_stdio", command=git, args=["-r", str(repo)])
    assert not upstream.source_sync(source=source, actor=admin).error
    for name in ("git__git_status", "git__git_commit"):
        tool = UpstreamTool.objects.get(name=name)
        upstream.upstream_tool_approve(tool=tool, actor=admin, definition_hash_seen=tool.definition_hash)
    agent = demo["refund-triage"]
    AgentTool.objects.create(agent=agent, tool="git__git_status", mode="auto")
    AgentTool.objects.create(agent=agent, tool="git__git_commit", mode="review")  # the write tool is gated

    token = api_token_issue(user=user("operator"), actor=None)
    status, _ = call(stack.base, token, "git__git_status", {"repo_path": str(repo)})
    assert not status.is_error, text(status)
    assert "notes.txt" in text(status)

    asked = {"repo_path": str(repo), "message": "Add notes"}
    thread, out = in_background(lambda: call(stack.base, token, "git__git_commit", asked))
    assert wait_until(lambda: ActionRequest.objects.filter(tool="git__git_commit", status="pending").exists())
    action = ActionRequest.objects.get(tool="git__git_commit")
    assert _commits(repo) == 0  # nothing happened while it waited
    decide(stack.base, action.pk, {"verdict": "approve", "comment": "fine"})
    thread.join(timeout=HOLD + 30)
    committed, _ = out[0]
    assert not committed.is_error, text(committed)
    assert _commits(repo) == 1
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.EXECUTED


def _commits(repo: Path) -> int:
    # An empty repository has no revisions to count (git answers non-zero): none.
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--count", "--all"], check=False, capture_output=True, text=True
    )
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0
