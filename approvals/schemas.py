"""API shapes for action requests."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from approvals.grants import grant_token
from approvals.models import ActionRequest, ActionStatus, GrantStatus
from core.api_contract import ApiInput

COMMENT_MAX = 5000


class DecisionOut(Schema):
    verdict: str
    reviewer: str
    comment: str
    arguments_before: dict[str, Any]
    arguments_after: dict[str, Any]
    created_at: datetime


class FindingOut(Schema):
    """Something the tool found when the call was routed, shown to reviewers as a warning."""

    code: str
    message: str


class GrantOut(Schema):
    """Leave to execute an approved call to a caller's tool yourself: once, before `expires_at`, with exactly the
    arguments whose digest it holds (approvals.grants)."""

    token: str = Field(description="Send it back to redeem the grant and to report the outcome.")
    digest: str = Field(
        description="SHA-256 (hex) of the RFC 8785 canonical JSON of {agent, tool, arguments} as approved (numbers "
        "as IEEE doubles): check that the call you are about to make hashes to it."
    )
    status: GrantStatus
    expires_at: datetime = Field(description="Redeem it before then, or not at all.")
    redeemed_at: datetime | None
    report_due_at: datetime | None = Field(description="After this an unreported action goes in doubt.")
    reported_at: datetime | None


class ActionOut(Schema):
    id: int
    run: int | None
    agent: str
    tool: str
    caller_executes: bool = Field(description="Executed by the agent itself: an approval comes with a grant.")
    arguments: dict[str, Any]
    proposed_arguments: dict[str, Any]
    confidence: float
    rationale: str
    impact: str
    magnitude: str
    route: str
    route_reason: str
    status: ActionStatus
    tier: int
    risk_score: int
    risk_parts: dict[str, int]
    risk_basis: str
    findings: list[FindingOut]
    due_at: datetime | None
    required_approvals: int
    approvals: list[str]
    claimed_by: str | None
    decision: DecisionOut | None
    grant: GrantOut | None
    result: Any
    error: str
    created_at: datetime
    decided_at: datetime | None
    executed_at: datetime | None


# A decision is one of four shapes, told apart by `verdict`. Only an edit carries
# arguments (the service refuses them with any other verdict), so the document
# says so too; null is taken as absent, and a reason is required to reject.
def _only_with_edit(value: Any) -> Any:
    if value is not None:
        raise PydanticCustomError("unexpected_arguments", "arguments are only accepted with verdict 'edit'")
    return value


NoArguments = Annotated[None, BeforeValidator(_only_with_edit)]


class ApproveIn(ApiInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{"verdict": "approve", "comment": "checked the order"}]})

    verdict: Literal["approve"]
    arguments: NoArguments = Field(default=None, description="Not with approve: use verdict edit to change them.")
    comment: str = Field(default="", max_length=COMMENT_MAX)
    override_reason: str = Field(
        default="",
        max_length=COMMENT_MAX,
        description="Only for a new prompt version whose agreement with the golden set falls more than the agent's "
        "margin below the active version's (409 prompt_regression without it): why it should go live anyway. "
        "Audited with the numbers it overrides.",
    )


class RejectIn(ApiInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{"verdict": "reject", "comment": "already refunded"}]})

    verdict: Literal["reject"]
    arguments: NoArguments = Field(default=None, description="Not with reject.")
    comment: str = Field(min_length=1, max_length=COMMENT_MAX, pattern=r"\S", description="The reason, required.")


class EditIn(ApiInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"verdict": "edit", "arguments": {"order_id": "ORD-1002", "amount": 90, "reason": "partial"}}]
        }
    )

    verdict: Literal["edit"]
    arguments: dict[str, Any] = Field(
        description="The arguments to approve instead, validated like the agent's own call against the tool's "
        "schema (a mismatch is 400 invalid_arguments with field errors)."
    )
    comment: str = Field(default="", max_length=COMMENT_MAX)


class EscalateIn(ApiInput):
    verdict: Literal["escalate"]
    arguments: NoArguments = Field(default=None, description="Not with escalate.")
    comment: str = Field(default="", max_length=COMMENT_MAX, description="Why; a default reason when empty.")


DecisionIn = Annotated[ApproveIn | RejectIn | EditIn | EscalateIn, Field(discriminator="verdict")]


def action_out(action: ActionRequest) -> dict[str, Any]:
    decision = (
        getattr(action, "decision", None) if action.status not in {"pending", "auto_approved", "denied"} else None
    )
    return {
        "id": action.pk,
        "run": action.run_id,
        "agent": action.agent.slug,
        "tool": action.tool,
        "caller_executes": action.caller_executes,
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
        "risk_parts": action.risk_parts,
        "risk_basis": action.risk_basis,
        "findings": action.findings,
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
        "grant": _grant_out(action),
        "result": action.result,
        "error": action.error,
        "created_at": action.created_at,
        "decided_at": action.decided_at,
        "executed_at": action.executed_at,
    }


def _grant_out(action: ActionRequest) -> dict[str, Any] | None:
    grant = getattr(action, "grant", None) if action.caller_executes else None
    if grant is None:
        return None
    return {
        "token": grant_token(grant),
        "digest": grant.digest,
        "status": grant.status,
        "expires_at": grant.expires_at,
        "redeemed_at": grant.redeemed_at,
        "report_due_at": grant.report_due_at,
        "reported_at": grant.reported_at,
    }
