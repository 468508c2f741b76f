from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts.services import api_token_issue
from agents.breakers import breaker_for
from agents.models import BreakerState, CircuitBreaker
from agents.services import agent_permission_grant, run_start
from approvals.claims import action_request_claim
from approvals.decisions import action_request_decide
from approvals.models import ActionRequest, Notification
from audit.models import AuditEvent
from ops.alerts import alert_rule_switch, alerts_evaluate
from ops.models import Alert, AlertRule, CalibrationBucket
from ops.selectors import agent_health, calibration
from tests.conftest import refund_input, user

pytestmark = pytest.mark.django_db


def run(demo, commit, **kw):
    with commit():
        r = run_start(agent=demo["refund-triage"], input=refund_input(**kw), actor=None)
    return r


def test_health_counts_what_happened(demo, commit):
    run(demo, commit, amount=20)  # auto, executed, succeeded
    run(demo, commit, amount=20)
    waiting = run(demo, commit, amount=300)  # review
    action = ActionRequest.objects.get(run=waiting)
    action_request_claim(action=action, actor=user("reviewer"))
    with commit():
        action_request_decide(
            action=action, actor=user("reviewer"), verdict="edit", arguments=dict(action.arguments, amount=50)
        )
    h = agent_health(demo["refund-triage"], timedelta(hours=24))
    t = h["totals"]
    assert (t["runs_started"], t["runs_done"], t["runs_done_with_edits"]) == (3, 2, 1)
    assert (t["actions_routed"], t["routed_auto"], t["routed_review"]) == (3, 2, 1)
    assert (t["decisions_edit"], t["executions"], t["auto_executed"]) == (1, 3, 2)
    assert h["success_rate"] == 1.0
    assert h["escalation_rate"] == pytest.approx(1 / 3)
    assert h["edit_rate"] == 1.0
    assert h["run_p50"] is not None and h["decision_p95"] is not None
    assert h["tools"] == [{"tool": "issue_refund", "calls": 3, "errors": 0, "error_rate": 0.0}]
    assert h["business"]["automated_per_day"] == 2.0
    assert h["business"]["reviewer_hours"] > 0
    assert h["business"]["errors_per_1000"] == 0.0


def test_calibration_reliability_and_brier(demo, commit):
    # Three reviewed refunds: confident (0.96) approved, confident edited, unsure (0.61) rejected.
    decisions = [("arrived broken", "approve"), ("arrived broken", "edit"), ("maybe broken? not sure", "reject")]
    for ticket, verdict in decisions:
        r = run(demo, commit, amount=300, ticket=ticket)
        action = ActionRequest.objects.get(run=r)
        args = dict(action.arguments, amount=10) if verdict == "edit" else None
        with commit():
            action_request_decide(action=action, actor=user("reviewer"), verdict=verdict, arguments=args, comment="x")
    assert CalibrationBucket.objects.count() == 2
    [tool] = calibration(demo["refund-triage"], timedelta(days=7))
    assert tool["reviewed"] == 3
    assert sorted(ActionRequest.objects.values_list("confidence", flat=True)) == [0.61, 0.96, 0.96]
    # Brier: (0.96-1)^2 + (0.96-0)^2 + (0.61-0)^2, over 3
    assert tool["brier"] == pytest.approx(((0.96 - 1) ** 2 + 0.96**2 + 0.61**2) / 3)
    by_bin = {p["bin"]: p for p in tool["reliability"]}
    assert by_bin[9]["agreement"] == 0.5 and by_bin[6]["agreement"] == 0.0


@pytest.fixture
def webhook_server():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": dict(self.headers), "body": body})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_alert_fires_once_notifies_signs_the_webhook_and_resolves(demo, commit, settings, monkeypatch, webhook_server):
    url, received = webhook_server
    monkeypatch.setenv("COUNTERSIGN_SECRET_HOOK", "hook-secret-123")
    settings.EMAIL_NOTIFICATIONS = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    agent = demo["refund-triage"]
    rule = AlertRule.objects.create(
        name="breakers",
        kind="breaker_open",
        agent=agent,
        email=True,
        webhook_url=url,
        webhook_secret_ref="env:COUNTERSIGN_SECRET_HOOK",
    )
    breaker = breaker_for(agent, "issue_refund")
    CircuitBreaker.objects.filter(pk=breaker.pk).update(state=BreakerState.OPEN)
    with commit():
        assert alerts_evaluate()["fired"] == 1
    with commit():
        assert alerts_evaluate() == {"fired": 0, "still_firing": 1, "resolved": 0}  # deduplicated
    assert Alert.objects.filter(rule=rule, resolved_at__isnull=True).count() == 1
    assert Notification.objects.filter(user__username="operator", text__startswith="Alert:").count() == 1
    assert any("operator@example.com" in m.to for m in mail.outbox)
    [hook] = received
    expected = "sha256=" + hmac.new(b"hook-secret-123", hook["body"], hashlib.sha256).hexdigest()
    assert hook["headers"]["X-Countersign-Signature"] == expected
    payload = json.loads(hook["body"])
    assert payload["state"] == "firing" and payload["agent"] == "refund-triage"
    CircuitBreaker.objects.filter(pk=breaker.pk).update(state=BreakerState.CLOSED)
    with commit():
        assert alerts_evaluate()["resolved"] == 1
    assert json.loads(received[-1]["body"])["state"] == "resolved"
    assert list(AuditEvent.objects.filter(event__startswith="alert.").values_list("event", flat=True)) == [
        "alert.fired",
        "alert.resolved",
    ]
    assert Alert.objects.get(rule=rule).webhook_status == "resolved: HTTP 204"


