from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.utils import timezone

from agents.models import Agent, AgentTool, RunStatus
from agents.services import agent_permission_grant, run_start
from approvals import claims, decisions, selectors, sla
from approvals.models import ActionRequest, ActionStatus, Decision, Notification
from audit.models import AuditEvent
from core.errors import Conflict, Forbidden
from demo.models import Refund
from tests.conftest import refund_input, user

pytestmark = pytest.mark.django_db


def pending(commit, *, amount=300, ticket="arrived broken", agent="refund-triage", ids=None, actor=None):
    payload = (
        {"request": "x", "contact_ids": ids or [3]}
        if agent == "crm-cleanup"
        else refund_input(amount=amount, ticket=ticket, order="ORD-1003")
    )
    with commit():
        run = run_start(agent=Agent.objects.get(slug=agent), input=payload, actor=actor)
    return ActionRequest.objects.get(run=run)


def test_inbox_puts_the_riskiest_first_then_the_nearest_deadline(
    refund_agent, crm_agent, orders, contacts, demo_user, commit
):
    demo_user("reviewer")
    confident_refund = pending(commit, amount=300)
    unsure_refund = pending(commit, amount=300, ticket="maybe broken? not sure")
    deletion = pending(commit, agent="crm-cleanup")
    later = pending(commit, amount=300)
    ActionRequest.objects.filter(pk=later.pk).update(due_at=timezone.now() + timedelta(hours=5))
    order = [a.pk for a in selectors.inbox_for(user("reviewer"))]
    # 300 of an order's 351 outweighs deleting one contact of 200; doubt adds; same score: earlier deadline first
    assert order == [unsure_refund.pk, confident_refund.pk, later.pk, deletion.pk]
    assert unsure_refund.risk_score > confident_refund.risk_score == later.risk_score > deletion.risk_score


def test_keyset_pages_cover_every_item_once_even_with_ties(refund_agent, orders, demo_user, commit):
    demo_user("reviewer")
    ids = {pending(commit).pk for _ in range(7)}
    ActionRequest.objects.update(due_at=timezone.now() + timedelta(hours=1))  # all tied on score and due
    seen: list[int] = []
    cursor = None
    while True:
        page = selectors.inbox_for(user("reviewer"), cursor=cursor, limit=3)
        if not page:
            break
        seen += [a.pk for a in page]
        cursor = selectors.InboxCursor.after(page[-1])
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))


def test_filters_by_agent_tool_impact_and_age(refund_agent, crm_agent, orders, contacts, demo_user, commit):
    demo_user("reviewer")
    refund = pending(commit)
    deletion = pending(commit, agent="crm-cleanup")
    ActionRequest.objects.filter(pk=refund.pk).update(created_at=timezone.now() - timedelta(hours=2))
    reviewer = user("reviewer")

    def ids(**kw):
        return [a.pk for a in selectors.inbox_for(reviewer, filters=selectors.InboxFilters(**kw))]

    assert ids(agent="crm-cleanup") == [deletion.pk]
    assert ids(tool="issue_refund") == [refund.pk]
    assert ids(impact="destructive") == [deletion.pk]
    assert ids(older_than_minutes=60) == [refund.pk]
    assert ids(newer_than_minutes=60) == [deletion.pk]


def test_queue_counts_per_agent(refund_agent, crm_agent, orders, contacts, demo_user, commit):
    demo_user("reviewer")
    demo_user("reviewer2")
    for _ in range(3):
        pending(commit)
    pending(commit, agent="crm-cleanup")

    def counts(username):
        return [(q["slug"], q["pending"]) for q in selectors.queue_counts(user(username))]

    assert counts("reviewer") == [("crm-cleanup", 1), ("refund-triage", 3)]
    assert counts("reviewer2") == [("refund-triage", 3)]
    # Per tier, as the live counts arrive: the reviewer also sees the (empty) escalated queues.
    assert [q["tiers"] for q in selectors.queue_counts(user("reviewer"))] == [[(1, 1), (2, 0)], [(1, 3), (2, 0)]]


