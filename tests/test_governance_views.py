from __future__ import annotations

import csv
import io
import json

import pytest
from django.test import Client

from agents.configuration import tool_settings
from agents.forms import EDITABLE_AGENT_FIELDS
from agents.models import Agent, AgentTool
from agents.services import agent_update
from agents.tools import all_tools
from approvals.models import ActionRequest
from audit.models import AuditEvent
from audit.services import checkpoint_take
from tests.conftest import user

pytestmark = pytest.mark.django_db


def browser(role: str) -> Client:
    client = Client()
    client.force_login(user(role))
    return client


def test_audit_viewer_filters_and_shows_diffs(demo):

    agent_update(agent=demo["refund-triage"], actor=user("admin"), max_steps=12)
    checkpoint_take()
    page = browser("auditor").get("/audit/?event=agent.updated&agent=refund-triage").content.decode()
    assert "agent.updated" in page
    assert "<del>6</del>" in page and "<ins>12</ins>" in page
    assert "<code>permission.granted</code>" not in page
    assert "verified" in page  # the checkpoint's chain status
    by_actor = browser("auditor").get("/audit/?actor=seed_demo").content.decode()
    assert "<code>agent.updated</code>" not in by_actor and "<code>agent.created</code>" in by_actor


def test_exports_are_complete_and_audited(demo):
    client = browser("auditor")
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get("/audit/export.csv").streaming_content).decode())))
    lines = b"".join(client.get("/audit/export.jsonl?event=permission.").streaming_content).decode().splitlines()
    # Each export is audited before it streams, so the CSV includes its own event, not the later one.
    assert len(rows) == AuditEvent.objects.count() - 1
    assert rows[-1]["event"] == "audit.exported"
    assert rows[0]["seq"] == "1" and len(rows[0]["hash"]) == 64
    parsed = [json.loads(line) for line in lines]
    assert parsed and all(p["event"].startswith("permission.") for p in parsed)
    assert AuditEvent.objects.filter(event="audit.exported", actor_label="auditor").count() == 2


def test_access_pages_answer_who_and_what(demo):
    page = browser("auditor").get("/access/agents/crm-cleanup/").content.decode()
    review_line = page.split("Can review</dt>")[1].split("</dd>")[0]
    assert "reviewer<" in review_line and "reviewer2" not in review_line
    mine = browser("admin2").get("/access/users/reviewer2/").content.decode()
    assert "On refund-triage" in mine and "review_agent" in mine and "On crm-cleanup" not in mine


def test_admin_grants_and_revokes_from_the_page_auditor_cannot(demo):
    assert (
        browser("auditor")
        .post("/access/grants", {"agent": "crm-cleanup", "perm": "review_agent", "holder": "reviewer2"})
        .status_code
        == 403
    )
    browser("admin2").post(
        "/access/grants", {"agent": "crm-cleanup", "perm": "review_agent", "holder": "reviewer2", "action": "grant"}
    )
    assert user("reviewer2").has_perm("agents.review_agent", Agent.objects.get(slug="crm-cleanup"))
    browser("admin2").post(
        "/access/grants", {"agent": "crm-cleanup", "perm": "review_agent", "holder": "reviewer2", "action": "revoke"}
    )
    events = list(
        AuditEvent.objects.filter(event__startswith="permission.", actor_label="admin2").values_list("event", flat=True)
    )
    assert events == ["permission.granted", "permission.revoked"]
    browser("admin2").post("/access/roles", {"username": "reviewer2", "role": "Auditor", "action": "assign"})
    assert AuditEvent.objects.filter(event="role.granted", actor_label="admin2").exists()


def _config_post(agent: Agent, **overrides: str) -> dict[str, str]:

    data: dict[str, str] = {}
    for name in EDITABLE_AGENT_FIELDS:
        value = getattr(agent, name)
        data[f"agent-{name}"] = json.dumps(value) if isinstance(value, dict) else ("" if value is None else str(value))
    existing = {t.tool: t for t in AgentTool.objects.filter(agent=agent)}
    for tool in all_tools():
        if tool.name in ("apply_agent_config", "activate_prompt"):
            continue
        values = tool_settings(existing[tool.name]) if tool.name in existing else {}
        for key in ("mode", "over_limit", "on_timeout"):
            data[f"tool-{tool.name}-{key}"] = (
                values.get(key) or {"mode": "review", "over_limit": "deny", "on_timeout": "reject"}[key]
            )
        for key in ("min_confidence", "auto_max_magnitude", "max_magnitude", "target_error_rate"):
            data[f"tool-{tool.name}-{key}"] = "" if values.get(key) is None else str(values[key])
        data[f"tool-{tool.name}-required_approvals"] = str(values.get("required_approvals", 1))
        data[f"tool-{tool.name}-sla_minutes"] = str(values.get("sla_minutes", 60))
        data[f"tool-{tool.name}-timeout_seconds"] = str(values.get("timeout_seconds", 10.0))
        data[f"tool-{tool.name}-max_retries"] = str(values.get("max_retries", 2))
        data[f"tool-{tool.name}-spot_check_rate"] = str(values.get("spot_check_rate", 0.0))
        if values.get("enabled"):
            data[f"tool-{tool.name}-enabled"] = "on"
    data.update(overrides)
    return data


