"""The SDK's framework adapters end to end: an agent built with the OpenAI Agents SDK, LangGraph or PydanticAI (each
with its framework's offline test model, in its own process, as an agent running elsewhere is) asks Countersign
(daphne and a worker) twice; a reviewer edits the first call and rejects the second through the API. The agent
runs exactly the edited call, once, and its model is told the reviewer's reason for the other."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from accounts.services import api_token_issue
from approvals.models import ActionRequest, ActionStatus
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import BIN, review_in_turn
from tests.factories import enabled_caller_tool

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]

AGENTS = Path(__file__).with_name("frameworks")
DECISIONS = [
    {"verdict": "edit", "arguments": {"customer": "ACME", "amount": 90}},
    {"verdict": "reject", "comment": "Initech paid already"},
]


@pytest.mark.parametrize("script", ["openai_agent.py", "langgraph_agent.py", "pydantic_ai_agent.py"])
def test_an_agent_runs_exactly_the_edited_call_and_hears_the_rejection(
    script: str, demo_user: Any, refund_agent: Any, stack: Any, tmp_path: Path
) -> None:
    for name in ("admin", "operator", "reviewer"):
        demo_user(name)
    enabled_caller_tool(refund_agent, admin=user("admin"))
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "COUNTERSIGN_URL": stack.base,
        "COUNTERSIGN_TOKEN": api_token_issue(user=user("operator"), actor=None),
    }
    reviewer = review_in_turn(stack.base, api_token_issue(user=user("reviewer"), actor=None), DECISIONS)
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
