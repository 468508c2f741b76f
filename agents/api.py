"""API endpoints for runs, and for actions submitted by agents running elsewhere."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from pydantic import ConfigDict, Field

from agents import selectors, services
from agents.models import RunPriority, RunStatus, StepKind
from core.api_contract import AgentSlug, ApiInput, ObjectId, responses
from core.requests import ApiRequest

router = Router(tags=["runs"])


class RunCreateIn(ApiInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"input": {"ticket": "Arrived broken.", "order_id": "ORD-1002", "amount": 250}}]
        }
    )

    input: dict[str, Any] = Field(
        description="The run's input, validated against the agent's input schema "
        "(a mismatch is 400 invalid_input with field errors)."
    )
    priority: Literal["routine", "urgent"] = "routine"


class RunCreatedOut(Schema):
    id: int
    status: RunStatus


class StepOut(Schema):
    seq: int
    kind: StepKind
    payload: dict[str, Any]
    latency_ms: float | None
    tokens_in: int
    tokens_out: int
    cost: str
    created_at: datetime


@router.post(
    "/agents/{slug}/runs", response=responses(RunCreatedOut, 404, 409, status=201, body=True), summary="Start a run"
)
def create_run(request: ApiRequest, slug: AgentSlug, payload: RunCreateIn) -> Status[dict[str, Any]]:
    agent = get_object_or_404(selectors.agents_with_perm(request.auth, "operate_agent"), slug=slug)
    priority = RunPriority.URGENT if payload.priority == "urgent" else RunPriority.ROUTINE
    run = services.run_start(agent=agent, input=payload.input, actor=request.auth, priority=priority)
    return Status(201, {"id": run.pk, "status": run.status})


@router.get("/runs/{run_id}/trace", response=responses(list[StepOut], 404), summary="A run's trace, step by step")
def get_trace(request: ApiRequest, run_id: ObjectId) -> list[dict[str, Any]]:
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


@router.post(
    "/runs/{run_id}/resume", response=responses(RunCreatedOut, 404, 409), summary="Resume a halted run (operators)"
)
def resume_run(request: ApiRequest, run_id: ObjectId) -> dict[str, Any]:
    run = get_object_or_404(selectors.runs_operable_by(request.auth), pk=run_id)
    run = services.run_resume(run=run, actor=request.auth)
    return {"id": run.pk, "status": run.status}