def test_configure_page_saves_a_safe_change(demo):
    agent = Agent.objects.get(slug="refund-triage")
    response = browser("admin2").post(
        "/agents/refund-triage/configure/save", _config_post(agent, **{"agent-max_steps": "7"})
    )
    assert response.status_code == 302
    assert Agent.objects.get(slug="refund-triage").max_steps == 7


def test_configure_page_shows_errors_and_saves_nothing(demo):
    agent = Agent.objects.get(slug="refund-triage")
    data = _config_post(agent, **{"agent-max_steps": "7", "agent-review_threshold": "1.5"})
    response = browser("admin2").post("/agents/refund-triage/configure/save", data)
    assert response.status_code == 400
    assert b"Nothing was saved" in response.content
    assert b"less than or equal to 1.0" in response.content
    assert Agent.objects.get(slug="refund-triage").max_steps == 6


def test_risky_change_from_the_page_goes_to_the_changes_queue(demo):
    agent = Agent.objects.get(slug="refund-triage")
    data = _config_post(agent, **{"tool-issue_refund-auto_max_magnitude": "1000"})
    response = browser("admin2").post("/agents/refund-triage/configure/save", data, follow=True)
    assert b"Waiting for a second admin" in response.content
    proposal = ActionRequest.objects.get(tier=0)
    mine = browser("admin2").get("/changes/").content.decode()
    assert "another admin must decide it" in mine
    theirs = browser("admin").get("/changes/").content.decode()
    assert f"/actions/{proposal.pk}/decide" in theirs
    assert AgentTool.objects.get(agent=agent, tool="issue_refund").auto_max_magnitude == 100


def test_the_proposer_of_a_change_sees_it_waiting_for_a_second_admin_not_an_approve_button(demo):
    agent = Agent.objects.get(slug="refund-triage")
    browser("admin2").post(
        "/agents/refund-triage/configure/save", _config_post(agent, **{"tool-issue_refund-auto_max_magnitude": "1000"})
    )
    proposal = ActionRequest.objects.get(tier=0)
    approve = f'hx-post="/actions/{proposal.pk}/decide"'
    mine = browser("admin2").get("/changes/").content.decode()
    assert approve not in mine
    assert "waiting for a second admin" in mine
    rows = browser("admin2").get("/changes/", headers={"HX-Request": "true"}).content.decode()
    assert approve not in rows and "waiting for a second admin" in rows
    assert approve in browser("admin").get("/changes/").content.decode()


def test_a_failed_configure_post_answers_at_the_configure_page_url(demo):
    agent = Agent.objects.get(slug="refund-triage")
    data = _config_post(agent, **{"agent-review_threshold": "1.5"})
    plain = browser("admin2").post("/agents/refund-triage/configure/save", data)
    assert plain.status_code == 400
    assert 'data-page-url="/agents/refund-triage/configure"' in plain.content.decode()
    htmx = browser("admin2").post("/agents/refund-triage/configure/save", data, headers={"HX-Request": "true"})
    assert htmx.status_code == 400
    assert htmx["HX-Replace-Url"] == "/agents/refund-triage/configure"
    prompt = browser("admin2").post("/agents/refund-triage/prompt", {"text": ""})
    assert prompt.status_code == 400
    assert 'data-page-url="/agents/refund-triage/configure"' in prompt.content.decode()
    assert browser("admin2").get("/agents/refund-triage/configure").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "ftp://models.example/v1",
        "http://",
        "https:///v1",
        "//models.example",
    ],
)
def test_a_provider_base_url_that_is_not_http_with_a_host_is_refused_on_its_field(demo, url):
    agent = Agent.objects.get(slug="refund-triage")
    response = browser("admin2").post(
        "/agents/refund-triage/configure/save", _config_post(agent, **{"agent-base_url": url})
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert 'class="field invalid"><label for="id_agent-base_url"' in body
    assert "Enter an http:// or https:// URL" in body
    assert not ActionRequest.objects.filter(tier=0).exists()
    assert Agent.objects.get(slug="refund-triage").base_url == ""


def test_an_unreadable_audit_date_is_a_field_error_not_a_filter_silently_dropped(demo):
    client = browser("auditor")
    page = client.get("/audit/?since=garbage&until=2026-02-30")
    assert page.status_code == 400
    body = page.content.decode()
    assert body.count("Enter a date as YYYY-MM-DD.") == 2
    assert "<code>agent.created</code>" not in body  # not every event, as if nothing was asked
    exported = AuditEvent.objects.filter(event="audit.exported").count()
    assert client.get("/audit/export.csv?since=garbage").status_code == 400
    assert AuditEvent.objects.filter(event="audit.exported").count() == exported
    assert client.get("/audit/?since=2020-01-01").status_code == 200
