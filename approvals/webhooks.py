"""Decision webhooks: an agent running elsewhere is told of its decisions without polling.

The event is written in the transaction of the change it reports (a WebhookDelivery row, like an outbox), and
its sending is published when that commits; a sweep republishes what a lost publish or a dead worker left.
Each POST carries:

- ``Countersign-Event``: ``decision`` (approved, edited, rejected, expired) or ``undone``;
- ``Countersign-Delivery``: this attempt's row, and in the body ``id``, the event's id (the same when an
  operator sends it again), so a receiver drops what it has already seen;
- ``Countersign-Timestamp``: Unix seconds, and ``Countersign-Signature``: ``v1=`` HMAC-SHA256 (hex) of
  ``<timestamp>.<body>`` under the webhook's secret. A receiver checks the signature and refuses a timestamp
  more than a few minutes old, so a captured request cannot be replayed later.

Anything but a 2xx answer is retried with exponential backoff and jitter, up to MAX_ATTEMPTS; then the
delivery is failed and an operator may send it again (a new delivery of the same event, audited).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
from datetime import timedelta
from typing import Any

import httpx
from django.contrib.auth.models import User
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import Agent
from agents.secrets import SecretUnavailable, check_secret_ref, resolve_secret
from agents.upstream import checked_url
from approvals.models import ActionRequest, DecisionWebhook, DeliveryStatus, WebhookDelivery
from approvals.schemas import action_out
from approvals.selectors import action_by_id
from approvals.transitions import delivery_transition
from audit.services import record
from core.background import enqueue_on_commit
from core.errors import Conflict, InvalidInput
from core.inbound import sanitise
from core.prepared import PreparedRead
from core.secrets import register_secret

logger = logging.getLogger(__name__)

DELIVER = "approvals.deliver_webhook"
DECISION = "decision"
UNDONE = "undone"
MAX_ATTEMPTS = 8
TIMEOUT_SECONDS = 10.0
LEASE_SECONDS = 60  # longer than one POST can take
REPUBLISH_AFTER_SECONDS = 30  # a pending delivery this late was not published, or its message was lost
SIGNATURE_VERSION = "v1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Countersign-Signature header's value for one POST."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: 5 s doubling to at most an hour, jittered."""
    return min(3600.0, 5.0 * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)  # noqa: S311


# --- configuration --------------------------------------------------------------------------------


def webhook_set(*, agent: Agent, actor: User, url: str, secret_ref: str) -> DecisionWebhook:
    """Point the agent's decision webhook at `url`, signed with the secret `secret_ref` names (audited)."""
    checked_url(url, what="the webhook URL")
    try:
        check_secret_ref(secret_ref)
        if not secret_ref:
            raise SecretUnavailable("a webhook needs a secret to sign with")
    except SecretUnavailable as exc:
        raise InvalidInput(f"secret_ref: {exc}", code="invalid_config") from None
    with transaction.atomic():
        current = DecisionWebhook.objects.select_for_update().filter(agent=agent).first()
        before = None if current is None else {"url": current.url, "secret_ref": current.secret_ref}
        webhook, _ = DecisionWebhook.objects.update_or_create(
            agent=agent, defaults={"url": url, "secret_ref": secret_ref, "active": True, "updated_by": actor}
        )
        record(
            actor=actor,
            event="webhook.configured",
            target=agent,
            agent_id=agent.pk,
            before=before,
            after={"url": url, "secret_ref": secret_ref},
        )
    return webhook


def webhook_remove(*, agent: Agent, actor: User) -> None:
    """Stop telling the agent of its decisions (the delivery log goes with the webhook)."""
    with transaction.atomic():
        webhook = DecisionWebhook.objects.select_for_update().filter(agent=agent).first()
        if webhook is None:
            raise Conflict("the agent has no webhook", code="no_webhook")
        record(actor=actor, event="webhook.removed", target=agent, agent_id=agent.pk, before={"url": webhook.url})
        webhook.delete()


# --- events ---------------------------------------------------------------------------------------


@PreparedRead
def _active_webhook(agent_id: int) -> QuerySet[DecisionWebhook]:
    """The agent's webhook, if active. Every decision reads it: prepared (core.prepared)."""
    return DecisionWebhook.objects.filter(agent_id=agent_id, active=True)


def webhook_queue(action: ActionRequest, *, event: str) -> WebhookDelivery | None:
    """In the transaction of the change: the event for the action's agent's webhook, if it has one."""
    webhook = _active_webhook.first(agent_id=action.agent_id)
    if webhook is None:
        return None
    current = action_by_id(action.pk)
    payload = json.loads(json.dumps(action_out(current), cls=DjangoJSONEncoder))
    delivery = WebhookDelivery.objects.create(webhook=webhook, action_id=action.pk, event=event, payload=payload)
    enqueue_on_commit(DELIVER, delivery.pk)
    return delivery


