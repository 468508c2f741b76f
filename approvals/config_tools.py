"""The tools that carry out configuration changes a second admin approved (four eyes, tier 0).

They are `internal`: no agent can be given them, so the guard refuses them to models; the
only way one runs is as the execution of an approved proposal (approvals.four_eyes).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from agents.configuration import _validate, apply_change, prompt_activate, prompt_reject
from agents.models import Agent, AgentTool, PromptVersion
from agents.tools import Impact, Tool, ToolContext, ToolError, register
from audit.services import Actor
from core.errors import DomainError


class ConfigChangeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: dict[str, Any] = {}
    tools: dict[str, dict[str, Any]] = {}
    # What argued for the change (the threshold advisor's numbers), audited with it.
    evidence: dict[str, Any] | None = None


def apply_agent_config(args: ConfigChangeArgs, context: ToolContext) -> dict[str, Any]:
    """Execute an approved configuration change (four eyes): re-validated, then written."""

    agent = Agent.objects.get(pk=context.agent_id)
    current = {t.tool: t for t in AgentTool.objects.filter(agent=agent)}
    try:
        _validate(agent, args.agent, current, args.tools)
    except DomainError as exc:
        raise ToolError("invalid_config", exc.message) from exc
    apply_change(
        agent=agent,
        change={"agent": args.agent, "tools": args.tools},
        actor=_four_eyes(context),
        evidence=args.evidence,
    )
    return {"applied": True, "agent": list(args.agent), "tools": list(args.tools)}


def _four_eyes(context: ToolContext) -> Actor:
    """The audit actor of an approved configuration change: who proposed it and who approved it."""
    return Actor.system(f"four eyes: {context.proposed_by or '?'} + {context.approved_by or '?'}")


class ActivatePromptArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    number: int


def activate_prompt(args: ActivatePromptArgs, context: ToolContext) -> dict[str, Any]:

    version = PromptVersion.objects.filter(pk=args.version, status="proposed").first()
    if version is None:
        raise ToolError("not_proposed", f"prompt version {args.number} is no longer waiting to be activated")
    prompt_activate(version=version, actor=_four_eyes(context))
    return {"active": version.number}


def decline_prompt(args: ActivatePromptArgs, actor: Any) -> None:

    prompt_reject(version_id=args.version, actor=actor)


APPLY_AGENT_CONFIG = register(
    Tool(
        name="apply_agent_config",
        description="Apply an approved configuration change to an agent (four eyes).",
        args_model=ConfigChangeArgs,
        impact=Impact.WRITE,
        execute=apply_agent_config,
        internal=True,
    )
)
ACTIVATE_PROMPT = register(
    Tool(
        name="activate_prompt",
        description="Make an approved prompt version the active one (four eyes).",
        args_model=ActivatePromptArgs,
        impact=Impact.WRITE,
        execute=activate_prompt,
        declined=decline_prompt,
        internal=True,
    )
)
