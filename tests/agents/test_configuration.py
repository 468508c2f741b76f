from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from agents.configuration import active_prompt, agent_set_paused, prompt_rollback
from agents.models import Agent, AgentTool, PromptVersion, Run
from agents.services import run_start
from approvals import selectors
from approvals.decisions import action_request_decide
from approvals.four_eyes import agent_configure, prompt_propose
from approvals.models import ActionRequest, ActionStatus
from approvals.sla import sla_tick
from audit.models import AuditEvent
from core.errors import Conflict, Forbidden, InvalidInput
from tests.conftest import refund_input, user

pytestmark = pytest.mark.django_db


def test_a_safe_change_applies_at_once_and_is_audited(refund_agent, demo_user):
    demo_user("admin")
    outcome = agent_configure(
        agent=refund_agent, actor=user("admin"), settings={"max_steps": 10, "review_threshold": 0.9}, tools={}
    )
    assert outcome.applied
    agent = Agent.objects.get(slug="refund-triage")
    assert (agent.max_steps, agent.review_threshold) == (10, 0.9)
    event = AuditEvent.objects.filter(event="agent.updated").latest("seq")
    assert event.before == {"max_steps": 6, "review_threshold": 0.8}
    assert event.after == {"max_steps": 10, "review_threshold": 0.9}
    assert event.actor_label == "admin"


@pytest.mark.parametrize(
    ("changes", "tools", "reason"),
    [
        ({"review_threshold": 0.5}, {}, "lowers the review threshold from 0.80 to 0.50"),
        ({}, {"issue_refund": {"auto_max_magnitude": "500"}}, "raises auto_max_magnitude from 100.00 to 500"),
        ({}, {"issue_refund": {"auto_max_magnitude": None}}, "removes the limit auto_max_magnitude"),
        ({}, {"issue_refund": {"min_confidence": 0.3}}, "lowers the minimum confidence from 0.80 to 0.30"),
        ({}, {"delete_contacts": {"enabled": True, "mode": "review"}}, "enables a destructive tool"),
    ],
)
def test_risky_changes_wait_for_a_second_admin(refund_agent, demo_user, changes, tools, reason):
    demo_user("admin")
    before = (Agent.objects.get(slug="refund-triage").review_threshold, AgentTool.objects.count())
    outcome = agent_configure(agent=refund_agent, actor=user("admin"), settings=changes, tools=tools)
    assert not outcome.applied
    assert any(reason in r for r in outcome.risky), outcome.risky
    proposal = outcome.proposal
    assert proposal.tier == 0 and proposal.status == ActionStatus.PENDING
    assert (Agent.objects.get(slug="refund-triage").review_threshold, AgentTool.objects.count()) == before


def test_switching_a_tool_to_auto_is_risky(crm_agent, demo_user):
    demo_user("admin")
    outcome = agent_configure(
        agent=crm_agent, actor=user("admin"), settings={}, tools={"delete_contacts": {"mode": "auto"}}
    )
    assert outcome.risky == ["delete_contacts: switches to auto"]


def test_the_proposer_cannot_approve_and_a_second_admin_applies_it(refund_agent, demo_user, commit):
    demo_user("admin")
    demo_user("admin2")
    outcome = agent_configure(
        agent=refund_agent, actor=user("admin"), settings={"review_threshold": 0.5, "max_steps": 9}, tools={}
    )
    proposal = outcome.proposal
    with pytest.raises(Forbidden):
        action_request_decide(action=proposal, actor=user("admin"), verdict="approve")
    with pytest.raises(InvalidInput):
        action_request_decide(action=proposal, actor=user("admin2"), verdict="edit", arguments={})
    with commit():
        action_request_decide(action=proposal, actor=user("admin2"), verdict="approve")
    proposal.refresh_from_db()
    assert proposal.status == ActionStatus.EXECUTED
    agent = Agent.objects.get(slug="refund-triage")
    assert (agent.review_threshold, agent.max_steps) == (0.5, 9)
    applied = AuditEvent.objects.filter(event="agent.updated").latest("seq")
    assert applied.actor_label == "four eyes: admin + admin2"
    assert applied.before == {"max_steps": 6, "review_threshold": 0.8}


