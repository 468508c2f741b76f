"""Decision webhooks against a real HTTP receiver on loopback: each decision and undo is POSTed, signed and
timestamped; a failing receiver is retried with backoff, then the delivery fails and an operator sends it again;
the delivery log and the configuration keep to their rights; the secret is never stored or echoed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from accounts.services import api_token_issue
from approvals import webhooks
from approvals.models import ActionRequest, DecisionWebhook, DeliveryStatus, WebhookDelivery
from audit.models import AuditEvent
from config.api import api
from countersign import InvalidSignature, verify
from tests.conftest import ApiClient, user

pytestmark = pytest.mark.django_db

SECRET = "whsec-test-9f8e7d6c5b4a"
REF = "env:COUNTERSIGN_SECRET_HOOK"


class Receiver:
    """A real HTTP server on loopback that records each POST and answers with the status it is told to."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self.echo = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append({"headers": dict(self.headers), "body": body})
                answer = json.dumps(dict(self.headers)).encode() if outer.echo else b"ok"
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def event(self, index: int = -1) -> dict[str, Any]:
        got = self.received[index]
        return verify(SECRET, body=got["body"], headers=got["headers"])


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("COUNTERSIGN_SECRET_HOOK", SECRET)
    running = Receiver()
    yield running
    running.server.shutdown()


@pytest.fixture
def people(demo_user: Any, refund_agent: Any, orders: None) -> None:
    for name in ("admin", "operator", "reviewer", "reviewer2"):
        demo_user(name)


def _hooked(receiver: Receiver, api_as: Any) -> None:
    answer = api_as("admin").client.put(
        "/api/v1/agents/refund-triage/webhook",
        data=json.dumps({"url": receiver.url, "secret_ref": REF}),
        content_type="application/json",
        headers=api_as("admin").headers,
    )
    assert answer.status_code == 200, answer.content


def _pending_refund(api_as: Any, amount: int = 150) -> int:
    body = {"tool": "issue_refund", "arguments": {"order_id": "ORD-1002", "amount": amount, "reason": "x"}}
    made = api_as("operator").post("/api/v1/agents/refund-triage/actions", {**body, "confidence": 0.5})
    assert made.status_code == 201 and made.json()["status"] == "pending", made.content
    return int(made.json()["id"])


