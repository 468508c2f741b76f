"""The `delegate` tool: a coordinator's action starts a worker agent's run and finishes with its result.

The link points down, from the action to the run it started (`ActionRequest.subrun`);
the coordinator's run waits, holding no worker, and `runtime.services.run_finished`
hands the sub-run's result back to it.
"""

from __future__ import annotations

from typing import Annotated, Any

from django.contrib.auth.models import User
from pydantic import BaseModel, ConfigDict, Field

from agents.models import Agent, RunPriority
from agents.services import run_start
from agents.tools import Impact, Tool, ToolContext, ToolError, register
from approvals.models import ActionRequest
from audit.services import Actor
from core.errors import DomainError

MAX_DELEGATION_DEPTH = 3


class DelegateArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: Annotated[str, Field(pattern=r"^[-a-zA-Z0-9_]+$", max_length=50, description="Worker agent's slug")]
    input: dict[str, Any]
    urgent: bool = False


def delegate(args: DelegateArgs, context: ToolContext) -> dict[str, Any]:
    action = ActionRequest.objects.select_related("agent", "subrun").get(pk=context.action_id)
    if action.subrun is not None:
        return {"subrun": action.subrun.pk, "agent": args.agent}
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
        run_id = ActionRequest.objects.filter(subrun_id=run_id).values_list("run_id", flat=True).first()
        if run_id is None:
            break
        depth += 1
        if depth >= MAX_DELEGATION_DEPTH:
            raise ToolError("too_deep", f"delegation is limited to {MAX_DELEGATION_DEPTH} levels")
    try:
        child = run_start(
            agent=worker,
            input=args.input,
            actor=Actor.agent(action.agent),
            priority=RunPriority.URGENT if args.urgent else RunPriority.ROUTINE,
            delegated_by=action.pk,
        )
    except DomainError as exc:
        raise ToolError(exc.code, exc.message) from exc
    # In the execution's transaction: the link and the run commit together, or neither.
    ActionRequest.objects.filter(pk=action.pk, subrun__isnull=True).update(subrun=child)
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
