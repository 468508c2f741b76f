"""Tools the runtime itself provides: `delegate` lets a coordinator start a worker agent's run."""

from __future__ import annotations

from typing import Annotated, Any

from django.contrib.auth.models import User
from pydantic import BaseModel, ConfigDict, Field

from agents.configuration import _validate, apply_change, prompt_activate, prompt_reject
from agents.models import Agent, AgentTool, PromptVersion, Run, RunPriority
from agents.services import run_start
from agents.tools import Impact, Tool, ToolContext, ToolError, register
from audit.services import Actor
from core.errors import DomainError


class DelegateArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: Annotated[str, Field(pattern=r"^[-a-zA-Z0-9_]+$", max_length=50, description="Worker agent's slug")]
    input: dict[str, Any]
    urgent: bool = False


MAX_DELEGATION_DEPTH = 3


def delegate(args: DelegateArgs, context: ToolContext) -> dict[str, Any]:

    existing = Run.objects.filter(parent_action_id=context.action_id).first()
    if existing is not None:
        return {"subrun": existing.pk, "agent": args.agent}
    worker = Agent.objects.filter(slug=args.agent).first()
    if worker is None:
        raise ToolError("unknown_agent", f"there is no agent {args.agent!r}")
    if worker.pk == context.agent_id:
        raise ToolError("self_delegation", "an agent cannot delegate to itself")
    # Whoever started the coordinator's work must be allowed to start the worker's:
    # delegation must not widen what a person can make happen.
    person = User.objects.filter(pk=context.requested_by_id).first() if context.requested_by_id else None
    if person is not None and not person.has_perm("agents.operate_agent", worker):
        raise ToolError("not_permitted", f"{person.get_username()} may not start runs of {worker.slug}")
    depth, run_id = 0, context.run_id
    while run_id is not None:
        # The run that delegated to this one, if any (through the action that started it).
        run_id = Run.objects.filter(pk=run_id).values_list("parent_action__run_id", flat=True).first()
        if run_id is None:
            break
        depth += 1
        if depth >= MAX_DELEGATION_DEPTH:
            raise ToolError("too_deep", f"delegation is limited to {MAX_DELEGATION_DEPTH} levels")
    try:
        child = run_start(
            agent=worker,
            input=args.input,
            actor=Actor.agent(Agent.objects.get(pk=context.agent_id)),
            priority=RunPriority.URGENT if args.urgent else RunPriority.ROUTINE,
            parent_action_id=context.action_id,
        )
    except DomainError as exc:
        raise ToolError(exc.code, exc.message) from exc
    return {"subrun": child.pk, "agent": worker.slug}


DELEGATE = register(
    Tool(
        name="delegate",
        description="Start a run of a worker agent and continue with its result when it finishes.",
        args_model=DelegateArgs,
        impact=Impact.WRITE,
        execute=delegate,
        defers_result=True,
    )
)


class ConfigChangeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: dict[str, Any] = {}
    tools: dict[str, dict[str, Any]] = {}


def apply_agent_config(args: ConfigChangeArgs, context: ToolContext) -> dict[str, Any]:
    """Execute an approved configuration change (four eyes): re-validated, then written."""

    agent = Agent.objects.get(pk=context.agent_id)
    current = {t.tool: t for t in AgentTool.objects.filter(agent=agent)}
    try:
        _validate(agent, args.agent, current, args.tools)
    except DomainError as exc:
        raise ToolError("invalid_config", exc.message) from exc
    apply_change(agent=agent, change={"agent": args.agent, "tools": args.tools}, actor=_four_eyes(context))
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


# Configuration tools are executed only for tier-0 proposals approved by a
# second admin; no agent has them enabled, so the guard refuses them to models.
APPLY_AGENT_CONFIG = register(
    Tool(
        name="apply_agent_config",
        description="Apply an approved configuration change to an agent (four eyes).",
        args_model=ConfigChangeArgs,
        impact=Impact.WRITE,
        execute=apply_agent_config,
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
    )
)
CONFIG_TOOLS = frozenset({"apply_agent_config", "activate_prompt"})