def test_a_decision_is_posted_signed_and_timestamped(
    people: None, api_as: Any, receiver: Receiver, commit: Any
) -> None:
    _hooked(receiver, api_as)
    action_id = _pending_refund(api_as)
    with commit():
        decided = api_as("reviewer").post(
            f"/api/v1/actions/{action_id}/decision", {"verdict": "reject", "comment": "dup"}
        )
    assert decided.status_code == 200
    event = receiver.event()
    assert event["event"] == "decision" and event["action"]["id"] == action_id
    assert event["action"]["status"] == "rejected" and event["action"]["decision"]["comment"] == "dup"
    headers = receiver.received[-1]["headers"]
    assert headers["Countersign-Event"] == "decision" and abs(int(headers["Countersign-Timestamp"]) - time.time()) < 60
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1 and delivery.last_status_code == 200
    assert event["id"] == delivery.event_id
    # What arrived is what the OpenAPI document's `webhooks` says is sent.
    document = api.get_openapi_schema()
    documented = document["webhooks"]["decision"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    jsonschema.validate(event, {**documented, "components": document["components"]})
    # The secret is referenced, never stored.
    assert SECRET not in json.dumps(list(DecisionWebhook.objects.values()), default=str) + delivery.last_error


def test_a_failing_receiver_is_retried_with_backoff_then_the_delivery_fails_and_can_be_sent_again(
    people: None, api_as: Any, receiver: Receiver, commit: Any
) -> None:
    _hooked(receiver, api_as)
    receiver.status = 503
    receiver.echo = True  # it answers with what it got, the signature included
    action_id = _pending_refund(api_as)
    with commit():
        api_as("reviewer").post(f"/api/v1/actions/{action_id}/decision", {"verdict": "reject", "comment": "dup"})
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1 and delivery.last_status_code == 503
    assert delivery.next_attempt_at > timezone.now()  # backed off: not sent again at once
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == ""  # not due yet
    assert SECRET not in delivery.last_error  # the echoed headers hold no secret, and what is kept is scrubbed
    for attempt in range(2, webhooks.MAX_ATTEMPTS + 1):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        with commit():
            outcome = webhooks.webhook_deliver(delivery_id=delivery.pk)
        assert outcome == ("failed" if attempt == webhooks.MAX_ATTEMPTS else "retry")
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == webhooks.MAX_ATTEMPTS
    assert len(receiver.received) == webhooks.MAX_ATTEMPTS

    receiver.status = 200
    operator = api_as("operator")
    with commit():
        again = operator.post(f"/api/v1/webhook-deliveries/{delivery.pk}/redeliver")
    assert again.status_code == 201, again.content
    assert again.json()["requested_by"] == "operator"  # sent when its transaction commits
    assert WebhookDelivery.objects.get(pk=again.json()["id"]).status == DeliveryStatus.DELIVERED
    assert receiver.event()["id"] == delivery.event_id  # the same event, for the receiver to drop if seen
    assert AuditEvent.objects.filter(event="webhook.redelivered").count() == 1
    log = operator.get("/api/v1/agents/refund-triage/webhook/deliveries").json()["items"]
    assert [d["status"] for d in log] == ["delivered", "failed"]


def test_an_unreachable_receiver_is_logged_and_retried(people: None, api_as: Any, receiver: Receiver) -> None:
    _hooked(receiver, api_as)
    receiver.server.shutdown()
    receiver.server.server_close()
    action = ActionRequest.objects.get(pk=_pending_refund(api_as))
    delivery = webhooks.webhook_queue(action, event=webhooks.DECISION)
    assert delivery is not None
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.last_status_code is None and "ConnectError" in delivery.last_error


def test_a_dead_workers_delivery_is_released_and_sent_by_the_sweep(
    people: None, api_as: Any, receiver: Receiver, commit: Any
) -> None:
    _hooked(receiver, api_as)
    action = ActionRequest.objects.get(pk=_pending_refund(api_as))
    delivery = webhooks.webhook_queue(action, event=webhooks.DECISION)
    assert delivery is not None
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.SENDING, lease_until=timezone.now() - timedelta(seconds=1)
    )
    with commit():
        assert webhooks.webhooks_sweep() == {"republished": 0, "released": 1}
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and len(receiver.received) == 1


def test_only_whoever_configures_sets_it_and_whoever_operates_reads_the_log(
    people: None, api_as: Any, receiver: Receiver, outsider: Any
) -> None:
    body = json.dumps({"url": receiver.url, "secret_ref": REF})

    def put(client: ApiClient, payload: str = body) -> Any:
        return client.client.put(
            "/api/v1/agents/refund-triage/webhook",
            data=payload,
            content_type="application/json",
            headers=client.headers,
        )

    stranger = ApiClient(api_token_issue(user=outsider, actor=None))
    assert put(api_as("operator")).status_code == 403
    assert put(stranger).status_code == 404
    assert api_as("operator").get("/api/v1/agents/refund-triage/webhook").json()["configured"] is False
    assert api_as("reviewer").get("/api/v1/agents/refund-triage/webhook/deliveries").status_code == 404
    bad = put(api_as("admin"), json.dumps({"url": receiver.url, "secret_ref": "env:DATABASE_URL"}))
    assert bad.status_code == 400 and "COUNTERSIGN_SECRET_" in bad.json()["detail"]
    assert put(api_as("admin")).status_code == 200
    assert api_as("operator").get("/api/v1/agents/refund-triage/webhook").json()["url"] == receiver.url
    assert AuditEvent.objects.filter(event="webhook.configured").count() == 1
    delivery = webhooks.webhook_queue(ActionRequest.objects.get(pk=_pending_refund(api_as)), event="decision")
    assert delivery is not None
    assert api_as("reviewer").post(f"/api/v1/webhook-deliveries/{delivery.pk}/redeliver").status_code == 404
    removed = api_as("admin").client.delete("/api/v1/agents/refund-triage/webhook", headers=api_as("admin").headers)
    assert removed.status_code == 204 and not DecisionWebhook.objects.exists()


