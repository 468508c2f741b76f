"""API shapes for action requests."""

from __future__ import annotations

from typing import Any, Literal

from ninja import Schema
from pydantic import Field

from approvals.models import ActionRequest


class DecisionOut(Schema):
    verdict: str
    reviewer: str
    comment: str
    arguments_before: dict[str, Any]
    arguments_after: dict[str, Any]
    created_at: Any


class ActionOut(Schema):
    id: int
    run: int | None
    agent: str
    tool: str
    arguments: dict[str, Any]
    proposed_arguments: dict[str, Any]
    confidence: float
    rationale: str
    impact: str
    magnitude: str
    route: str
    route_reason: str
    status: str
    tier: int
    risk_score: int
    due_at: Any
    required_approvals: int
    approvals: list[str]
    claimed_by: str | None
    decision: DecisionOut | None
    result: Any
    error: str
    created_at: Any
    decided_at: Any
    executed_at: Any


class DecisionIn(Schema):
    verdict: Literal["approve", "reject", "edit", "escalate"]
    arguments: dict[str, Any] | None = None
    comment: str = Field(default="", max_length=5000)


def action_out(action: ActionRequest) -> dict[str, Any]:
    decision = (
        getattr(action, "decision", None) if action.status not in {"pending", "auto_approved", "denied"} else None
    )
    return {
        "id": action.pk,
        "run": action.run_id,
        "agent": action.agent.slug,
        "tool": action.tool,
        "arguments": action.arguments,
        "proposed_arguments": action.proposed_arguments,
        "confidence": action.confidence,
        "rationale": action.rationale,
        "impact": action.impact,
        "magnitude": str(action.magnitude),
        "route": action.route,
        "route_reason": action.route_reason,
        "status": action.status,
        "tier": action.tier,
        "risk_score": action.risk_score,
        "due_at": action.due_at,
        "required_approvals": action.required_approvals,
        "approvals": [a.reviewer.get_username() for a in action.approvals.all()],
        "claimed_by": action.claimed_by.get_username() if action.claimed_by_id and action.claimed_by else None,
        "decision": None
        if decision is None
        else {
            "verdict": decision.verdict,
            "reviewer": decision.reviewer.get_username(),
            "comment": decision.comment,
            "arguments_before": decision.arguments_before,
            "arguments_after": decision.arguments_after,
            "created_at": decision.created_at,
        },
        "result": action.result,
        "error": action.error,
        "created_at": action.created_at,
        "decided_at": action.decided_at,
        "executed_at": action.executed_at,
    }
