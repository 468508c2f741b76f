"""API endpoints of runs with their actions: reading a run, cancelling one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.shortcuts import get_object_or_404
from ninja import Router, Schema

from agents import selectors
from agents.api import RunCreatedOut
from agents.models import RunOutcome, RunStatus
from approvals.schemas import ActionOut, action_out
from core.api_contract import ObjectId, responses
from core.requests import ApiRequest
from runtime import services

router = Router(tags=["runs"])


class RunOut(Schema):
    id: int
    agent: str
    status: RunStatus
    # What it came to once it ended (done, done_with_edits, refused, rejected, denied, failed, halted,
    # cancelled); empty while it goes on.
    outcome: RunOutcome | Literal[""]
    result: str
    halt_reason: str
    step_count: int
    created_at: datetime
    finished_at: datetime | None
    actions: list[ActionOut]


@router.get("/runs/{run_id}", response=responses(RunOut, 404), summary="A run with its actions")
def get_run(request: ApiRequest, run_id: ObjectId) -> dict[str, Any]:
    run = get_object_or_404(selectors.runs_visible_to(request.auth), pk=run_id)
    actions = run.actions.select_related("agent", "decision__reviewer").order_by("id")
    return {
        "id": run.pk,
        "agent": run.agent.slug,
        "status": run.status,
        "outcome": run.outcome,
        "result": run.result,
        "halt_reason": run.halt_reason,
        "step_count": run.step_count,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "actions": [action_out(a) for a in actions],
    }


@router.post(
    "/runs/{run_id}/cancel",
    response=responses(RunCreatedOut, 404, 409),
    summary="Cancel a queued, waiting or halted run",
)
def cancel_run(request: ApiRequest, run_id: ObjectId) -> dict[str, Any]:
    run = get_object_or_404(selectors.runs_operable_by(request.auth), pk=run_id)
    run = services.run_cancel(run=run, actor=request.auth)
    return {"id": run.pk, "status": run.status}
