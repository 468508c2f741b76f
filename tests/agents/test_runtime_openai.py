"""The run loop driving the OpenAI-compatible provider against a real HTTP server on loopback."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from agents.models import Agent, RunStatus, StepKind
from agents.services import run_start
from demo.models import Refund
from tests.agents.test_openai_provider import completion, llm_server, tool_call  # noqa: F401  (fixture)
from tests.conftest import refund_input

pytestmark = pytest.mark.django_db

KEY = "sk-loopback-secret-0123456789"


@pytest.fixture
def openai_agent(refund_agent, orders, llm_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("COUNTERSIGN_SECRET_TEST_OPENAI", KEY)
    agent = refund_agent
    Agent.objects.filter(pk=agent.pk).update(
        provider="openai",
        base_url=llm_server.url,
        model="gpt-4o-mini",
        api_key_ref="env:COUNTERSIGN_SECRET_TEST_OPENAI",
    )
    agent.refresh_from_db()
    return agent


def refund_args(amount=30, **extra):
    return {"order_id": "ORD-1003", "amount": amount, "reason": "broken on arrival", **extra}


def test_a_run_calls_the_model_executes_and_reports_back(openai_agent, llm_server, commit):  # noqa: F811
    llm_server.respond(
        body=completion(
            tool_call("issue_refund", refund_args(_confidence=0.97, _rationale="clear fault")),
            usage={"prompt_tokens": 1000, "completion_tokens": 100},
            model="gpt-4o-mini",
        )
    )
    llm_server.respond(
        body=completion(
            {"role": "assistant", "content": "Refunded 30."}, usage={"prompt_tokens": 1200, "completion_tokens": 20}
        )
    )
    with commit():
        run = run_start(agent=openai_agent, input=refund_input(), actor=None)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == "Refunded 30."
    assert Refund.objects.get().amount == Decimal(30)

    first, second = (r.body for r in llm_server.requests)
    assert llm_server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert [t["function"]["name"] for t in first["tools"]] == ["issue_refund"]
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == "call_abc"
    assert json.loads(tool_message["content"])["outcome"] == "executed"

    calls = list(run.steps.filter(kind=StepKind.LLM_CALL).order_by("seq"))
    assert [(c.tokens_in, c.tokens_out) for c in calls] == [(1000, 100), (1200, 20)]
    # gpt-4o-mini: 0.15 and 0.60 USD per million tokens
    assert run.cost == Decimal("0.000150") + Decimal("0.000060") + Decimal("0.000180") + Decimal("0.000012")
    assert KEY not in json.dumps(list(run.steps.values_list("payload", flat=True)))
    proposal = run.steps.get(kind=StepKind.PROPOSAL)
    assert proposal.payload["confidence"] == 0.97
    assert "_confidence" not in proposal.payload["arguments"]


def test_hallucinated_tool_and_broken_arguments_are_fed_back(openai_agent, llm_server, commit):  # noqa: F811
    llm_server.respond(body=completion(tool_call("wire_money", {"to": "acct"}, call_id="c1")))
    llm_server.respond(body=completion(tool_call("issue_refund", '{"order_id": "ORD-1003", "amount": ', call_id="c2")))
    llm_server.respond(body=completion({"role": "assistant", "content": "I could not do it."}))
    with commit():
        run = run_start(agent=openai_agent, input=refund_input(), actor=None)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    codes = [s.payload["code"] for s in run.steps.filter(kind=StepKind.GUARD).order_by("seq")]
    assert codes == ["unknown_tool", "invalid_arguments"]
    last_request = llm_server.requests[-1].body["messages"]
    fed_back = [json.loads(m["content"]) for m in last_request if m["role"] == "tool"]
    assert [f["outcome"] for f in fed_back] == ["refused", "refused"]
    assert "not valid JSON" in fed_back[1]["error"]


def test_rate_limit_then_success(openai_agent, llm_server, commit):  # noqa: F811
    llm_server.respond(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "1"})
    llm_server.respond(body=completion({"role": "assistant", "content": "Nothing to do."}))
    with commit():
        run = run_start(agent=openai_agent, input=refund_input(), actor=None)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    errors = [s.payload.get("error") for s in run.steps.filter(kind=StepKind.LLM_CALL).order_by("seq")]
    assert errors == ["rate_limited", None]


def test_a_missing_key_fails_the_run_with_a_clear_reason(openai_agent, llm_server, commit, monkeypatch):  # noqa: F811
    monkeypatch.delenv("COUNTERSIGN_SECRET_TEST_OPENAI")
    with commit():
        run = run_start(agent=openai_agent, input=refund_input(), actor=None)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.halt_reason == "provider configuration: environment variable COUNTERSIGN_SECRET_TEST_OPENAI is not set"
    assert llm_server.requests == []