def test_a_rejected_change_is_never_applied(refund_agent, demo_user, commit):
    demo_user("admin")
    demo_user("admin2")
    outcome = agent_configure(agent=refund_agent, actor=user("admin"), settings={"review_threshold": 0.1}, tools={})
    with commit():
        action_request_decide(action=outcome.proposal, actor=user("admin2"), verdict="reject", comment="too low")
    assert Agent.objects.get(slug="refund-triage").review_threshold == 0.8


def test_invalid_configuration_saves_nothing(refund_agent, demo_user):
    demo_user("admin")
    with pytest.raises(InvalidInput) as caught:
        agent_configure(
            agent=refund_agent,
            actor=user("admin"),
            settings={"max_steps": 0, "review_threshold": 0.9},
            tools={"issue_refund": {"required_approvals": 9}},
        )
    assert "max_steps" in caught.value.details
    assert "issue_refund.required_approvals" in caught.value.details
    agent = Agent.objects.get(slug="refund-triage")
    assert agent.review_threshold == 0.8  # the valid part was not applied either
    assert not ActionRequest.objects.filter(tier=0).exists()


def test_prompt_versions_four_eyes_and_rollback(refund_agent, orders, demo_user, commit):
    demo_user("admin")
    demo_user("admin2")
    agent = refund_agent
    v1 = active_prompt(agent)
    version, proposal = prompt_propose(agent=agent, actor=user("admin"), text="Be terse. Refund only with a receipt.")
    assert version.number == 2 and version.status == "proposed"
    with commit():
        old_run = run_start(agent=agent, input=refund_input(amount=300), actor=None)
    assert Run.objects.get(pk=old_run.pk).prompt_version == v1
    with commit():
        action_request_decide(action=proposal, actor=user("admin2"), verdict="approve")
    assert active_prompt(agent).number == 2
    assert Agent.objects.get(pk=agent.pk).system_prompt == "Be terse. Refund only with a receipt."
    with commit():
        new_run = run_start(agent=agent, input=refund_input(amount=300), actor=None)
    assert Run.objects.get(pk=new_run.pk).prompt_version.number == 2
    assert new_run.steps.filter(kind="llm_call").first().payload["prompt_version"] == 2
    prompt_rollback(agent=agent, version=PromptVersion.objects.get(agent=agent, number=1), actor=user("admin"))
    assert active_prompt(agent).number == 1
    assert AuditEvent.objects.filter(event="prompt.rolled_back", actor_label="admin").exists()
    with pytest.raises(Conflict):
        prompt_rollback(agent=agent, version=PromptVersion.objects.get(agent=agent, number=1), actor=user("admin"))
    proposed = AuditEvent.objects.get(event="prompt.proposed")
    assert "+Be terse. Refund only with a receipt." in proposed.after["diff"]


def test_pause_is_an_operator_action_not_a_policy_change(refund_agent, orders, demo_user, commit):
    demo_user("operator")

    agent_set_paused(agent=refund_agent, actor=user("operator"), paused=True)
    assert Agent.objects.get(slug="refund-triage").is_paused
    with pytest.raises(Conflict):
        run_start(agent=Agent.objects.get(slug="refund-triage"), input=refund_input(), actor=None)
    assert AuditEvent.objects.filter(event="agent.updated", actor_label="operator").latest("seq").after == {
        "is_paused": True
    }


def test_reviewer_group_limits_who_sees_a_tools_calls(refund_agent, orders, demo_user, commit):
    demo_user("reviewer")
    demo_user("reviewer2")

    seniors = Group.objects.create(name="Refund seniors")
    user("reviewer").groups.add(seniors)
    AgentTool.objects.filter(tool="issue_refund").update(reviewer_group=seniors)
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=300), actor=None)
    action = ActionRequest.objects.get(run=run)
    assert selectors.actions_reviewable_by(user("reviewer")).filter(pk=action.pk).exists()
    assert not selectors.actions_reviewable_by(user("reviewer2")).filter(pk=action.pk).exists()


def test_per_tool_minimum_confidence(refund_agent, orders, commit):
    AgentTool.objects.filter(tool="issue_refund").update(min_confidence=Decimal("0.99"))
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=20), actor=None)
    action = ActionRequest.objects.get(run=run)
    assert action.status == ActionStatus.PENDING
    assert "below the threshold 0.99" in action.route_reason


