"""Configuration and prompt changes get their own review page: what they change, old → new, no internal names."""

from __future__ import annotations

import html

import pytest
from django.test import Client

from agents.models import AgentTool, PromptStatus, PromptVersion
from approvals.forms import REJECT_REASONS
from approvals.four_eyes import agent_configure, prompt_propose
from approvals.models import ActionRequest
from tests.conftest import user

pytestmark = pytest.mark.django_db

INTERNAL = ("apply_agent_config", "activate_prompt", "approvals.actionrequest", "conf 1.00")


def _as(username: str) -> Client:
    client = Client()
    client.force_login(user(username))
    return client


def test_a_settings_change_shows_field_level_old_and_new_and_is_decided_on_its_page(demo, commit):
    outcome = agent_configure(
        agent=demo["crm-cleanup"],
        actor=user("admin"),
        settings={"max_steps": 9},
        tools={"delete_contacts": {"mode": "auto"}},
    )
    proposal = outcome.proposal
    assert proposal is not None and proposal.tier == 0

    page = _as("admin2").get(f"/actions/{proposal.pk}/").content.decode()
    assert "Configuration change" in page and "settings and tool policies" in page
    assert "<tr><th>mode</th><td><del>review</del></td><td><ins>auto</ins></td></tr>" in page.replace(
        '<span class="text">', ""
    ).replace("</span>", "")
    assert "<tr><th>max steps</th><td><del>6</del></td><td><ins>9</ins></td></tr>" in page
    for name in INTERNAL:
        assert name not in page, name
    assert REJECT_REASONS[0] not in page  # an agent action's reject presets do not fit a configuration change

    own = _as("admin").get(f"/actions/{proposal.pk}/").content.decode()
    assert "You proposed this; another admin must decide it." in own and "Approve change" not in own

    with commit():
        response = _as("admin2").post(f"/actions/{proposal.pk}/decide", {"verdict": "approve", "next": "/changes/"})
    assert response.status_code == 302
    assert AgentTool.objects.get(agent=demo["crm-cleanup"], tool="delete_contacts").mode == "auto"


def test_a_prompt_change_is_shown_side_by_side_with_the_live_prompt(demo):
    version, proposal = prompt_propose(
        agent=demo["refund-triage"],
        actor=user("admin"),
        text="You triage refunds.\nAsk for the order id.",
        note="shorter",
    )
    action = ActionRequest.objects.get(pk=proposal.pk) if proposal is not None else None
    assert action is not None
    page = _as("admin2").get(f"/actions/{action.pk}/").content.decode()
    assert f"new prompt, version {version.number}" in page and "shorter" in page
    assert '<table class="diff"' in page and ('class="diff_add"' in page or 'class="diff_chg"' in page)
    assert "Ask for the order id." in html.unescape(page).replace("\xa0", " ")  # difflib keeps spaces as &nbsp;
    for name in INTERNAL:
        assert name not in page, name
    assert PromptVersion.objects.get(pk=version.pk).status != PromptStatus.ACTIVE  # only looked at


def test_the_changes_list_and_the_inbox_row_name_the_change_not_the_internal_tool(demo):
    agent_configure(
        agent=demo["crm-cleanup"], actor=user("admin"), settings={}, tools={"delete_contacts": {"mode": "auto"}}
    )
    page = _as("admin2").get("/changes/").content.decode()
    assert "Configuration change" in page and "CRM clean-up: settings and tool policies" in page
    for name in INTERNAL:
        assert name not in page, name


def test_the_audit_trail_names_targets_for_people(demo):
    agent_configure(
        agent=demo["crm-cleanup"], actor=user("admin"), settings={}, tools={"delete_contacts": {"mode": "auto"}}
    )
    page = _as("auditor").get("/audit/").content.decode()
    assert "approvals.actionrequest" not in page and "<td>action " in page


def test_the_audit_trail_names_permissions_for_people(demo):
    page = _as("auditor").get("/audit/?event=permission.granted").content.decode()
    assert "<ins>Review the agent&#x27;s actions</ins>" in page and "<ins>review_agent</ins>" not in page
