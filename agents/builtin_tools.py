"""Tools the runtime itself provides: `delegate` lets a coordinator start a worker agent's run."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from agents.errors import DomainError
from agents.models import Agent, Run, RunPriority
from agents.tools import Impact, Tool, ToolError, register
from audit.services import Actor


class DelegateArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: Annotated[str, Field(pattern=r"^[-a-zA-Z0-9_]+$", max_length=50, description="Worker agent's slug")]
    input: dict[str, Any]
    urgent: bool = False


def action_id_from_key(idempotency_key: str) -> int:
    # Execution keys are "action-<id>" (approvals.services._schedule_execution).
    return int(idempotency_key.removeprefix("action-"))


def delegate(args: DelegateArgs, idempotency_key: str) -> dict[str, Any]:
    from agents.services import run_start
    from approvals.models import ActionRequest

    action = ActionRequest.objects.select_related("agent").get(pk=action_id_from_key(idempotency_key))
    existing = Run.objects.filter(parent_action=action).first()
    if existing is not None:
        return {"subrun": existing.pk, "agent": args.agent}
    worker = Agent.objects.filter(slug=args.agent).first()
    if worker is None:
        raise ToolError("unknown_agent", f"there is no agent {args.agent!r}")
    if worker.pk == action.agent_id:
        raise ToolError("self_delegation", "an agent cannot delegate to itself")
    try:
        child = run_start(
            agent=worker,
            input=args.input,
            actor=Actor.agent(action.agent),
            priority=RunPriority.URGENT if args.urgent else RunPriority.ROUTINE,
            parent_action=action,
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
