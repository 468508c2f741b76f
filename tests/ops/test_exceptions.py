from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from agents.breakers import breaker_for, breaker_reset
from agents.models import Agent, AgentDailyUsage, BreakerState, CircuitBreaker, Run, RunStatus
from agents.services import agent_permission_grant, run_resume, run_start
from approvals.decisions import action_request_decide
from approvals.execution import action_resolve_in_doubt
from approvals.models import ActionRequest, ActionStatus
from core.counters import hour_of
from ops.models import AgentHourStat
from ops.selectors import exceptions_for
from tests.conftest import refund_input, user

pytestmark = pytest.mark.django_db


def kinds(username: str = "operator") -> list[str]:
    return [row.kind for row in exceptions_for(user(username)).rows]


def test_open_breaker_appears_and_clears_on_reset(demo):
    breaker = breaker_for(demo["refund-triage"], "issue_refund")
    assert "breaker" not in kinds()
    CircuitBreaker.objects.filter(pk=breaker.pk).update(state=BreakerState.OPEN, consecutive_failures=5)
    assert kinds() == ["breaker"]
    breaker_reset(breaker=breaker, actor=user("operator"))
    assert "breaker" not in kinds()


def test_halted_run_appears_with_its_reason_and_clears_on_resume(demo, commit):
    with commit():
        run = run_start(agent=demo["refund-triage"], input=refund_input(amount=300), actor=None)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.HALTED, halt_reason="daily cost budget reached")
    rows = exceptions_for(user("operator")).of("halted")
    assert len(rows) == 1 and "daily cost budget reached" in rows[0].message and rows[0].run_id == run.pk
    run_resume(run=run, actor=user("operator"))
    assert "halted" not in kinds()


def test_in_doubt_appears_and_clears_when_resolved(demo, commit):

    with commit():
        run = run_start(agent=demo["refund-triage"], input=refund_input(amount=300), actor=None)
    action = ActionRequest.objects.get(run=run)
    ActionRequest.objects.filter(pk=action.pk).update(status=ActionStatus.IN_DOUBT)
    assert "in_doubt" in kinds()
    action.refresh_from_db()
    action_resolve_in_doubt(action=action, actor=user("reviewer"), executed=False, comment="checked the ledger")
    assert "in_doubt" not in kinds()


def test_actions_near_and_past_their_sla(demo, commit):
    with commit():
        run = run_start(agent=demo["refund-triage"], input=refund_input(amount=300), actor=None)
    action = ActionRequest.objects.get(run=run)
    assert "sla" not in kinds()  # due in an hour
    ActionRequest.objects.filter(pk=action.pk).update(due_at=timezone.now() + timedelta(minutes=5))
    assert "due within 10 minutes" in exceptions_for(user("operator")).of("sla")[0].message
    ActionRequest.objects.filter(pk=action.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    late = exceptions_for(user("operator")).of("sla")[0]
    assert "past its SLA" in late.message and late.severity == 2

    action_request_decide(action=action, actor=user("reviewer"), verdict="reject", comment="late")
    assert "sla" not in kinds()


def test_over_budget_and_burning_fast(demo):
    agent = demo["refund-triage"]
    Agent.objects.filter(pk=agent.pk).update(max_cost_per_day=Decimal("10"))
    now = timezone.now().replace(hour=12, minute=0)
    AgentDailyUsage.objects.create(agent=agent, day=now.date(), cost=Decimal("6"))
    found = exceptions_for(user("operator"), now=now)
    assert [r.kind for r in found.rows] == ["burn"]  # 6 by noon: 12 projected
    AgentDailyUsage.objects.filter(agent=agent).update(cost=Decimal("11"))
    assert [r.kind for r in exceptions_for(user("operator"), now=now).rows] == ["budget"]
    Agent.objects.filter(pk=agent.pk).update(max_cost_per_day=Decimal("100"))
    assert exceptions_for(user("operator"), now=now).rows == []


def _hours(agent, *, recent: dict, baseline: dict):
    now = timezone.now()
    AgentHourStat.objects.create(agent=agent, hour=hour_of(now - timedelta(hours=2)), **recent)
    AgentHourStat.objects.create(agent=agent, hour=hour_of(now - timedelta(days=3)), **baseline)


def test_failing_above_the_usual_rate(demo):
    agent = demo["refund-triage"]
    _hours(agent, recent={"runs_done": 6, "runs_failed": 4}, baseline={"runs_done": 95, "runs_failed": 5})
    rows = exceptions_for(user("operator")).of("failing")
    assert len(rows) == 1 and "40% of runs failed" in rows[0].message and "against 5%" in rows[0].message
    AgentHourStat.objects.all().delete()
    _hours(agent, recent={"runs_done": 9, "runs_failed": 1}, baseline={"runs_done": 95, "runs_failed": 5})
    assert "failing" not in kinds()  # 10% against 5%: not clearly above


def test_escalation_spike_against_its_own_baseline(demo):
    agent = demo["refund-triage"]
    _hours(
        agent, recent={"actions_routed": 20, "routed_review": 12}, baseline={"actions_routed": 200, "routed_review": 30}
    )
    rows = exceptions_for(user("operator")).of("escalation")
    assert len(rows) == 1 and "60% of actions went to review" in rows[0].message
    AgentHourStat.objects.all().delete()
    _hours(
        agent, recent={"actions_routed": 20, "routed_review": 4}, baseline={"actions_routed": 200, "routed_review": 30}
    )
    assert "escalation" not in kinds()


def test_operators_see_only_agents_they_may_operate(demo):
    limited = get_user_model().objects.create_user(username="crm-operator")
    agent_permission_grant(agent=demo["crm-cleanup"], perm="operate_agent", to=limited, actor=None)
    for slug in ("refund-triage", "crm-cleanup"):
        b = breaker_for(demo[slug], "issue_refund" if slug == "refund-triage" else "delete_contacts")
        CircuitBreaker.objects.filter(pk=b.pk).update(state=BreakerState.OPEN)
    assert {r.agent.slug for r in exceptions_for(limited).rows} == {"crm-cleanup"}
    assert {r.agent.slug for r in exceptions_for(user("operator")).rows} == {"refund-triage", "crm-cleanup"}
    assert exceptions_for(user("reviewer")).rows == []
