"""API endpoints for the approval queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from channels.db import database_sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from ninja import Body, Query, Router, Schema, Status
from pydantic import ConfigDict, Field

from agents import selectors as agent_selectors
from agents.models import Agent
from approvals import claims, decisions, execution, grants, routing, selectors
from approvals.models import ActionRequest, ActionStatus, Decision
from approvals.schemas import COMMENT_MAX, ActionOut, ApproveIn, DecisionIn, action_out
from approvals.settled import REREAD_SECONDS, watching, watching_agent
from core.api_contract import MAX_ID, AgentSlug, ApiInput, ObjectId, responses
from core.errors import InvalidInput
from core.requests import ApiRequest

router = Router(tags=["actions"])


class ActionSubmitIn(ApiInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tool": "issue_refund",
                    "arguments": {"order_id": "ORD-1002", "amount": 150, "reason": "arrived broken"},
                    "confidence": 0.9,
                    "rationale": "The customer sent a photo of the damage.",
                }
            ]
        }
    )

    tool: str = Field(
        min_length=1,
        max_length=100,
        description="A tool enabled for the agent (unknown_tool / tool_not_enabled otherwise). For a tool the agent "
        "executes itself (a caller's tool), an approval comes with a grant: redeem it, execute, report.",
    )
    arguments: dict[str, Any] = Field(
        description="Validated against the tool's schema and limits (400 invalid_arguments / over_limit)."
    )
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str = Field(default="", max_length=10000)
    executed_by: Literal["caller", "countersign"] | None = Field(
        default=None,
        description="Who will execute the call once approved: caller (you, with a grant) or countersign. Given, "
        "it must match the tool (400 execution_mismatch otherwise); omitted, the tool decides.",
    )


@router.post(
    "/agents/{slug}/actions",
    response=responses(ActionOut, 404, status=201, body=True),
    summary="Submit a tool call for guard, policy and (if needed) review",
)
def submit_action(request: ApiRequest, slug: AgentSlug, payload: ActionSubmitIn) -> Status[dict[str, Any]]:
    agent = get_object_or_404(agent_selectors.agents_with_perm(request.auth, "operate_agent"), slug=slug)
    outcome = routing.route_tool_call(
        agent=agent,
        run=None,
        tool=payload.tool,
        arguments=payload.arguments,
        confidence=payload.confidence,
        rationale=payload.rationale,
        actor=request.auth,
        takes_grant=True,
        caller_executes=None if payload.executed_by is None else payload.executed_by == "caller",
    )
    if outcome.refusal is not None:
        refusal = outcome.refusal
        raise InvalidInput(refusal.message, code=refusal.code, details=refusal.details)
    assert outcome.action is not None
    outcome.action.refresh_from_db()
    return Status(201, action_out(outcome.action))


class ActionFilter(Schema):
    status: ActionStatus | None = None
    agent: AgentSlug | None = None
    before: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Keyset cursor: only actions with a smaller id."
    )
    limit: int = Field(default=50, ge=1, le=200)


class ActionPage(Schema):
    items: list[ActionOut]
    next_before: int | None


@router.get("/actions", response=responses(ActionPage), summary="Actions the caller may review, newest first")
def list_actions(request: ApiRequest, filters: Query[ActionFilter]) -> dict[str, Any]:
    qs = selectors.actions_reviewable_by(request.auth).prefetch_related("approvals__reviewer").order_by("-id")
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.agent:
        qs = qs.filter(agent__slug=filters.agent)
    if filters.before is not None:
        qs = qs.filter(id__lt=filters.before)
    rows = list(qs[: filters.limit + 1])
    page = rows[: filters.limit]
    return {
        "items": [action_out(a) for a in page],
        "next_before": page[-1].pk if len(rows) > filters.limit else None,
    }


def _reviewable(request: ApiRequest, action_id: int) -> ActionRequest:
    action = selectors.action_reviewable_by(request.auth, action_id)
    if action is None:
        raise Http404
    return action


@router.get(
    "/actions/{action_id}",
    response=responses(ActionOut, 404),
    summary="One action, for whoever may review it or operates its agent",
)
def get_action(request: ApiRequest, action_id: ObjectId) -> dict[str, Any]:
    action = selectors.action_followable_by(request.auth, action_id)
    if action is None:
        raise Http404
    return action_out(action)


class WaitFilter(Schema):
    seen: ActionStatus = Field(
        default=ActionStatus.PENDING, description="The status you last saw: the answer comes when it is another."
    )
    timeout: float = Field(default=30.0, ge=0, le=60, description="Seconds to wait at most (60).")


def _followed(user: Any, action_id: int) -> dict[str, Any] | None:
    """The action as the API shows it, if `user` may follow it; None otherwise (so 404s)."""
    action = selectors.action_followable_by(user, action_id)
    return None if action is None else action_out(action)


def _status(action_id: int) -> str | None:
    return ActionRequest.objects.filter(pk=action_id).values_list("status", flat=True).first()


@router.get(
    "/actions/{action_id}/wait",
    response=responses(ActionOut, 404),
    summary="Wait (long-poll, up to 60 s) until the action leaves the status you saw; answered when that commits",
)
async def wait_action(request: ApiRequest, action_id: ObjectId, filters: Query[WaitFilter]) -> dict[str, Any]:
    # Outside the thread the sync views share: a waiting request costs a coroutine, not that thread.
    followed = database_sync_to_async(_followed, thread_sensitive=False)
    status = database_sync_to_async(_status, thread_sensitive=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + filters.timeout
    # Watched before the first read, so a decision that commits in between still wakes it (approvals.settled).
    # While waiting only the status is read; the action is rendered once, with the rights checked again.
    async with watching(action_id) as watch:
        if await followed(request.auth, action_id) is None:
            raise Http404
        while await status(action_id) == filters.seen and (remaining := deadline - loop.time()) > 0:
            await watch.wait(min(REREAD_SECONDS, remaining))
    answer = await followed(request.auth, action_id)
    if answer is None:
        raise Http404
    return answer


STREAM_BATCH = 100
KEEP_ALIVE = 15.0  # seconds between comments on a quiet stream, so proxies keep it open


class StreamFilter(Schema):
    after: int = Field(
        default=0, ge=0, le=MAX_ID, description="Send the decisions after this event id (a Last-Event-ID header wins)."
    )
    seconds: int = Field(
        default=300, ge=0, le=3600, description="Close the stream after this long; reconnect with Last-Event-ID."
    )


def _streamable_agent(user: Any, slug: str) -> Agent | None:
    agent = Agent.objects.filter(slug=slug).first()
    # Whoever drives the agent; reviewers see decisions in their inbox, where each row's own rights apply.
    if agent is None or "operate_agent" not in agent_selectors.agent_perms_on(user, agent):
        return None
    return agent


def _decisions_after(agent_id: int, after: int) -> list[tuple[int, str]]:
    """The agent's decisions after event id `after`, oldest first, each as (its id, the action as JSON)."""
    rows = (
        Decision.objects.filter(action__agent_id=agent_id, pk__gt=after)
        .select_related("reviewer", "action__agent", "action__claimed_by", "action__grant")
        .prefetch_related("action__approvals__reviewer")
        .order_by("pk")[:STREAM_BATCH]
    )
    return [(d.pk, json.dumps(action_out(d.action), cls=DjangoJSONEncoder)) for d in rows]