def test_sla_and_failure_rules(demo, commit):
    AlertRule.objects.create(name="late", kind="sla_breaches", agent=demo["refund-triage"], threshold=1)
    r = run(demo, commit, amount=300)
    ActionRequest.objects.filter(run=r).update(due_at=timezone.now() - timedelta(minutes=1))
    assert alerts_evaluate()["fired"] == 1
    assert "1 pending action(s) past their SLA" in Alert.objects.get().message


def test_alert_rules_page_creates_rules_audited_and_validates(demo):
    client = Client()
    client.force_login(user("operator"))
    bad = client.post(
        "/ops/alerts/",
        {
            "name": "x",
            "kind": "breaker_open",
            "agent": demo["refund-triage"].pk,
            "threshold": 1,
            "webhook_url": "https://hooks.example/x",
        },
    )
    assert bad.status_code == 400 and b"needs a signing secret" in bad.content
    ok = client.post(
        "/ops/alerts/",
        {
            "name": "spikes",
            "kind": "escalation_spike",
            "agent": demo["refund-triage"].pk,
            "threshold": 2,
            "enabled": "on",
        },
    )
    assert ok.status_code == 302
    assert AuditEvent.objects.filter(event="alert_rule.created", actor_label="operator").count() == 1
    reviewer = Client()
    reviewer.force_login(user("reviewer"))
    refused = reviewer.post(
        "/ops/alerts/", {"name": "x", "kind": "breaker_open", "agent": demo["refund-triage"].pk, "threshold": 1}
    )
    assert refused.status_code == 400  # the agent is not one the reviewer may operate


def test_metrics_endpoint_is_protected_and_scoped(demo, commit):
    run(demo, commit, amount=20)
    assert Client().get("/metrics").status_code == 401
    token = api_token_issue(user=user("operator"), actor=None)
    body = Client().get("/metrics", headers={"Authorization": f"Bearer {token}"}).content.decode()
    assert 'countersign_runs_started_total{agent="refund-triage"} 1.0' in body
    assert "countersign_pending_actions" in body
    limited = api_token_issue(user=user("reviewer"), actor=None)
    body = Client().get("/metrics", headers={"Authorization": f"Bearer {limited}"}).content.decode()
    assert "refund-triage" not in body


def test_pages_render_for_operators_and_404_for_others(demo, commit):
    run(demo, commit, amount=300, ticket="maybe? not sure")
    client = Client()
    client.force_login(user("operator"))
    for window in ("24h", "7d", "30d"):
        page = client.get(f"/ops/agents/refund-triage/?window={window}")
        assert page.status_code == 200
        assert b"<svg" in page.content and b"Confidence calibration" in page.content
    assert client.get("/ops/").status_code == 200
    reviewer = Client()
    reviewer.force_login(user("reviewer"))
    assert reviewer.get("/ops/agents/refund-triage/").status_code == 404
    assert b"Nothing needs you right now" in reviewer.get("/ops/").content


def test_an_alert_rule_without_an_agent_covers_the_agents_its_creator_operates(demo, commit):

    refunds_only = get_user_model().objects.create_user(username="refund-operator", password="x")
    agent_permission_grant(agent=demo["refund-triage"], perm="operate_agent", to=refunds_only, actor=None)
    client = Client()
    client.force_login(refunds_only)
    created = client.post(
        "/ops/alerts/", {"name": "any breaker", "kind": "breaker_open", "threshold": 1, "enabled": "on"}
    )
    assert created.status_code == 302
    rule = AlertRule.objects.get(name="any breaker")
    assert rule.agent is None and rule.created_by == refunds_only
    for slug, tool in (("refund-triage", "issue_refund"), ("crm-cleanup", "delete_contacts")):
        CircuitBreaker.objects.filter(pk=breaker_for(demo[slug], tool).pk).update(state=BreakerState.OPEN)
    with commit():
        assert alerts_evaluate()["fired"] == 1
    assert list(Alert.objects.values_list("agent__slug", flat=True)) == ["refund-triage"]
    # The creator can switch off the rule they made for all their agents.
    assert client.post(f"/ops/alerts/{rule.pk}/toggle").status_code == 302
    assert AlertRule.objects.get(pk=rule.pk).enabled is False


def test_a_failure_rate_threshold_out_of_range_is_refused_at_the_alerts_page_url(demo):
    client = Client()
    client.force_login(user("operator"))
    response = client.post("/ops/alerts/", {"name": "huge", "kind": "failure_rate", "threshold": "1e308"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "For this kind the threshold is between 0.001 and 1." in body
    assert 'data-page-url="/ops/alerts/"' in body
    assert not AlertRule.objects.filter(name="huge").exists()


def test_two_switches_from_the_same_page_flip_a_rule_once(demo):
    rule = AlertRule.objects.create(name="late", kind="sla_breaches", agent=demo["refund-triage"], threshold=1)
    seen = AlertRule.objects.get(pk=rule.pk)  # both admins' pages show it enabled
    admin, admin2 = Client(), Client()
    admin.force_login(user("admin"))
    admin2.force_login(user("admin2"))
    assert admin.post(f"/ops/alerts/{rule.pk}/toggle").status_code == 302
    assert not alert_rule_switch(rule=seen, actor=user("admin2"), enabled=not seen.enabled)
    rule.refresh_from_db()
    assert rule.enabled is False
    assert AuditEvent.objects.filter(event="alert_rule.updated", target_id=str(rule.pk)).count() == 1