def test_claims_show_who_and_expire(refund_agent, orders, demo_user, commit):
    demo_user("reviewer")
    demo_user("reviewer2")
    action = pending(commit)
    claims.action_request_claim(action=action, actor=user("reviewer"))
    action.refresh_from_db()
    assert action.claimed_by.username == "reviewer"
    with pytest.raises(Conflict, match="reviewer is working on this until"):
        claims.action_request_claim(action=action, actor=user("reviewer2"))
    ActionRequest.objects.filter(pk=action.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))
    claims.action_request_claim(action=action, actor=user("reviewer2"))  # the lease ran out
    action.refresh_from_db()
    assert action.claimed_by.username == "reviewer2"
    claims.action_request_release(action=action, actor=user("reviewer2"))
    action.refresh_from_db()
    assert action.claimed_by is None
    assert AuditEvent.objects.filter(event="action.claimed").count() == 2


def test_quorum_needs_distinct_approvers(refund_agent, orders, demo_user, commit):
    demo_user("reviewer")
    demo_user("reviewer2")
    AgentTool.objects.filter(tool="issue_refund").update(required_approvals=2)
    action = pending(commit)
    with commit():
        assert decisions.action_request_decide(action=action, actor=user("reviewer"), verdict="approve") is None
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING
    with pytest.raises(Conflict, match="already approved"):
        decisions.action_request_decide(action=action, actor=user("reviewer"), verdict="approve")
    with commit():
        decision = decisions.action_request_decide(action=action, actor=user("reviewer2"), verdict="approve")
    assert decision is not None
    assert "approved by reviewer, reviewer2" in decision.comment
    action.refresh_from_db()
    assert action.status == ActionStatus.EXECUTED
    assert Refund.objects.count() == 1


def test_an_edit_voids_earlier_approvals_of_other_arguments(refund_agent, orders, demo_user, commit):
    demo_user("reviewer")
    demo_user("reviewer2")
    AgentTool.objects.filter(tool="issue_refund").update(required_approvals=2)
    action = pending(commit)
    decisions.action_request_decide(action=action, actor=user("reviewer"), verdict="approve")
    edited = {"order_id": "ORD-1003", "amount": 50, "reason": "partial"}
    decisions.action_request_decide(action=action, actor=user("reviewer2"), verdict="edit", arguments=edited)
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING
    assert list(action.approvals.values_list("reviewer__username", flat=True)) == ["reviewer2"]
    with commit():
        decisions.action_request_decide(action=action, actor=user("reviewer"), verdict="approve")
    action.refresh_from_db()
    assert action.status == ActionStatus.EXECUTED
    assert Refund.objects.get().amount == 50
    assert AuditEvent.objects.filter(event="action.edited").get().after["approvals_dropped"] == ["reviewer"]


def test_whoever_started_the_run_cannot_approve_its_actions(refund_agent, orders, demo_user, commit):
    demo_user("operator")
    operator = user("operator")
    agent_permission_grant(agent=refund_agent, perm="review_agent", to=operator, actor=None)
    action = pending(commit, actor=operator)
    with pytest.raises(Forbidden, match="separation of duties"):
        decisions.action_request_decide(action=action, actor=operator, verdict="approve")
    with pytest.raises(Forbidden):
        decisions.action_request_decide(
            action=action, actor=operator, verdict="edit", arguments=dict(action.arguments, amount=1)
        )
    # Rejecting one's own run's action is allowed: it is the safe direction.
    decisions.action_request_decide(action=action, actor=operator, verdict="reject", comment="my mistake")
    assert Decision.objects.get(action=action).verdict == "reject"


def test_escalation_moves_the_item_to_the_second_tier(refund_agent, orders, demo_user, commit):
    demo_user("admin")
    demo_user("reviewer2")
    demo_user("reviewer")
    action = pending(commit)
    decisions.action_request_decide(
        action=action, actor=user("reviewer2"), verdict="escalate", comment="too big for me"
    )
    action.refresh_from_db()
    assert action.tier == 2
    assert action.pk not in [a.pk for a in selectors.inbox_for(user("reviewer2"))]
    assert not selectors.actions_reviewable_by(user("reviewer2")).filter(pk=action.pk).exists()
    assert action.pk in [a.pk for a in selectors.inbox_for(user("reviewer"))]
    assert Notification.objects.filter(user__username="reviewer", url=f"/actions/{action.pk}/").exists()
    assert not Notification.objects.filter(user__username="reviewer2").exists()
    with pytest.raises(Conflict, match="highest tier"):
        decisions.action_request_decide(action=action, actor=user("reviewer"), verdict="escalate")


