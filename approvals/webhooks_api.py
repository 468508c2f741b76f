"""API for an agent's decision webhook: configured by whoever configures the agent, its delivery log read and
its events sent again by whoever operates it (approvals.webhooks)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import Http404
from ninja import Query, Router, Schema, Status
from pydantic import ConfigDict, Field

from approvals import selectors, webhooks
from approvals.models import DecisionWebhook, DeliveryStatus, WebhookDelivery
from core.api_contract import MAX_ID, AgentSlug, ApiInput, ObjectId, responses
from core.errors import Forbidden
from core.requests import ApiRequest

router = Router(tags=["webhooks"])


class WebhookIn(ApiInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"url": "https://agents.example/countersign", "secret_ref": "env:COUNTERSIGN_SECRET_HOOK"}]
        }
    )

    url: str = Field(
        max_length=500,
        pattern=r"^https?://[^\s/]+",
        description="Where the events are POSTed: http(s), with a host that can be looked up (400 invalid_config).",
    )
    secret_ref: str = Field(
        max_length=300,
        # The references agents.secrets.check_secret_ref allows: a variable with the prefix, or a file under the
        # secrets directory (no segment starts with a dot, so no "..").
        pattern=rf"^(env:{re.escape(settings.SECRET_ENV_PREFIX)}[A-Za-z0-9_]+"
        rf"|file:{re.escape(settings.SECRETS_DIR.rstrip('/'))}(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+)$",
        description="The signing secret, referenced: env:COUNTERSIGN_SECRET_… or file:/run/secrets/… "
        "(Countersign never stores it).",
    )


class WebhookOut(Schema):
    agent: str
    configured: bool = Field(description="False: the agent has no webhook (the other fields are null).")
    url: str | None
    secret_ref: str | None
    active: bool
    updated_at: datetime | None


class DeliveryOut(Schema):
    id: int
    event: str = Field(description="decision or undone.")
    event_id: str = Field(description="The body's id: the same for every delivery of one event.")
    action: int
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str
    delivered_at: datetime | None
    created_at: datetime
    redelivery_of: int | None
    requested_by: str | None


class DeliveryPage(Schema):
    items: list[DeliveryOut]
    next_before: int | None


class DeliveryFilter(Schema):
    before: int | None = Field(default=None, ge=1, le=MAX_ID, description="Keyset cursor: older deliveries only.")
    limit: int = Field(default=50, ge=1, le=200)


def _webhook_out(webhook: DecisionWebhook) -> dict[str, Any]:
    return {
        "agent": webhook.agent.slug,
        "configured": True,
        "url": webhook.url,
        "secret_ref": webhook.secret_ref,
        "active": webhook.active,
        "updated_at": webhook.updated_at,
    }


def _delivery_out(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.pk,
        "event": delivery.event,
        "event_id": delivery.event_id,
        "action": delivery.action_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered_at": delivery.delivered_at,
        "created_at": delivery.created_at,
        "redelivery_of": delivery.redelivery_of_id,
        "requested_by": delivery.requested_by.get_username() if delivery.requested_by else None,
    }


def _agent(request: ApiRequest, slug: str, *, configure: bool = False) -> Any:
    found = selectors.agent_for_webhook(request.auth, slug)
    if found is None:
        raise Http404
    agent, perms = found
    if configure and "configure_agent" not in perms:
        raise Forbidden("only whoever configures the agent sets its webhook")
    return agent


@router.get(
    "/agents/{slug}/webhook",
    response=responses(WebhookOut, 404),
    summary="The agent's decision webhook (configured: false when it has none)",
)
def get_webhook(request: ApiRequest, slug: AgentSlug) -> dict[str, Any]:
    agent = _agent(request, slug)
    webhook = DecisionWebhook.objects.select_related("agent").filter(agent=agent).first()
    if webhook is None:
        return {
            "agent": agent.slug,
            "configured": False,
            "url": None,
            "secret_ref": None,
            "active": False,
            "updated_at": None,
        }
    return _webhook_out(webhook)


@router.put(
    "/agents/{slug}/webhook",
    response=responses(WebhookOut, 403, 404, body=True),
    summary="Set the agent's decision webhook: each decision and undo is POSTed there, signed and timestamped",
)
def put_webhook(request: ApiRequest, slug: AgentSlug, payload: WebhookIn) -> dict[str, Any]:
    agent = _agent(request, slug, configure=True)
    webhook = webhooks.webhook_set(agent=agent, actor=request.auth, url=payload.url, secret_ref=payload.secret_ref)
    return _webhook_out(DecisionWebhook.objects.select_related("agent").get(pk=webhook.pk))


@router.delete(
    "/agents/{slug}/webhook",
    response=responses(None, 403, 404, 409, status=204),
    summary="Remove the agent's decision webhook",
)
def delete_webhook(request: ApiRequest, slug: AgentSlug) -> Status[None]:
    webhooks.webhook_remove(agent=_agent(request, slug, configure=True), actor=request.auth)
    return Status(204, None)


@router.get(
    "/agents/{slug}/webhook/deliveries",
    response=responses(DeliveryPage, 404),
    summary="The webhook's delivery log, newest first",
)
def list_deliveries(request: ApiRequest, slug: AgentSlug, filters: Query[DeliveryFilter]) -> dict[str, Any]:
    rows = selectors.webhook_deliveries(_agent(request, slug), before=filters.before, limit=filters.limit + 1)
    page = rows[: filters.limit]
    return {
        "items": [_delivery_out(d) for d in page],
        "next_before": page[-1].pk if len(rows) > filters.limit else None,
    }


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver",
    response=responses(DeliveryOut, 404, status=201),
    summary="Send a delivery's event again (a new delivery with the same event id)",
)
def redeliver(request: ApiRequest, delivery_id: ObjectId) -> Status[dict[str, Any]]:
    delivery = selectors.delivery_operable_by(request.auth, delivery_id)
    if delivery is None:
        raise Http404
    again = webhooks.webhook_redeliver(delivery=delivery, actor=request.auth)
    return Status(201, _delivery_out(WebhookDelivery.objects.select_related("requested_by").get(pk=again.pk)))


def describe_webhooks(document: dict[str, Any]) -> dict[str, Any]:
    """The POSTs Countersign sends to an agent's webhook, as the OpenAPI document's `webhooks` (OpenAPI 3.1)."""
    headers = [
        ("Countersign-Event", "decision or undone."),
        ("Countersign-Delivery", "This delivery's id (a new one when an operator sends the event again)."),
        ("Countersign-Timestamp", "Unix seconds when it was sent: refuse one more than a few minutes off."),
        ("Countersign-Signature", "v1=<hex HMAC-SHA256 of '<timestamp>.<body>' under the webhook's secret>."),
    ]
    body = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "The event's id: drop one you have already handled."},
            "event": {"type": "string", "enum": [webhooks.DECISION, webhooks.UNDONE]},
            "created_at": {"type": "string", "format": "date-time"},
            "action": {"$ref": "#/components/schemas/ActionOut"},
        },
        "required": ["id", "event", "created_at", "action"],
    }
    what = {
        webhooks.DECISION: "An action of the agent was decided: approved (with its grant for a caller's tool), edited, "
        "rejected (with the reason), or expired.",
        webhooks.UNDONE: "An executed action was undone: an agent that executed it itself reverses it.",
    }
    document["webhooks"] = {
        event: {
            "post": {
                "summary": summary,
                "parameters": [
                    {"name": name, "in": "header", "required": True, "schema": {"type": "string"}, "description": text}
                    for name, text in headers
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                "responses": {"2XX": {"description": "Received. Any other answer is retried with backoff."}},
            }
        }
        for event, summary in what.items()
    }
    return document
