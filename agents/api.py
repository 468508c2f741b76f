"""API endpoints for runs, and for actions submitted by agents running elsewhere."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from pydantic import Field

from agents import selectors, services
from approvals.schemas import ActionOut, action_out
from config.requests import ApiRequest

router = Router(tags=["runs"])


class RunCreateIn(Schema):
    input: dict[str, Any]


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


class ActionSubmitIn(Schema):
    tool: str = Field(min_length=1, max_length=100)
    arguments: dict[str, Any]
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str = Field(default="", max_length=10000)


@router.post("/agents/{slug}/runs", response={201: RunCreatedOut}, summary="Start a run")
def create_run(request: ApiRequest, slug: str, payload: RunCreateIn) -> Status[dict[str, Any]]:
    agent = get_object_or_404(selectors.agents_with_perm(request.user, "operate_agent"), slug=slug)
    run = services.run_start(agent=agent, input=payload.input, actor=request.auth)
    return Status(201, {"id": run.pk, "status": run.status})


@router.get("/runs/{run_id}", response=RunOut, summary="A run with its actions")
def get_run(request: ApiRequest, run_id: int) -> dict[str, Any]:
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=run_id)
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

    agent = get_object_or_404(selectors.agents_with_perm(request.user, "operate_agent"), slug=slug)
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
