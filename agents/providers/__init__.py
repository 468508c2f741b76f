"""LLM providers: given the run so far, propose a tool call or a final answer.

A provider gets a `RunContext` and returns a `ProviderResult`: the proposal plus
what the trace records of the call (request and response without secrets,
token usage, model). `scripted` is an offline, deterministic stand-in for an
LLM; `openai` speaks the OpenAI-compatible chat-completions protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments


@dataclass(frozen=True)
class ProviderSettings:
    model: str
    base_url: str = ""
    api_key: str = ""  # never copied into a trace
    timeout: float = 30.0


@dataclass(frozen=True)
class RunContext:
    agent_slug: str
    system_prompt: str
    input: dict[str, Any]
    settings: ProviderSettings
    tools: list[ToolSpec] = field(default_factory=list)
    # What each earlier tool call came to:
    # {"call_id", "tool", "arguments", "outcome", "result" | "error"}
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ToolCallProposal:
    tool: str
    arguments: Any  # a dict when the model sent valid JSON; the raw text otherwise
    confidence: float
    rationale: str
    call_id: str = ""


@dataclass(frozen=True)
class FinalAnswer:
    text: str


Proposal = ToolCallProposal | FinalAnswer


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ProviderResult:
    proposal: Proposal
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """The provider could not produce a proposal.

    `transient` errors (timeouts, 429, 5xx) may succeed later; `retry_after`
    is the server's hint in seconds when it gave one.
    """

    def __init__(self, code: str, message: str, *, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient
        self.retry_after = retry_after


class Provider(Protocol):
    def propose(self, context: RunContext) -> ProviderResult: ...


_providers: dict[str, Provider] = {}


def register_provider(name: str, provider: Provider) -> None:
    _providers[name] = provider


def provider_for(name: str) -> Provider:
    if name not in _providers:
        _load_builtin()
    try:
        return _providers[name]
    except KeyError:
        raise LookupError(f"no provider named {name!r}") from None


def _load_builtin() -> None:
    from agents.providers.openai import OpenAIProvider  # noqa: PLC0415  (they import this module)
    from agents.providers.scripted import ScriptedProvider  # noqa: PLC0415  (they import this module)

    _providers.setdefault("scripted", ScriptedProvider())
    _providers.setdefault("openai", OpenAIProvider())