@pytest.mark.parametrize(
    "ref",
    ["env:DATABASE_URL", "env:SECRET_KEY", "file:/etc/passwd", "file:/run/secrets/../../etc/shadow", "vault:x"],
)
def test_key_references_outside_the_allow_list_are_refused(refund_agent, demo_user, ref):
    demo_user("admin")
    with pytest.raises(InvalidInput, match="api_key_ref"):
        agent_configure(agent=refund_agent, actor=user("admin"), settings={"api_key_ref": ref}, tools={})


def test_pointing_an_agent_at_another_model_server_needs_four_eyes(refund_agent, demo_user):
    demo_user("admin")
    outcome = agent_configure(
        agent=refund_agent,
        actor=user("admin"),
        settings={
            "provider": "openai",
            "base_url": "http://models.example/v1",
            "api_key_ref": "env:COUNTERSIGN_SECRET_X",
        },
        tools={},
    )
    assert not outcome.applied
    assert "changes base_url (where prompts and the key are sent)" in outcome.risky


@pytest.mark.parametrize(
    ("tools", "reason"),
    [
        ({"issue_refund": {"on_timeout": "approve"}}, "approves on timeout"),
        ({"issue_refund": {"required_approvals": 1}}, "lowers required approvals from 2 to 1"),
        ({"issue_refund": {"over_limit": "review"}}, "instead of denying them"),
    ],
)
def test_more_ways_to_weaken_review_need_four_eyes(refund_agent, demo_user, tools, reason):
    demo_user("admin")
    AgentTool.objects.filter(tool="issue_refund").update(required_approvals=2)
    outcome = agent_configure(agent=refund_agent, actor=user("admin"), settings={}, tools=tools)
    assert any(reason in r for r in outcome.risky), outcome.risky


def test_a_reviewer_group_change_records_the_old_and_new_group(refund_agent, demo_user):
    demo_user("admin")

    Group.objects.create(name="g1")
    Group.objects.create(name="g2")
    tools = {"issue_refund": {"reviewer_group": "g1"}}
    agent_configure(agent=refund_agent, actor=user("admin"), settings={}, tools=tools)
    tools = {"issue_refund": {"reviewer_group": "g2"}}
    agent_configure(agent=refund_agent, actor=user("admin"), settings={}, tools=tools)
    event = AuditEvent.objects.filter(event="agent.tool_configured").latest("seq")
    assert (event.before["reviewer_group"], event.after["reviewer_group"]) == ("g1", "g2")
    assert AgentTool.objects.get(tool="issue_refund").reviewer_group.name == "g2"


def test_a_rejected_prompt_version_shows_as_rejected_not_proposed(refund_agent, demo_user, commit):
    demo_user("admin")
    demo_user("admin2")

    agent = refund_agent
    version, proposal = prompt_propose(agent=agent, actor=user("admin"), text="Refund everything, always.")
    with commit():
        action_request_decide(action=proposal, actor=user("admin2"), verdict="reject", comment="too generous")
    version.refresh_from_db()
    assert version.status == "rejected"
    event = AuditEvent.objects.get(event="prompt.rejected")
    assert (event.actor_label, event.after["number"]) == ("admin2", version.number)
    assert active_prompt(agent).number == 1
    client = Client()
    client.force_login(user("admin"))
    page = client.get("/agents/refund-triage/configure").content.decode()
    assert f'<strong>v{version.number}</strong> <span class="status status-rejected">rejected</span>' in page


def test_a_prompt_version_whose_proposal_expired_is_rejected_too(refund_agent, demo_user, commit):
    demo_user("admin")

    version, proposal = prompt_propose(agent=refund_agent, actor=user("admin"), text="Be brief.")
    ActionRequest.objects.filter(pk=proposal.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    with commit():
        assert sla_tick()["expired"] == 1
    version.refresh_from_db()
    assert version.status == "rejected"
    assert AuditEvent.objects.get(event="prompt.rejected").actor_label == "sla"


def test_a_provider_base_url_must_be_http_with_a_host(refund_agent, demo_user):
    demo_user("admin")
    with pytest.raises(InvalidInput) as caught:
        agent_configure(agent=refund_agent, actor=user("admin"), settings={"base_url": "javascript:alert(1)"}, tools={})
    assert "base_url" in caught.value.details
    assert not ActionRequest.objects.filter(tier=0).exists()
