"""The OpenAI-compatible provider against a real HTTP server on loopback.

The server plays back scripted behaviours (a response, or a hang) and records
what the provider sent, so each test asserts on the real wire exchange.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agents.providers import (
    FinalAnswer,
    ProviderError,
    ProviderSettings,
    RunContext,
    ToolCallProposal,
    ToolSpec,
    _load_builtin,
    provider_for,
)
from agents.providers.openai import OpenAIProvider

API_KEY = "sk-test-secret-7f3a9c"

REFUND_TOOL = ToolSpec(
    name="issue_refund",
    description="Refund part or all of an order.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
        "required": ["order_id", "amount"],
    },
)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeLLMServer:
    url: str
    behaviours: deque[dict[str, Any]] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def respond(self, status: int = 200, body: Any = None, *, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.behaviours.append({"status": status, "body": raw, "headers": headers or {}})

    def hang(self, seconds: float = 2.0) -> None:
        self.behaviours.append({"hang": seconds})


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server_state: FakeLLMServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            server_state.requests.append(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            behaviour = server_state.behaviours.popleft()
            if "hang" in behaviour:
                # Outlast the client's timeout; teardown releases it early.
                server_state.release.wait(behaviour["hang"])
                return
            try:
                self.send_response(behaviour["status"])
                for name, value in behaviour["headers"].items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(behaviour["body"])))
                self.end_headers()
                self.wfile.write(behaviour["body"])
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state = FakeLLMServer(url=f"http://127.0.0.1:{server.server_address[1]}/v1/")
    # A short poll interval keeps shutdown(), and so each test, fast.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server_state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def context_for(
    url: str,
    *,
    api_key: str = API_KEY,
    history: list[dict[str, Any]] | None = None,
    tools: list[ToolSpec] | None = None,
    timeout: float = 5.0,
) -> RunContext:
    return RunContext(
        agent_slug="refund-triage",
        system_prompt="You triage refund tickets.",
        input={"ticket": "The kettle arrived broken.", "order_id": "ORD-1001", "amount": 40},
        settings=ProviderSettings(model="gpt-test", base_url=url, api_key=api_key, timeout=timeout),
        tools=[REFUND_TOOL] if tools is None else tools,
        history=history or [],
    )


def completion(
    message: dict[str, Any],
    *,
    usage: dict[str, int] | None = None,
    logprobs: list[float] | None = None,
    model: str = "gpt-test-2024",
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": lp} for lp in logprobs]}
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "model": model, "choices": [choice]}
    if usage is not None:
        body["usage"] = usage
    return body


def tool_call(name: str, arguments: Any, call_id: str = "call_abc") -> dict[str, Any]:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}],
    }


def propose_expecting_error(context: RunContext) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        OpenAIProvider().propose(context)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in caught.value.message
    return caught.value


def test_it_parses_a_tool_call_and_strips_confidence_and_rationale(llm_server):
    llm_server.respond(
        body=completion(
            tool_call(
                "issue_refund",
                {"order_id": "ORD-1001", "amount": 40, "_confidence": 0.92, "_rationale": "The kettle is broken."},
            )
        )
    )

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert result.proposal == ToolCallProposal(
        tool="issue_refund",
        arguments={"order_id": "ORD-1001", "amount": 40},
        confidence=0.92,
        rationale="The kettle is broken.",
        call_id="call_abc",
    )
    assert result.model == "gpt-test-2024"


def test_it_posts_to_chat_completions_with_the_bearer_token_and_tools(llm_server):
    llm_server.respond(body=completion({"role": "assistant", "content": "done"}))

    result = OpenAIProvider().propose(context_for(llm_server.url))

    sent = llm_server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body["model"] == "gpt-test"
    assert sent.body["tool_choice"] == "auto"
    assert sent.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "issue_refund",
                "description": "Refund part or all of an order.",
                "parameters": REFUND_TOOL.parameters,
            },
        }
    ]
    system, user = sent.body["messages"]
    assert system["role"] == "system"
    assert system["content"].startswith("You triage refund tickets.")
    assert "_confidence" in system["content"]
    assert "_rationale" in system["content"]
    assert user == {"role": "user", "content": json.dumps(context_for(llm_server.url).input)}
    assert result.request == sent.body


def test_it_sends_no_authorization_header_without_an_api_key(llm_server):
    llm_server.respond(body=completion({"role": "assistant", "content": "done"}))

    OpenAIProvider().propose(context_for(llm_server.url, api_key=""))

    assert "authorization" not in llm_server.requests[0].headers


def test_it_omits_tools_and_tool_choice_when_the_agent_has_no_tools(llm_server):
    llm_server.respond(body=completion({"role": "assistant", "content": "done"}))

    OpenAIProvider().propose(context_for(llm_server.url, tools=[]))

    assert "tools" not in llm_server.requests[0].body
    assert "tool_choice" not in llm_server.requests[0].body


def test_it_replays_history_as_an_assistant_tool_call_and_a_tool_message(llm_server):
    llm_server.respond(body=completion({"role": "assistant", "content": "Refund issued."}))
    history = [
        {
            "call_id": "call_9f2",
            "tool": "issue_refund",
            "arguments": {"order_id": "ORD-1001", "amount": 40},
            "outcome": "executed",
            "result": {"refund_id": 7},
        },
        {"call_id": "", "tool": "issue_refund", "arguments": "{bad", "outcome": "refused", "error": "not JSON"},
    ]

    OpenAIProvider().propose(context_for(llm_server.url, history=history))

    messages = llm_server.requests[0].body["messages"]
    assert len(messages) == 6
    assert messages[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9f2",
                "type": "function",
                "function": {"name": "issue_refund", "arguments": json.dumps({"order_id": "ORD-1001", "amount": 40})},
            }
        ],
    }
    assert messages[3] == {
        "role": "tool",
        "tool_call_id": "call_9f2",
        "content": json.dumps({"outcome": "executed", "result": {"refund_id": 7}}),
    }
    # An entry without a call id gets one from its position; raw-string arguments go back verbatim.
    assert messages[4]["tool_calls"][0]["id"] == "call_1"
    assert messages[4]["tool_calls"][0]["function"]["arguments"] == "{bad"
    assert messages[5] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": json.dumps({"outcome": "refused", "error": "not JSON"}),
    }


def test_it_returns_a_final_answer_when_there_are_no_tool_calls(llm_server):
    llm_server.respond(body=completion({"role": "assistant", "content": "Refund issued for ORD-1001."}))

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert result.proposal == FinalAnswer("Refund issued for ORD-1001.")


def test_a_final_answer_with_null_content_is_empty_text(llm_server):
    llm_server.respond(body=completion({"role": "assistant", "content": None}))

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert result.proposal == FinalAnswer("")


def test_it_reports_token_usage_and_the_parsed_response(llm_server):
    body = completion(
        {"role": "assistant", "content": "ok"},
        usage={"prompt_tokens": 123, "completion_tokens": 45, "total_tokens": 168},
    )
    llm_server.respond(body=body)

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert result.usage.prompt_tokens == 123
    assert result.usage.completion_tokens == 45
    assert result.usage.total_tokens == 168
    assert result.response == body


def test_missing_usage_counts_as_zero_tokens_and_the_model_falls_back_to_the_setting(llm_server):
    body = completion({"role": "assistant", "content": "ok"})
    del body["model"]
    llm_server.respond(body=body)

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert result.usage.total_tokens == 0
    assert result.model == "gpt-test"


def test_confidence_comes_from_logprobs_when_the_model_does_not_state_it(llm_server):
    llm_server.respond(
        body=completion(tool_call("issue_refund", {"order_id": "ORD-1001", "amount": 40}), logprobs=[-0.1, -0.3, -0.2])
    )

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert isinstance(result.proposal, ToolCallProposal)
    assert result.proposal.confidence == pytest.approx(math.exp(-0.2))
    assert result.proposal.rationale == ""


def test_a_stated_confidence_outside_zero_to_one_is_ignored_for_logprobs(llm_server):
    llm_server.respond(
        body=completion(tool_call("issue_refund", {"amount": 40, "_confidence": 7}), logprobs=[-0.5, -0.5])
    )

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert isinstance(result.proposal, ToolCallProposal)
    assert result.proposal.confidence == pytest.approx(math.exp(-0.5))
    assert result.proposal.arguments == {"amount": 40}


def test_confidence_defaults_to_zero_with_neither_a_stated_value_nor_logprobs(llm_server):
    llm_server.respond(body=completion(tool_call("issue_refund", {"order_id": "ORD-1001", "_confidence": "high"})))

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert isinstance(result.proposal, ToolCallProposal)
    assert result.proposal.confidence == 0.0
    assert result.proposal.arguments == {"order_id": "ORD-1001"}


def test_a_body_that_is_not_json_is_a_malformed_response(llm_server):
    llm_server.respond(body=b"<html>gateway says hi</html>")

    error = propose_expecting_error(context_for(llm_server.url))

    assert error.code == "malformed_response"
    assert error.transient is False


def test_a_json_body_without_choices_is_a_malformed_response(llm_server):
    llm_server.respond(body={"id": "chatcmpl-1", "object": "chat.completion"})

    error = propose_expecting_error(context_for(llm_server.url))

    assert error.code == "malformed_response"
    assert error.transient is False


def test_a_tool_the_agent_does_not_have_is_proposed_as_is_for_the_guard_to_refuse(llm_server):
    llm_server.respond(body=completion(tool_call("drop_database", {"_confidence": 0.99, "_rationale": "why not"})))

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert result.proposal == ToolCallProposal(
        tool="drop_database", arguments={}, confidence=0.99, rationale="why not", call_id="call_abc"
    )


def test_arguments_that_are_not_json_are_kept_as_the_raw_string(llm_server):
    llm_server.respond(body=completion(tool_call("issue_refund", '{"order_id": "ORD-1001", amount: forty}')))

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert isinstance(result.proposal, ToolCallProposal)
    assert result.proposal.arguments == '{"order_id": "ORD-1001", amount: forty}'
    assert result.proposal.confidence == 0.0


def test_arguments_that_are_json_but_not_an_object_are_kept_as_the_raw_string(llm_server):
    llm_server.respond(body=completion(tool_call("issue_refund", "[1, 2]")))

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert isinstance(result.proposal, ToolCallProposal)
    assert result.proposal.arguments == "[1, 2]"


def test_only_the_first_of_parallel_tool_calls_is_proposed(llm_server):
    message = tool_call("issue_refund", {"amount": 1}, call_id="first")
    message["tool_calls"].append(
        {"id": "second", "type": "function", "function": {"name": "issue_refund", "arguments": "{}"}}
    )
    llm_server.respond(body=completion(message))

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert isinstance(result.proposal, ToolCallProposal)
    assert result.proposal.call_id == "first"


def test_a_429_is_rate_limited_and_transient_with_the_retry_after_hint(llm_server):
    llm_server.respond(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "7"})

    error = propose_expecting_error(context_for(llm_server.url))

    assert error.code == "rate_limited"
    assert error.transient is True
    assert error.retry_after == 7


def test_a_retry_after_given_as_an_http_date_becomes_seconds(llm_server):
    when = datetime.now(UTC) + timedelta(seconds=30)
    llm_server.respond(429, {}, headers={"Retry-After": format_datetime(when, usegmt=True)})

    error = propose_expecting_error(context_for(llm_server.url))

    assert error.retry_after is not None
    assert 20 <= error.retry_after <= 31


def test_a_429_without_a_usable_retry_after_has_no_hint(llm_server):
    llm_server.respond(429, {}, headers={"Retry-After": "soon"})

    error = propose_expecting_error(context_for(llm_server.url))

    assert error.code == "rate_limited"
    assert error.retry_after is None


def test_a_500_is_a_transient_server_error(llm_server):
    llm_server.respond(500, {"error": {"message": "overloaded"}})

    error = propose_expecting_error(context_for(llm_server.url))

    assert error.code == "server_error"
    assert error.transient is True
    assert error.retry_after is None
    assert "overloaded" in error.message


def test_a_400_is_permanent_and_carries_the_servers_message(llm_server):
    llm_server.respond(400, {"error": {"message": "tools[0].function.parameters is invalid", "type": "invalid"}})

    error = propose_expecting_error(context_for(llm_server.url))

    assert error.code == "http_400"
    assert error.transient is False
    assert "tools[0].function.parameters is invalid" in error.message


def test_a_hung_connection_is_a_transient_timeout(llm_server):
    llm_server.hang(seconds=2.0)

    error = propose_expecting_error(context_for(llm_server.url, timeout=0.3))

    assert error.code == "timeout"
    assert error.transient is True


def test_a_port_with_nothing_listening_is_unreachable():
    # Bound but not listening: connections are refused, and no one else can take the port meanwhile.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"

        error = propose_expecting_error(context_for(url, timeout=2.0))

    assert error.code == "unreachable"
    assert error.transient is True


def test_the_api_key_appears_in_neither_the_recorded_request_nor_the_response(llm_server):
    llm_server.respond(body=completion({"role": "assistant", "content": f"your key is {API_KEY}"}))

    result = OpenAIProvider().propose(context_for(llm_server.url))

    assert llm_server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in json.dumps(result.request)
    assert API_KEY not in json.dumps(result.response)


def test_an_error_that_echoes_the_api_key_does_not_leak_it(llm_server):
    llm_server.respond(401, {"error": {"message": f"Incorrect API key provided: {API_KEY}"}})

    error = propose_expecting_error(context_for(llm_server.url))

    assert error.code == "http_401"
    assert "Incorrect API key provided" in error.message


def test_the_provider_is_registered_as_openai():
    # Loaded explicitly: `provider_for` skips the built-ins once any test has registered a provider.
    _load_builtin()

    assert isinstance(provider_for("openai"), OpenAIProvider)
