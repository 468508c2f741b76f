"""The guard every proposed tool call passes before policy sees it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from agents.breakers import breaker_allows, tool_settings
from agents.injection import suspected_injection
from agents.models import Agent, AgentTool
from agents.tools import ArgumentsInvalid, Tool, get_tool
from core.canonical import NotCanonical, canonical_json

# Risk flags a passing call may carry; any flag forces review.
FLAG_INJECTION = "prompt_injection_suspected"
FLAG_OVER_LIMIT = "over_magnitude_limit"


@dataclass(frozen=True)
class GuardRefusal:
    # unknown_tool | tool_not_enabled | invalid_arguments | over_limit | breaker_open
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class GuardPass:
    tool: Tool
    agent_tool: AgentTool
    args: Any
    magnitude: Decimal
    flags: list[str] = field(default_factory=list)
    flag_reasons: list[str] = field(default_factory=list)


def guard_tool_call(
    *, agent: Agent, tool_name: str, arguments: Any, untrusted: tuple[Any, ...] = ()
) -> GuardPass | GuardRefusal:
    """Refuse a call to a tool that does not exist, is not enabled, is broken, gets bad
    arguments or exceeds its hard limit; flag one that looks steered by injected text."""
    tool = get_tool(tool_name)
    if tool is None:
        return GuardRefusal("unknown_tool", f"there is no tool named {tool_name!r}")
    if tool.suspended:
        return GuardRefusal("tool_suspended", tool.suspended)
    # Whether the tool's breaker is quiet comes with it (one query on the hot path); only a breaker that
    # is not is read again, and moved, by breaker_allows.
    agent_tool = tool_settings.first(agent_id=agent.pk, tool=tool_name)
    if agent_tool is None or not agent_tool.enabled:
        return GuardRefusal("tool_not_enabled", f"tool {tool_name!r} is not enabled for agent {agent.slug!r}")
    args = validate_arguments(tool, arguments)
    if isinstance(args, GuardRefusal):
        return args
    if not agent_tool.breaker_quiet and not breaker_allows(agent, tool_name):
        return GuardRefusal("breaker_open", f"tool {tool_name!r} is unavailable: its circuit breaker is open")
    magnitude = _magnitude(tool, args)
    if isinstance(magnitude, GuardRefusal):
        return magnitude

    flags: list[str] = []
    reasons: list[str] = []
    over = _over_limit(tool, agent_tool, magnitude)
    if over is not None and agent_tool.over_limit == "deny":
        return GuardRefusal("over_limit", over)
    if over is not None:
        flags.append(FLAG_OVER_LIMIT)
        reasons.append(over)
    fragment = suspected_injection(arguments, *untrusted)
    if fragment:
        flags.append(FLAG_INJECTION)
        reasons.append(f"untrusted input looks like a prompt injection ({fragment[:60]!r})")
    if tool.flagged:
        flags.append(FLAG_INJECTION)
        reasons.append(tool.flagged)
    return GuardPass(
        tool=tool, agent_tool=agent_tool, args=args, magnitude=magnitude, flags=flags, flag_reasons=reasons
    )


def guard_edited_call(*, agent: Agent, tool_name: str, arguments: Any) -> GuardPass | GuardRefusal:
    """A reviewer's edited arguments: the agent's own checks (schema, hard limit) and the
    tool's own validation against the world, so a wrong field is refused before anything changes."""
    tool = get_tool(tool_name)
    if tool is None:
        return GuardRefusal("unknown_tool", f"tool {tool_name!r} no longer exists")
    if tool.suspended:
        return GuardRefusal("tool_suspended", tool.suspended)
    agent_tool = AgentTool.objects.filter(agent=agent, tool=tool_name).first()
    if agent_tool is None:
        return GuardRefusal("tool_not_enabled", f"tool {tool_name!r} is not configured for agent {agent.slug!r}")
    args = validate_arguments(tool, arguments)
    if isinstance(args, GuardRefusal):
        return args
    problems = tool.validate(args) if tool.validate is not None else []
    if problems:
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return GuardRefusal("invalid_arguments", f"arguments do not fit {tool.name}: {summary}", problems)
    magnitude = _magnitude(tool, args)
    if isinstance(magnitude, GuardRefusal):
        return magnitude
    over = _over_limit(tool, agent_tool, magnitude)
    if over is not None and agent_tool.over_limit == "deny":
        return GuardRefusal("over_limit", over)
    return GuardPass(
        tool=tool,
        agent_tool=agent_tool,
        args=args,
        magnitude=magnitude,
        flags=[FLAG_OVER_LIMIT] if over else [],
        flag_reasons=[over] if over else [],
    )


# The magnitude columns (ActionRequest.magnitude, AgentTool's limits) hold 14 digits, 2 of them decimals.
MAGNITUDE_BOUND = Decimal(10) ** 12
CENTS = Decimal("0.01")


def _magnitude(tool: Tool, args: Any) -> Decimal | GuardRefusal:
    """How big the call is, as it is recorded; refused when it cannot be (not a number, or too large)."""
    magnitude = tool.magnitude(args)
    if magnitude.is_finite() and abs(magnitude) < MAGNITUDE_BOUND:
        magnitude = magnitude.quantize(CENTS)
        if abs(magnitude) < MAGNITUDE_BOUND:
            return magnitude
    return GuardRefusal(
        "invalid_arguments",
        f"the size of this call ({magnitude:.6g}) is not a number below 10^12, the most Countersign records",
    )


def _over_limit(tool: Tool, agent_tool: AgentTool, magnitude: Decimal) -> str | None:
    limit = agent_tool.max_magnitude
    if limit is not None and magnitude > limit:
        return f"magnitude {magnitude} exceeds the hard limit {limit} for {tool.name}"
    return None


def validate_arguments(tool: Tool, arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError) as exc:
            return GuardRefusal("invalid_arguments", f"arguments are not valid JSON: {exc}")
    if not isinstance(arguments, dict):
        return GuardRefusal("invalid_arguments", "arguments must be a JSON object")
    try:
        parsed = tool.parse(arguments)
    except ArgumentsInvalid as exc:
        return GuardRefusal("invalid_arguments", f"arguments do not match {tool.name}: {exc}", exc.details)
    if tool.caller_executes:
        # A grant binds the call by its canonical digest: arguments without one cannot be granted.
        try:
            canonical_json(arguments)
        except NotCanonical as exc:
            return GuardRefusal(
                "invalid_arguments", f"arguments of {tool.name} cannot be bound to a grant: {exc}; send it as a string"
            )
    return parsed
