"""API endpoints for runs, and for actions submitted by agents running elsewhere."""

from __future__ import annotations

from typing import Any, Literal

from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from pydantic import Field

from agents import selectors, services
from agents.models import RunPriority
from approvals.schemas import ActionOut, action_out
from config.requests import ApiRequest

router = Router(tags=["runs"])


class RunCreateIn(Schema):
    input: dict[str, Any]
    priority: Literal["routine", "urgent"] = "routine"


class RunCreatedOut(Schema):
    id: int
    status: str


class RunOut(Schema):
    id: int
    agent: str
    status: str
    result: str
    halt_reason: str
    step_count: int
    created_at: Any
    finished_at: Any
    actions: list[ActionOut]


class StepOut(Schema):
    seq: int
    kind: str
    payload: dict[str, Any]
    latency_ms: float | None
    tokens_in: int
    tokens_out: int
    cost: str
    created_at: Any


class ActionSubmitIn(Schema):
    tool: str = Field(min_length=1, max_length=100)
    arguments: dict[str, Any]
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str = Field(default="", max_length=10000)


@router.post("/agents/{slug}/runs", response={201: RunCreatedOut}, summary="Start a run")
def create_run(request: ApiRequest, slug: str, payload: RunCreateIn) -> Status[dict[str, Any]]:
    agent = get_object_or_404(selectors.agents_with_perm(request.auth, "operate_agent"), slug=slug)
    priority = RunPriority.URGENT if payload.priority == "urgent" else RunPriority.ROUTINE
    run = services.run_start(agent=agent, input=payload.input, actor=request.auth, priority=priority)
    return Status(201, {"id": run.pk, "status": run.status})


@router.get("/runs/{run_id}", response=RunOut, summary="A run with its actions")
def get_run(request: ApiRequest, run_id: int) -> dict[str, Any]:
    run = get_object_or_404(selectors.runs_visible_to(request.auth), pk=run_id)
    actions = run.actions.select_related("agent", "decision__reviewer").order_by("id")
    return {
        "id": run.pk,
        "agent": run.agent.slug,
        "status": run.status,
        "result": run.result,
        "halt_reason": run.halt_reason,
        "step_count": run.step_count,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "actions": [action_out(a) for a in actions],
    }


@router.post(
    "/agents/{slug}/actions",
    response={201: ActionOut},
    summary="Submit a tool call for guard, policy and (if needed) review",
)
def submit_action(request: ApiRequest, slug: str, payload: ActionSubmitIn) -> Status[dict[str, Any]]:
    from approvals.services import route_tool_call

    agent = get_object_or_404(selectors.agents_with_perm(request.auth, "operate_agent"), slug=slug)
    outcome = route_tool_call(
        agent=agent,
        run=None,
        tool=payload.tool,
        arguments=payload.arguments,
        confidence=payload.confidence,
        rationale=payload.rationale,
        actor=request.auth,
    )
    assert outcome.action is not None  # a refusal without a run raises InvalidInput
    outcome.action.refresh_from_db()
    return Status(201, action_out(outcome.action))


@router.get("/runs/{run_id}/trace", response=list[StepOut], summary="A run's trace, step by step")
def get_trace(request: ApiRequest, run_id: int) -> list[dict[str, Any]]:
    run = get_object_or_404(selectors.runs_visible_to(request.auth), pk=run_id)
    return [
        {
            "seq": s.seq,
            "kind": s.kind,
            "payload": s.payload,
            "latency_ms": s.latency_ms,
            "tokens_in": s.tokens_in,
            "tokens_out": s.tokens_out,
            "cost": str(s.cost),
            "created_at": s.created_at,
        }
        for s in selectors.run_steps(run)
    ]


@router.post("/runs/{run_id}/resume", response=RunCreatedOut, summary="Resume a halted run (operators)")
def resume_run(request: ApiRequest, run_id: int) -> dict[str, Any]:
    run = get_object_or_404(selectors.runs_operable_by(request.auth), pk=run_id)
    run = services.run_resume(run=run, actor=request.auth)
    return {"id": run.pk, "status": run.status}


@router.post("/runs/{run_id}/cancel", response=RunCreatedOut, summary="Cancel a queued, waiting or halted run")
def cancel_run(request: ApiRequest, run_id: int) -> dict[str, Any]:
    run = get_object_or_404(selectors.runs_operable_by(request.auth), pk=run_id)
    run = services.run_cancel(run=run, actor=request.auth)
    return {"id": run.pk, "status": run.status}
