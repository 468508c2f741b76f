"""MCP Tasks (protocol revision 2025-11-25) at an agent's endpoint, over HTTP to a live stack (daphne + a worker).

The official Python SDK (mcp 2.3) defines the task types but cannot send a task-augmented call, so
these tests speak JSON-RPC over httpx; `test_the_official_typescript_sdk_*` drives the same flow with
the official TypeScript SDK's task client (`client.experimental.tasks.callToolStream`).
"""

from __future__ import annotations

import json
import subprocess
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts.services import agent_token_issue, api_token_issue
from approvals.models import ActionRequest, ActionStatus
from audit.models import AuditEvent
from demo.models import Refund
from gateway.models import GatewayCall
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import wait_until

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]

TASKS = "2025-11-25"
POLL_MS = 200
TS_CLIENT = Path(__file__).parent / "mcp_tasks_client"


@pytest.fixture
def stack_env(stack_env: dict[str, str]) -> dict[str, str]:
    return {**stack_env, "GATEWAY_TASK_POLL_MS": str(POLL_MS)}


class Rpc:
    """JSON-RPC to one agent's MCP endpoint, one request per POST (the endpoint is stateless)."""

    def __init__(self, base: str, token: str, slug: str = "refund-triage", version: str = TASKS) -> None:
        self.url = f"{base}/mcp/agents/{slug}/"
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": version,
        }

    def __call__(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        response = httpx.post(self.url, json=body, headers=self.headers, timeout=timeout)
        assert response.status_code == 200, response.text
        if response.headers["content-type"].startswith("application/json"):
            return response.json()
        # An SSE stream: the answer is the event carrying our id (progress notifications may come first).
        for line in response.text.splitlines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("id") == 1:
                    return message
        raise AssertionError(f"no answer in {response.text!r}")

    def result(self, method: str, params: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        message = self(method, params, **kwargs)
        assert "result" in message, message
        return message["result"]

    def error(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        message = self(method, params)
        assert "error" in message, message
        return message["error"]


def decide(base: str, action_id: int, body: dict[str, Any]) -> httpx.Response:
    token = api_token_issue(user=user("reviewer"), actor=None)
    return httpx.post(
        f"{base}/api/v1/actions/{action_id}/decision", json=body, headers={"Authorization": f"Bearer {token}"}
    )


def text(result: dict[str, Any]) -> str:
    return "\n".join(block["text"] for block in result["content"])


def refund(order: str, amount: int) -> dict[str, Any]:
    return {"name": "issue_refund", "arguments": {"order_id": order, "amount": amount, "reason": "broken"}}


def test_initialize_declares_tasks_at_2025_11_25_only_and_every_tool_may_be_a_task(demo, stack):
    rpc = Rpc(stack.base, api_token_issue(user=user("operator"), actor=None))
    hello = {"capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
    now = rpc.result("initialize", {**hello, "protocolVersion": TASKS})
    assert now["protocolVersion"] == TASKS
    assert now["capabilities"]["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    older = rpc.result("initialize", {**hello, "protocolVersion": "2025-06-18"})
    assert older["protocolVersion"] == "2025-06-18" and "tasks" not in older["capabilities"]
    tools = rpc.result("tools/list")["tools"]
    assert tools and all(tool["execution"] == {"taskSupport": "optional"} for tool in tools)


def test_a_reviewed_call_as_a_task_answers_at_once_and_its_result_is_the_edited_tools_result(demo, stack):
    rpc = Rpc(stack.base, api_token_issue(user=user("operator"), actor=None))
    created = rpc.result("tools/call", {**refund("ORD-1006", 150), "task": {"ttl": 60_000}})
    task = created["task"]
    assert task["status"] == "working" and task["ttl"] == 60_000 and task["pollInterval"] == POLL_MS
    assert task["createdAt"] and task["lastUpdatedAt"]
    action = ActionRequest.objects.get(arguments__order_id="ORD-1006")
    assert action.status == ActionStatus.PENDING
    assert f"Request #{action.pk} for issue_refund is waiting for a reviewer" in task["statusMessage"]
    assert created["_meta"]["io.modelcontextprotocol/model-immediate-response"] == task["statusMessage"]

    # The identical call (keys in another order, 150.0 for 150) is given the same task: one request.
    again = rpc.result(
        "tools/call",
        {
            "name": "issue_refund",
            "arguments": {"reason": "broken", "amount": 150.0, "order_id": "ORD-1006"},
            "task": {},
        },
    )
    assert again["task"]["taskId"] == task["taskId"]
    assert ActionRequest.objects.filter(arguments__order_id="ORD-1006").count() == 1
    got = rpc.result("tasks/get", {"taskId": task["taskId"]})
    assert got["status"] == "working" and got["taskId"] == task["taskId"]
    assert task["taskId"] in [t["taskId"] for t in rpc.result("tasks/list")["tasks"]]

    # tasks/result blocks until the task is terminal: nothing has run while it waits.
    out: list[dict[str, Any]] = []
    waiter = threading.Thread(target=lambda: out.append(rpc.result("tasks/result", {"taskId": task["taskId"]})))
    waiter.start()
    assert not Refund.objects.filter(order__order_id="ORD-1006").exists()
    edited = {"order_id": "ORD-1006", "amount": 120, "reason": "broken"}
    assert decide(stack.base, action.pk, {"verdict": "edit", "arguments": edited, "comment": "partial"}).is_success
    waiter.join(timeout=60)
    result = out[0]
    assert result["isError"] is False and "edited the arguments" in text(result)
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task["taskId"]}
    assert Decimal(str(result["structuredContent"]["amount"])) == 120
    assert Refund.objects.get(order__order_id="ORD-1006").amount == 120
    done = rpc.result("tasks/get", {"taskId": task["taskId"]})
    assert done["status"] == "completed" and "pollInterval" not in done
    assert done["lastUpdatedAt"] > done["createdAt"]
    # Asked again, the same result; the task cannot be cancelled any more.
    assert rpc.result("tasks/result", {"taskId": task["taskId"]}) == result
    refused = rpc.error("tasks/cancel", {"taskId": task["taskId"]})
    assert refused["code"] == -32602 and "completed" in refused["message"]


def test_a_rejected_task_fails_with_the_reason_and_a_cancelled_one_withdraws_its_request(demo, stack):
    rpc = Rpc(stack.base, api_token_issue(user=user("operator"), actor=None))
    rejected = rpc.result("tools/call", {**refund("ORD-1007", 150), "task": {}})["task"]
    action = ActionRequest.objects.get(arguments__order_id="ORD-1007")
    assert rejected["ttl"] == 7 * 24 * 3600 * 1000  # no ttl asked: the longest kept
    tiny = rpc.result("tools/call", {**refund("ORD-1009", 150), "task": {"ttl": 1}})["task"]
    assert tiny["ttl"] == 60_000 and tiny["status"] == "working"  # never shorter than a minute
    assert decide(stack.base, action.pk, {"verdict": "reject", "comment": "Already refunded by phone."}).is_success
    assert wait_until(lambda: rpc.result("tasks/get", {"taskId": rejected["taskId"]})["status"] == "failed")
    failed = rpc.result("tasks/get", {"taskId": rejected["taskId"]})
    assert "Already refunded by phone." in failed["statusMessage"]
    result = rpc.result("tasks/result", {"taskId": rejected["taskId"]})
    assert result["isError"] is True and "Rejected by reviewer: Already refunded by phone." in text(result)

    # Cancelled while it waits for a person: the request is withdrawn from the inbox, audited.
    waiting = rpc.result("tools/call", {**refund("ORD-1008", 150), "task": {"ttl": 60_000}})["task"]
    pending = ActionRequest.objects.get(arguments__order_id="ORD-1008")
    cancelled = rpc.result("tasks/cancel", {"taskId": waiting["taskId"]})
    assert cancelled["status"] == "cancelled" and cancelled["statusMessage"] == "Cancelled by request."
    pending.refresh_from_db()
    assert pending.status == ActionStatus.CANCELLED
    event = AuditEvent.objects.filter(event="action.withdrawn", target_id=str(pending.pk)).get()
    assert event.actor_id == user("operator").pk
    assert decide(stack.base, pending.pk, {"verdict": "approve", "comment": "too late"}).status_code == 409
    assert rpc.result("tasks/get", {"taskId": waiting["taskId"]})["status"] == "cancelled"
    assert rpc.result("tasks/result", {"taskId": waiting["taskId"]})["isError"] is True
    assert rpc.error("tasks/cancel", {"taskId": waiting["taskId"]})["code"] == -32602
    # The call was answered by its cancellation: the same call again is a new request.
    anew = rpc.result("tools/call", {**refund("ORD-1008", 150), "task": {"ttl": 60_000}})["task"]
    assert anew["taskId"] != waiting["taskId"]
    assert ActionRequest.objects.filter(arguments__order_id="ORD-1008").count() == 2
    assert not Refund.objects.filter(order__order_id__in=["ORD-1007", "ORD-1008"]).exists()


def test_tasks_belong_to_their_agent_and_bad_task_requests_are_errors_that_write_nothing(demo, stack, outsider):
    operator = api_token_issue(user=user("operator"), actor=None)
    rpc = Rpc(stack.base, operator)
    auto = rpc.result("tools/call", {**refund("ORD-1005", 50), "task": {"ttl": 60_000}})["task"]
    assert wait_until(lambda: rpc.result("tasks/get", {"taskId": auto["taskId"]})["status"] == "completed")
    ran = rpc.result("tasks/result", {"taskId": auto["taskId"]})
    assert ran["isError"] is False and ran["structuredContent"]["refund_id"] == Refund.objects.get().pk

    # The same token at another agent's endpoint, another requestor at this one (the agent's own token), or a
    # stranger: no such task (the same answer as for an id never issued), or no such endpoint.
    elsewhere = Rpc(stack.base, operator, slug="crm-cleanup")
    agent_token, _ = agent_token_issue(agent=demo["refund-triage"], actor=user("admin"))
    beside = Rpc(stack.base, agent_token)
    for method in ("tasks/get", "tasks/result", "tasks/cancel"):
        assert elsewhere.error(method, {"taskId": auto["taskId"]})["code"] == -32602
        assert beside.error(method, {"taskId": auto["taskId"]}) == rpc.error(method, {"taskId": "no-such-task"})
    assert auto["taskId"] not in [t["taskId"] for t in elsewhere.result("tasks/list")["tasks"]]
    assert beside.result("tasks/list")["tasks"] == []
    assert rpc.result("tasks/get", {"taskId": auto["taskId"]})["status"] == "completed"  # its own still there
    stranger = Rpc(stack.base, api_token_issue(user=outsider, actor=None))
    with pytest.raises(AssertionError, match="404"):
        stranger("tasks/get", {"taskId": auto["taskId"]})
    assert rpc.error("tasks/list", {"cursor": "not-a-cursor"})["code"] == -32602

    # Refused calls are not accepted as tasks: a protocol error naming why, and nothing written.
    before = (ActionRequest.objects.count(), GatewayCall.objects.count())
    wrong = rpc.error("tools/call", {**refund("nope", 5), "task": {}})
    assert wrong["code"] == -32602 and "invalid_arguments" in wrong["message"]
    hostile = rpc.error("tools/call", {**refund("ORD-1009\x00", 5), "task": {}})
    assert hostile["code"] == -32602 and "invalid_request" in hostile["message"]
    nul_name = rpc.error("tools/call", {"name": "issue_refund\x00", "arguments": {}, "task": {}})
    assert nul_name["code"] == -32602 and "invalid_request" in nul_name["message"]
    unknown = rpc.error("tools/call", {"name": "delete_contacts", "arguments": {"ids": [1]}, "task": {}})
    assert unknown["code"] == -32602
    malformed = rpc.error("tools/call", {"name": "issue_refund", "arguments": {}, "task": {"ttl": "soon"}})
    assert malformed["code"] == -32602
    assert (ActionRequest.objects.count(), GatewayCall.objects.count()) == before

    # Before 2025-11-25 there are no tasks: the `task` field is ignored and the call is served as any other.
    older = Rpc(stack.base, operator, version="2025-06-18")
    plain = older.result("tools/call", {**refund("ORD-1010", 50), "task": {"ttl": 60_000}})
    assert "task" not in plain and plain["isError"] is False
    assert not GatewayCall.objects.get(action__arguments__order_id="ORD-1010").tasks.exists()


def test_the_official_typescript_sdk_takes_a_reviewed_call_as_a_task_and_gets_its_result(demo, stack):
    """@modelcontextprotocol/sdk's task client: create, poll with tasks/get, fetch with tasks/result."""
    token = api_token_issue(user=user("operator"), actor=None)
    client = subprocess.Popen(
        ["node", str(TS_CLIENT / "call_as_task.mjs"), f"{stack.base}/mcp/agents/refund-triage/", token],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TS_CLIENT,
    )
    try:
        assert wait_until(lambda: ActionRequest.objects.filter(status="pending", tool="issue_refund").exists())
        action = ActionRequest.objects.get(tool="issue_refund")
        assert decide(stack.base, action.pk, {"verdict": "approve", "comment": "fine"}).is_success
        out, err = client.communicate(timeout=60)
    finally:
        client.kill()
    assert client.returncode == 0, err
    seen = [json.loads(line) for line in out.splitlines()]
    kinds = [message["type"] for message in seen]
    assert kinds[0] == "taskCreated" and kinds[-1] == "result", kinds
    assert "working" in [m["task"]["status"] for m in seen if m["type"] == "taskStatus"]
    assert seen[-2]["task"]["status"] == "completed"
    result = seen[-1]["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["refund_id"] == Refund.objects.get(order__order_id="ORD-1011").pk
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.EXECUTED