def test_an_undo_is_posted(people: None, api_as: Any, receiver: Receiver, commit: Any) -> None:
    _hooked(receiver, api_as)
    action_id = _pending_refund(api_as, amount=40)
    with commit():
        api_as("reviewer").post(f"/api/v1/actions/{action_id}/decision", {"verdict": "approve"})
    assert ActionRequest.objects.get(pk=action_id).status == "executed"
    with commit():
        undone = api_as("reviewer").post(f"/api/v1/actions/{action_id}/undo", {"comment": "refunded twice"})
    assert undone.status_code == 200, undone.content
    assert [receiver.event(i)["event"] for i in range(len(receiver.received))] == ["decision", "undone"]
    assert receiver.event()["action"]["status"] == "compensated"


@given(body=st.binary(max_size=200), skew=st.integers(-10_000, 10_000))
def test_a_receiver_accepts_only_a_recent_unaltered_signed_body(body: bytes, skew: int) -> None:
    now = 1_800_000_000
    signed = {
        "Countersign-Timestamp": str(now + skew),
        "Countersign-Signature": webhooks.signature(SECRET, now + skew, body),
    }
    if abs(skew) <= 300:
        try:
            verify(SECRET, body=body, headers=signed, now=now)
        except (InvalidSignature, ValueError) as exc:  # a body that is not JSON is refused after the signature
            assert not isinstance(exc, InvalidSignature)
    else:
        with pytest.raises(InvalidSignature):
            verify(SECRET, body=body, headers=signed, now=now)
    with pytest.raises(InvalidSignature):
        verify(SECRET, body=body + b" ", headers=signed, now=now)
    with pytest.raises(InvalidSignature):
        verify(SECRET + "x", body=body, headers=signed, now=now)


def test_the_delivery_log_page_shows_operators_the_deliveries_and_sends_one_again(
    people: None, api_as: Any, receiver: Receiver, client: Any, commit: Any, django_assert_max_num_queries: Any
) -> None:
    _hooked(receiver, api_as)
    for _ in range(3):
        webhooks.webhook_queue(ActionRequest.objects.get(pk=_pending_refund(api_as)), event=webhooks.DECISION)
    client.force_login(user("operator"))
    with django_assert_max_num_queries(12):  # constant: not one per delivery
        page = client.get("/agents/refund-triage/webhook/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="delivery-pending"') == 3 and 'name="url"' not in html  # operators do not configure
    first = WebhookDelivery.objects.order_by("pk").first()
    assert first is not None
    with commit():
        sent = client.post(f"/webhook-deliveries/{first.pk}/redeliver")
    assert sent.status_code == 302 and WebhookDelivery.objects.count() == 4
    assert client.get(f"/webhook-deliveries/{first.pk}/redeliver").status_code == 405

    client.force_login(user("reviewer"))  # may review, neither operates nor configures
    assert client.get("/agents/refund-triage/webhook/").status_code == 404
    assert client.post(f"/webhook-deliveries/{first.pk}/redeliver").status_code == 404
    client.force_login(user("admin"))
    saved = client.post("/agents/refund-triage/webhook/save", {"url": receiver.url, "secret_ref": "env:PATH"})
    assert saved.status_code == 302 and DecisionWebhook.objects.get().secret_ref == REF  # refused, unchanged


@pytest.mark.parametrize("url", ["http://" + "a" * 64 + ".example/hook", "http://[::1/hook", "http://\u2603.example"])
def test_a_url_no_call_could_reach_is_refused_when_set_and_logged_if_stored(
    people: None, api_as: Any, receiver: Receiver, url: str
) -> None:
    admin = api_as("admin")
    refused = admin.client.put(
        "/api/v1/agents/refund-triage/webhook",
        data=json.dumps({"url": url, "secret_ref": REF}),
        content_type="application/json",
        headers=admin.headers,
    )
    assert refused.status_code == 400 and not DecisionWebhook.objects.exists()
    # One stored before the check (or by hand) is tried, logged and retried: never a crashed worker.
    _hooked(receiver, api_as)
    DecisionWebhook.objects.update(url=url)
    delivery = webhooks.webhook_queue(ActionRequest.objects.get(pk=_pending_refund(api_as)), event="decision")
    assert delivery is not None
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.last_error
