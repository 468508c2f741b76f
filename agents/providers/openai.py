"""The OpenAI-compatible provider: chat completions with tool calling.

Speaks the `/chat/completions` protocol that OpenAI, vLLM, Ollama, llama.cpp
and most gateways share. The model proposes one tool call (or a final answer);
whether that call runs, waits for a human or is refused is decided elsewhere,
so this module only translates between a `RunContext` and the wire format.

It never retries or sleeps: a transient `ProviderError` goes back to the
runtime, which reschedules the run instead of holding a worker.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from agents.providers import (
    FinalAnswer,
    ProviderError,
    ProviderResult,
    RunContext,
    ToolCallProposal,
    Usage,
)

CONFIDENCE_INSTRUCTION = (
    "Every time you call a tool, add two extra fields to its arguments: "
    '"_confidence", a number from 0 to 1 saying how sure you are that this call is the right one, '
    'and "_rationale", one or two sentences explaining why you are making it. '
    "A person may review the call before it runs, so be honest about doubt."
)


class OpenAIProvider:
    """Proposes the next step by asking an OpenAI-compatible chat-completions server."""

    def propose(self, context: RunContext) -> ProviderResult:
        settings = context.settings
        secret = settings.api_key
        base_url = settings.base_url.rstrip("/")
        if not base_url:
            # Retrying cannot fix a missing URL, so this is not transient.
            raise ProviderError("misconfigured", "the openai provider needs a base_url")
        url = f"{base_url}/chat/completions"
        body = build_request_body(context)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}

        try:
            with httpx.Client(timeout=httpx.Timeout(settings.timeout)) as client:
                response = client.post(url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise ProviderError(
                "timeout", _redact(f"{url} did not answer within {settings.timeout}s", secret), transient=True
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ProviderError("misconfigured", _redact(f"bad base_url {base_url!r}: {exc}", secret)) from exc
        except httpx.TransportError as exc:
            # Connect, read and protocol failures alike: a later attempt may get
            # through, and a chat completion has no side effect to duplicate.
            raise ProviderError(
                "unreachable", _redact(f"could not reach {url}: {type(exc).__name__}: {exc}", secret), transient=True
            ) from exc

        _raise_for_status(response, secret)

        try:
            payload = response.json()
        except ValueError as exc:
            raise ProviderError(
                "malformed_response", _redact(f"the response is not JSON: {response.text[:200]!r}", secret)
            ) from exc
        message = _first_message(payload)
        if message is None:
            detail = _error_message(payload) or "no choices[0].message"
            raise ProviderError("malformed_response", _redact(f"the response has {detail}", secret))

        choice = payload["choices"][0]
        model = payload.get("model")
        usage: dict[str, Any] = payload["usage"] if isinstance(payload.get("usage"), dict) else {}
        return ProviderResult(
            proposal=_proposal_from(message, choice),
            usage=Usage(
                prompt_tokens=_as_int(usage.get("prompt_tokens")),
                completion_tokens=_as_int(usage.get("completion_tokens")),
            ),
            model=model if isinstance(model, str) and model else settings.model,
            request=body,
            # Parsing above used the original; only the recorded copy is scrubbed,
            # in case a server echoes the key back.
            response=_redact_json(payload, secret),
        )


def build_request_body(context: RunContext) -> dict[str, Any]:
    """The JSON body of a chat-completions request for this point in the run."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"{context.system_prompt}\n\n{CONFIDENCE_INSTRUCTION}".lstrip()},
        {"role": "user", "content": json.dumps(context.input, default=str)},
    ]
    for i, entry in enumerate(context.history):
        call_id = entry.get("call_id") or f"call_{i}"
        arguments = entry.get("arguments")
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": entry.get("tool", ""),
                            "arguments": arguments
                            if isinstance(arguments, str)
                            else json.dumps(arguments, default=str),
                        },
                    }
                ],
            }
        )
        outcome: dict[str, Any] = {"outcome": entry.get("outcome")}
        if "error" in entry:
            outcome["error"] = entry["error"]
        else:
            outcome["result"] = entry.get("result")
        messages.append({"role": "tool", "tool_call_id": call_id, "content": json.dumps(outcome, default=str)})

    body: dict[str, Any] = {"model": context.settings.model, "messages": messages}
    if context.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
            }
            for tool in context.tools
        ]
        body["tool_choice"] = "auto"
    return body