def webhook_redeliver(*, delivery: WebhookDelivery, actor: User) -> WebhookDelivery:
    """Send an event again (whatever became of it): a new delivery with the same event id, audited."""
    with transaction.atomic():
        again = WebhookDelivery.objects.create(
            webhook_id=delivery.webhook_id,
            action_id=delivery.action_id,
            event=delivery.event,
            payload=delivery.payload,
            redelivery_of_id=delivery.redelivery_of_id or delivery.pk,  # the event's first delivery
            requested_by=actor,
        )
        record(
            actor=actor,
            event="webhook.redelivered",
            target=again.action,
            agent_id=delivery.webhook.agent_id,
            after={"delivery": again.pk, "of": delivery.pk, "event_id": delivery.event_id},
        )
        enqueue_on_commit(DELIVER, again.pk)
    return again


# --- sending --------------------------------------------------------------------------------------


def webhook_deliver(*, delivery_id: int) -> str:
    """Send one delivery if it is due and nobody else is: at least once, never two workers at a time.

    The claim and the outcome are short transactions of their own: none is open during the POST.
    Returns what happened: delivered, retry, failed, or "" when there was nothing to do.
    """
    now = timezone.now()
    claimed = delivery_transition(
        WebhookDelivery.objects.filter(pk=delivery_id, next_attempt_at__lte=now),
        from_status=DeliveryStatus.PENDING,
        to=DeliveryStatus.SENDING,
        lease_until=now + timedelta(seconds=LEASE_SECONDS),
    )
    if not claimed:
        return ""
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    attempt = delivery.attempts + 1
    code, error = _post(delivery)
    mine = WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts)
    fields: dict[str, Any] = {"attempts": attempt, "lease_until": None, "last_status_code": code, "last_error": error}
    if code is not None and 200 <= code < 300:
        delivery_transition(
            mine, from_status=DeliveryStatus.SENDING, to=DeliveryStatus.DELIVERED, delivered_at=timezone.now(), **fields
        )
        return "delivered"
    if attempt >= MAX_ATTEMPTS:
        delivery_transition(mine, from_status=DeliveryStatus.SENDING, to=DeliveryStatus.FAILED, **fields)
        logger.warning("webhook delivery %s failed after %s attempts: %s", delivery.pk, attempt, error)
        return "failed"
    delay = backoff(attempt)
    with transaction.atomic():
        if delivery_transition(
            mine,
            from_status=DeliveryStatus.SENDING,
            to=DeliveryStatus.PENDING,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            **fields,
        ):
            enqueue_on_commit(DELIVER, delivery.pk, countdown=delay)
    return "retry"


def _post(delivery: WebhookDelivery) -> tuple[int | None, str]:
    """POST the event; its HTTP status (None if none came) and what went wrong, for the log."""
    try:
        secret = resolve_secret(delivery.webhook.secret_ref)
    except SecretUnavailable as exc:
        return None, f"the signing secret is unavailable: {exc}"
    register_secret(secret)  # masked wherever it could be echoed
    body = json.dumps(
        {
            "id": delivery.event_id,
            "event": delivery.event,
            "created_at": delivery.created_at.isoformat(),
            "action": delivery.payload,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Countersign-Webhook/1",
        "Countersign-Event": delivery.event,
        "Countersign-Delivery": str(delivery.pk),
        "Countersign-Timestamp": str(timestamp),
        "Countersign-Signature": signature(secret, timestamp, body),
    }
    try:
        # Redirects are not followed: the signed request goes where it was configured to, or fails.
        response = httpx.post(delivery.webhook.url, content=body, headers=headers, timeout=TIMEOUT_SECONDS)
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:  # no answer: retried, and logged
        return None, _said(f"{type(exc).__name__}: {exc}")
    if 200 <= response.status_code < 300:
        return response.status_code, ""
    return response.status_code, _said(f"HTTP {response.status_code}: {response.text[:300]}")


def _said(text: str) -> str:
    """What a receiver answered, as the log may keep it: through the input boundary (secrets scrubbed)."""
    return str(sanitise(text).value)[:1000]


def webhooks_sweep() -> dict[str, int]:
    """Republish due deliveries whose message was lost, and free those a dead worker held. Idempotent."""
    now = timezone.now()
    counts = {"republished": 0, "released": 0}
    stranded = WebhookDelivery.objects.filter(status=DeliveryStatus.SENDING, lease_until__lte=now)
    for delivery_id in stranded.values_list("pk", flat=True)[:500]:
        # The worker died during the POST: the receiver may have it already (it dedupes by event id).
        with transaction.atomic():
            if delivery_transition(
                WebhookDelivery.objects.filter(pk=delivery_id, lease_until__lte=now),
                from_status=DeliveryStatus.SENDING,
                to=DeliveryStatus.PENDING,
                lease_until=None,
                next_attempt_at=now,
            ):
                enqueue_on_commit(DELIVER, delivery_id)
                counts["released"] += 1
    late = now - timedelta(seconds=REPUBLISH_AFTER_SECONDS)
    for delivery_id in WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lte=late
    ).values_list("pk", flat=True)[:500]:
        with transaction.atomic():
            enqueue_on_commit(DELIVER, delivery_id)
        counts["republished"] += 1
    return counts
