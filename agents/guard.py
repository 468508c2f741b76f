"""The guard every proposed tool call passes before policy sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.models import Agent, AgentTool
from agents.tools import Tool, get_tool


@dataclass(frozen=True)
class GuardRefusal:
    code: str  # unknown_tool | tool_not_enabled | invalid_arguments
    message: str
    details: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class GuardPass:
    tool: Tool
    agent_tool: AgentTool
    args: BaseModel


def guard_tool_call(*, agent: Agent, tool_name: str, arguments: Any) -> GuardPass | GuardRefusal:
    """Refuse a call to a tool that does not exist, is not enabled, or gets bad arguments."""
    tool = get_tool(tool_name)
    if tool is None:
        return GuardRefusal("unknown_tool", f"there is no tool named {tool_name!r}")
    agent_tool = AgentTool.objects.filter(agent=agent, tool=tool_name, enabled=True).first()
    if agent_tool is None:
        return GuardRefusal("tool_not_enabled", f"tool {tool_name!r} is not enabled for agent {agent.slug!r}")
    args = validate_arguments(tool, arguments)
    if isinstance(args, GuardRefusal):
        return args
    return GuardPass(tool=tool, agent_tool=agent_tool, args=args)


def validate_arguments(tool: Tool, arguments: Any) -> BaseModel | GuardRefusal:
    if not isinstance(arguments, dict):
        return GuardRefusal("invalid_arguments", "arguments must be a JSON object")
    try:
        return tool.args_model.model_validate(arguments)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        summary = "; ".join(f"{d['field'] or '(arguments)'}: {d['message']}" for d in details)
        return GuardRefusal("invalid_arguments", f"arguments do not match {tool.name}: {summary}", details)
