"""The SDK's framework adapters end to end: an agent built with the OpenAI Agents SDK, LangGraph or PydanticAI (each
with its framework's offline test model, in its own process, as an agent running elsewhere is) asks Countersign
(daphne and a worker) twice; a reviewer edits the first call and rejects the second through the API. The agent
runs exactly the edited call, once, and its model is told the reviewer's reason for the other."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts.services import api_token_issue
from agents import upstream
from agents.models import AgentTool
from approvals.models import ActionRequest, ActionStatus
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import BIN, wait_until

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]

AGENTS = Path(__file__).with_name("frameworks")
SCHEMA = {
    "type": "object",
    "properties": {"customer": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["customer", "amount"],
}
DECISIONS = [
    {"verdict": "edit", "arguments": {"customer": "ACME", "amount": 90}},
    {"verdict": "reject", "comment": "Initech paid already"},
]


def _review_in_turn(base: str, token: str, decisions: list[dict[str, Any]]) -> threading.Thread:
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


@pytest.mark.parametrize("script", ["openai_agent.py", "langgraph_agent.py", "pydantic_ai_agent.py"])
def test_an_agent_runs_exactly_the_edited_call_and_hears_the_rejection(
    script: str, demo_user: Any, refund_agent: Any, stack: Any, tmp_path: Path
) -> None:
    for name in ("admin", "operator", "reviewer"):
        demo_user(name)
    tool = upstream.caller_tool_create(
        actor=user("admin"),
        slug="send_invoice",
        description="Send an invoice.",
        input_schema=SCHEMA,
        impact="financial",
    )
    upstream.upstream_tool_approve(tool=tool, actor=user("admin"), definition_hash_seen=tool.definition_hash)
    AgentTool.objects.create(agent=refund_agent, tool="send_invoice", mode="review")
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "COUNTERSIGN_URL": stack.base,
        "COUNTERSIGN_TOKEN": api_token_issue(user=user("operator"), actor=None),
    }
    reviewer = _review_in_turn(stack.base, api_token_issue(user=user("reviewer"), actor=None), DECISIONS)
    # Its own process, outside the repository: the OpenAI Agents SDK's package is named `agents`, as the app here.
    done = subprocess.run(
        [BIN / "python", AGENTS / script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    reviewer.join(timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])

    assert said["ran"] == [{"customer": "ACME", "amount": 90}]  # the edited call, once; the rejected one never
    first, second = said["told"]
    assert "INV-1" in first and "90" in first
    assert "Initech paid already" in second
    executed, rejected = ActionRequest.objects.order_by("pk")
    assert executed.status == ActionStatus.EXECUTED and executed.arguments == {"customer": "ACME", "amount": 90}
    assert executed.result == {"invoice": "INV-1", "amount": 90}
    assert executed.grant.status == "reported"
    assert rejected.status == ActionStatus.REJECTED and rejected.proposed_arguments["customer"] == "Initech"
