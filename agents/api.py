"""API endpoints for runs, and for actions submitted by agents running elsewhere."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from pydantic import ConfigDict, Field

from agents import selectors, services
from agents.models import RunPriority, RunStatus, StepKind
from core.api_contract import AgentSlug, ApiInput, JsonInt, ObjectId, responses
from core.errors import Forbidden
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


class AgentCreateIn(ApiInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"slug": "triage", "name": "Triage", "provider": "scripted", "model": "triage"}]
        }
    )

    slug: AgentSlug
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    provider: Literal["scripted", "openai"] = "scripted"
    model: str = Field(default="", max_length=200)
    base_url: str = Field(default="", max_length=500, description="An OpenAI-compatible endpoint (http or https).")
    api_key_ref: str = Field(
        default="", max_length=300, description="env:COUNTERSIGN_SECRET_… or file:/run/secrets/…, never the key."
    )
    system_prompt: str = Field(default="", max_length=100_000)
    input_schema: dict[str, Any] = Field(default_factory=dict, description="A JSON Schema every run input must match.")
    review_threshold: float = Field(default=0.8, ge=0, le=1)
    max_steps: JsonInt = Field(default=8, ge=1, le=200)


class AgentOut(Schema):
    slug: str
    name: str
    provider: str
    review_threshold: float
    max_steps: int


@router.post(
    "/agents",
    response=responses(AgentOut, 403, 409, status=201, body=True),
    summary="Make an agent (admins); give it tools and limits with its configuration, every tool starts disabled",
)
def create_agent(request: ApiRequest, payload: AgentCreateIn) -> Status[dict[str, Any]]:
    if not request.auth.has_perm("agents.add_agent"):
        raise Forbidden("only admins make agents")
    agent = services.agent_create_for(actor=request.auth, **payload.model_dump())
    return Status(201, {f: getattr(agent, f) for f in AgentOut.model_fields})


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