async def _decision_events(agent_id: int, after: int, seconds: int) -> AsyncIterator[str]:
    read = database_sync_to_async(_decisions_after, thread_sensitive=False)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    quiet_since = loop.time()
    # Watched before the first read, so a decision that commits in between is not missed (approvals.settled).
    async with watching_agent(agent_id) as watch:
        while True:
            batch = await read(agent_id, after)
            for decision_id, data in batch:
                after = decision_id
                yield f"id: {decision_id}\nevent: decision\ndata: {data}\n\n"
            if len(batch) == STREAM_BATCH:
                continue
            now = loop.time()
            if batch:
                quiet_since = now
            if now >= end:
                return
            if now - quiet_since >= KEEP_ALIVE:
                yield ": keep-alive\n\n"
                quiet_since = now
            await watch.wait(min(REREAD_SECONDS, end - now))


@router.get(
    "/agents/{slug}/decisions/stream",
    response=responses(str, 404),
    summary="Server-sent events: the agent's decisions as they commit (event id = decision id; resume with "
    "Last-Event-ID)",
    openapi_extra={
        "responses": {
            "200": {
                "description": "text/event-stream: `event: decision`, `data:` the action (as GET /actions/<id>)",
                "content": {
                    "text/event-stream": {
                        # One event: what a text/event-stream parser gives for it.
                        "schema": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string", "description": "The decision's id."},
                                "event": {"type": "string", "enum": ["decision"]},
                                "data": {
                                    "type": "string",
                                    "contentMediaType": "application/json",
                                    "contentSchema": {"$ref": "#/components/schemas/ActionOut"},
                                },
                            },
                            "required": ["id", "event", "data"],
                        }
                    }
                },
            }
        }
    },
)
async def stream_decisions(request: ApiRequest, slug: AgentSlug, filters: Query[StreamFilter]) -> StreamingHttpResponse:
    agent = await database_sync_to_async(_streamable_agent, thread_sensitive=False)(request.auth, slug)
    if agent is None:
        raise Http404
    last = request.headers.get("Last-Event-ID", "")
    # Anything but a plain decimal id within range is ignored (str.isdigit alone lets "²" through).
    after = (
        int(last) if last.isascii() and last.isdigit() and len(last) <= 19 and int(last) <= MAX_ID else filters.after
    )
    response = StreamingHttpResponse(
        _decision_events(agent.pk, after, filters.seconds), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    return response


@router.post(
    "/actions/{action_id}/decision",
    response=responses(ActionOut, 403, 404, 409, body=True),
    summary="Approve, reject, edit-and-approve or escalate a pending action",
)
def decide_action(request: ApiRequest, action_id: ObjectId, payload: Body[DecisionIn]) -> dict[str, Any]:
    action = selectors.action_reviewable_by(request.auth, action_id, related=selectors.DECIDE_RELATED)
    if action is None:
        raise Http404
    decisions.action_request_decide(
        action=action,
        actor=request.auth,
        verdict=payload.verdict,
        arguments=payload.arguments,
        comment=payload.comment,
        override_reason=payload.override_reason if isinstance(payload, ApproveIn) else "",
    )
    # Not re-filtered: after an escalation the caller may no longer see it, but did just act on it.
    return action_out(selectors.action_by_id(action_id))


class UndoIn(ApiInput):
    comment: str = Field(default="", max_length=COMMENT_MAX)


@router.post(
    "/actions/{action_id}/undo",
    response=responses(ActionOut, 404, 409, body=True),
    summary="Undo an executed, reversible action",
)
def undo_action(request: ApiRequest, action_id: ObjectId, payload: UndoIn) -> dict[str, Any]:
    action = _reviewable(request, action_id)
    execution.action_undo(action=action, actor=request.auth, comment=payload.comment)
    return action_out(_reviewable(request, action_id))


@router.post(
    "/actions/{action_id}/claim",
    response=responses(ActionOut, 404, 409),
    summary="Claim a pending action for 5 minutes",
)
def claim_action(request: ApiRequest, action_id: ObjectId) -> dict[str, Any]:
    action = _reviewable(request, action_id)
    claims.action_request_claim(action=action, actor=request.auth)
    return action_out(_reviewable(request, action_id))


GRANT_TOKEN = Field(min_length=1, max_length=500, description="The action's grant.token.")


class RedeemIn(ApiInput):
    grant: str = GRANT_TOKEN
    arguments: dict[str, Any] = Field(
        description="The arguments you are about to execute: they must be the approved ones (same digest)."
    )


class ReportResultIn(ApiInput):
    grant: str = GRANT_TOKEN
    arguments: dict[str, Any] = Field(description="The arguments you executed (the redeemed ones).")
    result: Any = Field(description="What the tool returned (any JSON, null included): the action is executed.")


class ReportErrorIn(ApiInput):
    grant: str = GRANT_TOKEN
    arguments: dict[str, Any] = Field(description="The arguments you executed (the redeemed ones).")
    error: str = Field(
        min_length=1, max_length=10000, pattern=r"\S", description="Why it failed: the action is failed."
    )


# A result or an error, never both: each shape forbids the other's key.
ReportIn = ReportResultIn | ReportErrorIn


def _operable(request: ApiRequest, action_id: int) -> ActionRequest:
    action = selectors.action_operable_by(request.auth, action_id)
    if action is None:
        raise Http404
    return action


@router.post(
    "/actions/{action_id}/grant/redeem",
    response=responses(ActionOut, 404, 409, body=True),
    summary="Redeem the grant of an approved call to a caller's tool, right before executing it: once, before it "
    "expires, with the approved arguments (409 grant_used, grant_expired, arguments_mismatch, ..., audited)",
)
def redeem_grant(request: ApiRequest, action_id: ObjectId, payload: RedeemIn) -> dict[str, Any]:
    action = _operable(request, action_id)
    grants.grant_redeem(action=action, actor=request.auth, token=payload.grant, arguments=payload.arguments)
    return action_out(_operable(request, action_id))


@router.post(
    "/actions/{action_id}/report",
    response=responses(ActionOut, 404, 409, body=True),
    summary="Report what came of a redeemed grant's call: its result or its error, once (409 already_reported, "
    "arguments_mismatch, ..., audited)",
)
def report_outcome(request: ApiRequest, action_id: ObjectId, payload: Body[ReportIn]) -> dict[str, Any]:
    action = _operable(request, action_id)
    if isinstance(payload, ReportErrorIn):
        result, error = None, payload.error.strip()
    else:
        result, error = payload.result, ""
    reported = grants.grant_report(
        action=action, actor=request.auth, token=payload.grant, arguments=payload.arguments, result=result, error=error
    )
    return action_out(reported)