def _proposal_from(message: dict[str, Any], choice: dict[str, Any]) -> ToolCallProposal | FinalAnswer:
    tool_calls = message.get("tool_calls")
    if not isinstance(tool_calls, list) or not tool_calls:
        content = message.get("content")
        return FinalAnswer(content if isinstance(content, str) else "")

    # Parallel tool calls are not supported yet: only the first call is
    # proposed and the rest are ignored; the model sees the outcome and may
    # ask for the others on its next turn.
    call: dict[str, Any] = tool_calls[0] if isinstance(tool_calls[0], dict) else {}
    function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
    name = function.get("name")
    arguments = _parse_arguments(function.get("arguments"))

    stated_confidence: Any = None
    rationale: Any = ""
    if isinstance(arguments, dict):
        stated_confidence = arguments.pop("_confidence", None)
        rationale = arguments.pop("_rationale", "")

    call_id = call.get("id")
    return ToolCallProposal(
        # An unknown or missing tool name is passed on as-is: the guard refuses it.
        tool=name if isinstance(name, str) else "",
        arguments=arguments,
        confidence=_confidence(stated_confidence, choice),
        rationale=rationale if isinstance(rationale, str) else "",
        call_id=call_id if isinstance(call_id, str) else "",
    )


def _parse_arguments(raw: Any) -> Any:
    # Arguments that are not a JSON object stay as the raw text: the guard
    # refuses them with a reason a reviewer can read, instead of the run failing here.
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        return "" if raw is None else json.dumps(raw)
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    return parsed if isinstance(parsed, dict) else raw


def _confidence(stated: Any, choice: dict[str, Any]) -> float:
    if _is_number(stated) and 0.0 <= stated <= 1.0:
        return float(stated)
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if isinstance(content, list):
        values = [t["logprob"] for t in content if isinstance(t, dict) and _is_number(t.get("logprob"))]
        if values:
            return min(max(math.exp(sum(values) / len(values)), 0.0), 1.0)
    # Fail safe: with no signal, low confidence sends the call to a person.
    return 0.0


def _raise_for_status(response: httpx.Response, secret: str) -> None:
    status = response.status_code
    if status < 300:
        return
    detail = _redact(_describe_error(response), secret)
    if status == 429:
        raise ProviderError("rate_limited", detail, transient=True, retry_after=_retry_after(response))
    if status >= 500:
        raise ProviderError("server_error", detail, transient=True, retry_after=_retry_after(response))
    raise ProviderError(f"http_{status}", detail)


def _describe_error(response: httpx.Response) -> str:
    prefix = f"HTTP {response.status_code}"
    try:
        message = _error_message(response.json())
    except ValueError:
        message = None
    if message:
        return f"{prefix}: {message}"
    text = response.text.strip()
    return f"{prefix}: {text[:200]}" if text else prefix


def _error_message(payload: Any) -> str | None:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _first_message(payload: Any) -> dict[str, Any] | None:
    if not isinstance(payload, dict):
        return None
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    return message if isinstance(message, dict) else None


def _is_number(value: Any) -> bool:
    # bool is an int subclass; `true` is not a confidence.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "[redacted]") if secret else text


def _redact_json(value: Any, secret: str) -> Any:
    if not secret:
        return value
    if isinstance(value, str):
        return _redact(value, secret)
    if isinstance(value, list):
        return [_redact_json(item, secret) for item in value]
    if isinstance(value, dict):
        return {_redact(str(key), secret): _redact_json(item, secret) for key, item in value.items()}
    return value