def test_sla_warns_at_half_time_then_fails_closed(refund_agent, orders, demo_user, commit, settings):
    demo_user("admin")
    demo_user("reviewer")
    demo_user("reviewer2")
    settings.EMAIL_NOTIFICATIONS = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    action = pending(commit)
    ActionRequest.objects.filter(pk=action.pk).update(warn_at=timezone.now() - timedelta(seconds=1))
    with commit():
        assert sla.sla_tick()["warned"] == 1
        assert sla.sla_tick()["warned"] == 0  # once
    assert Notification.objects.filter(user__username="reviewer2", text__startswith="Half the time").exists()
    assert any("reviewer2@example.com" in m.to for m in mail.outbox)
    ActionRequest.objects.filter(pk=action.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    with commit():
        assert sla.sla_tick()["expired"] == 1
    action.refresh_from_db()
    assert action.status == ActionStatus.EXPIRED
    action.run.refresh_from_db()
    assert action.run.status == RunStatus.SUCCEEDED
    assert "no decision within the SLA" in action.run.result
    assert not Refund.objects.exists()
    assert AuditEvent.objects.filter(event="action.expired", actor_label="sla").count() == 1


def test_sla_can_escalate_first(refund_agent, orders, demo_user, commit):
    demo_user("admin")
    demo_user("reviewer")
    demo_user("reviewer2")
    AgentTool.objects.filter(tool="issue_refund").update(on_timeout="escalate")
    action = pending(commit)
    ActionRequest.objects.filter(pk=action.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    assert sla.sla_tick()["escalated"] == 1
    action.refresh_from_db()
    assert action.tier == 2
    assert action.status == ActionStatus.PENDING
    assert action.due_at > timezone.now()


def test_sla_approve_on_timeout_when_configured(refund_agent, orders, demo_user, commit):
    demo_user("admin")
    demo_user("reviewer")
    demo_user("reviewer2")
    AgentTool.objects.filter(tool="issue_refund").update(on_timeout="approve")
    action = pending(commit)
    ActionRequest.objects.filter(pk=action.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    with commit():
        assert sla.sla_tick()["auto_approved"] == 1
    action.refresh_from_db()
    assert action.status == ActionStatus.EXECUTED
    assert AuditEvent.objects.filter(event="action.approved_on_timeout").count() == 1


def test_a_user_without_review_permission_is_never_notified(refund_agent, orders, demo_user, commit):
    demo_user("admin")
    demo_user("reviewer")
    demo_user("operator")
    demo_user("auditor")
    demo_user("reviewer2")
    get_user_model().objects.create_user(username="stranger", email="s@example.com")
    action = pending(commit)
    decisions.action_request_escalate(action=action, actor=user("reviewer2"), reason="x")
    assert not Notification.objects.filter(user__username__in=["stranger", "operator", "auditor"]).exists()


def test_a_reviewer_holding_a_stale_tier_one_copy_cannot_decide_an_escalated_action(
    refund_agent, orders, demo_user, commit
):
    demo_user("reviewer")
    demo_user("reviewer2")
    action = pending(commit)
    stale = ActionRequest.objects.get(pk=action.pk)  # reviewer2 opened it at tier 1
    decisions.action_request_escalate(action=action, actor=user("reviewer"), reason="too big")
    with pytest.raises(Conflict, match="escalated to another tier"):
        decisions.action_request_decide(action=stale, actor=user("reviewer2"), verdict="approve")
    fresh = ActionRequest.objects.get(pk=action.pk)
    assert fresh.status == ActionStatus.PENDING and fresh.tier == 2
    assert [(q["slug"], q["tiers"]) for q in selectors.queue_counts(user("reviewer"))] == [
        ("refund-triage", [(1, 0), (2, 1)])
    ]


def test_an_approval_of_arguments_someone_since_edited_is_refused(refund_agent, orders, demo_user, commit):
    demo_user("reviewer2")
    demo_user("reviewer")
    AgentTool.objects.filter(tool="issue_refund").update(required_approvals=2)
    action = pending(commit)
    seen_by_a = ActionRequest.objects.get(pk=action.pk)
    edited = {"order_id": "ORD-1003", "amount": 50, "reason": "partial"}
    decisions.action_request_decide(action=action, actor=user("reviewer2"), verdict="edit", arguments=edited)
    with pytest.raises(Conflict, match="edited since you opened"):
        decisions.action_request_decide(action=seen_by_a, actor=user("reviewer"), verdict="approve")
    action.refresh_from_db()
    assert action.arguments["amount"] == "50"
    assert list(action.approvals.values_list("reviewer__username", flat=True)) == ["reviewer2"]
