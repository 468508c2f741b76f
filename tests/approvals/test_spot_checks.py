"""Spot checks: a share of auto-approved calls sampled after the fact, graded once by someone who may review them."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from agents.models import Agent, AgentTool, RunStatus
from agents.services import run_start
from approvals import spot_check_views
from approvals.models import ActionRequest, ActionStatus, Grade, SpotCheck
from approvals.routing import route_tool_call
from approvals.spot_checks import AlreadyGraded, spot_check_grade, spot_check_sample
from audit.models import AuditEvent
from core.errors import Forbidden, InvalidInput
from demo.models import Refund
from tests.conftest import PASSWORD, refund_input, user
from tests.factories import ActionFactory

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}


def set_rate(agent: Agent, rate: float, tool: str = "issue_refund") -> None:
    AgentTool.objects.filter(agent=agent, tool=tool).update(spot_check_rate=rate)


def route(agent: Agent, *, amount: int = 40, confidence: float = 0.9, actor=None) -> ActionRequest:
    outcome = route_tool_call(
        agent=agent,
        run=None,
        tool="issue_refund",
        arguments={"order_id": "ORD-1001", "amount": amount, "reason": "arrived broken"},
        confidence=confidence,
        rationale="the customer sent a photo of the damage",
        actor=actor,
    )
    assert outcome.action is not None, outcome
    return outcome.action


def sampled(actions: list[ActionRequest]) -> int:
    return SpotCheck.objects.filter(action__in=[a.pk for a in actions]).count()


def spot_check(agent: Agent, *, grade: str = "", created_by=None, **action) -> SpotCheck:
    """A spot check of an executed call, built directly (the page tests need many, quickly)."""
    fields = {"status": ActionStatus.EXECUTED, "route": "auto", "result": {"refund_id": 7}} | action
    row = ActionFactory(run__agent=agent, run__created_by=created_by, **fields)
    return SpotCheck.objects.create(action=row, agent=agent, tool=row.tool, rate=0.05, grade=grade)


def login(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


# --- Sampling -------------------------------------------------------------------


def test_rate_zero_never_samples_and_rate_one_always(refund_agent, orders):
    set_rate(refund_agent, 0.0)
    unsampled = [route(refund_agent) for _ in range(40)]
    set_rate(refund_agent, 1.0)
    all_sampled = [route(refund_agent) for _ in range(40)]
    assert {a.status for a in unsampled + all_sampled} == {ActionStatus.AUTO_APPROVED}
    assert sampled(unsampled) == 0
    assert sampled(all_sampled) == 40
    check = SpotCheck.objects.get(action=all_sampled[0])
    assert (check.agent_id, check.tool, check.rate, check.grade) == (refund_agent.pk, "issue_refund", 1.0, "")


def test_half_rate_samples_within_binomial_bounds(refund_agent, orders):
    set_rate(refund_agent, 0.5)
    n = 300
    actions = [route(refund_agent) for _ in range(n)]
    # Outside this interval one run in a million of a fair draw; a sampler that ignored the
    # rate (all or none) or drew once per process would land far outside it.
    low, high = binom.interval(1 - 1e-6, n, 0.5)
    assert low <= sampled(actions) <= high
    assert set(SpotCheck.objects.values_list("rate", flat=True)) == {0.5}


def test_review_and_deny_routes_are_never_sampled_even_at_rate_one(refund_agent, orders):
    set_rate(refund_agent, 1.0)
    over_the_auto_limit = route(refund_agent, amount=300)
    unsure = route(refund_agent, confidence=0.3)
    AgentTool.objects.filter(agent=refund_agent).update(mode="deny")
    denied = route(refund_agent)
    AgentTool.objects.filter(agent=refund_agent).update(mode="auto")
    Agent.objects.filter(pk=refund_agent.pk).update(is_paused=True)
    refund_agent.refresh_from_db()
    paused = route(refund_agent)
    assert [a.status for a in (over_the_auto_limit, unsure, denied, paused)] == [
        ActionStatus.PENDING,
        ActionStatus.PENDING,
        ActionStatus.DENIED,
        ActionStatus.DENIED,
    ]
    assert SpotCheck.objects.count() == 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.sampled_from(ActionStatus.values), rate=st.floats(0, 1))
def test_only_auto_approved_actions_with_a_positive_rate_are_ever_sampled(status, rate):
    assume(status != ActionStatus.AUTO_APPROVED or rate == 0)
    # Unsaved rows: a sampler that wrote anything for them would fail on the missing action.
    action = ActionRequest(status=status, tool="issue_refund", agent_id=1)
    assert spot_check_sample(action, AgentTool(spot_check_rate=rate)) is None


def test_a_sampled_action_runs_exactly_as_an_unsampled_one(refund_agent, orders, demo_user, commit):
    operator = demo_user("operator")

    def run_one(rate: float) -> ActionRequest:
        set_rate(refund_agent, rate)
        with commit():
            run = run_start(agent=refund_agent, input=refund_input(amount=40), actor=operator)
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED, run.status
        return ActionRequest.objects.get(run=run)

    plain, checked = run_one(0.0), run_one(1.0)
    assert not SpotCheck.objects.filter(action=plain).exists()
    assert SpotCheck.objects.get(action=checked).grade == ""  # waiting for a grade, and nothing waited for it
    for action in (plain, checked):
        assert action.status == ActionStatus.EXECUTED and action.executed_at is not None
        assert action.result is not None and action.error == ""
    assert Refund.objects.count() == 2
    # Sampling writes no audit row (the routing row is the record); only a grade is audited.
    assert not AuditEvent.objects.filter(event__startswith="spot_check").exists()


def test_a_spot_check_keeps_the_rate_it_was_sampled_at(refund_agent, orders):
    set_rate(refund_agent, 1.0)
    action = route(refund_agent)
    set_rate(refund_agent, 0.05)
    check = SpotCheck.objects.get(action=action)
    assert check.rate == 1.0 and check.weight == 1.0


# --- Grading --------------------------------------------------------------------


@pytest.fixture
def sampled_refund(refund_agent, orders, demo_user, commit):
    demo_user("reviewer")
    set_rate(refund_agent, 1.0)
    with commit():
        action = route(refund_agent)
    return SpotCheck.objects.get(action=action)


def test_a_grade_is_recorded_once_and_audited(sampled_refund):
    reviewer = user("reviewer")
    graded = spot_check_grade(
        spot_check_id=sampled_refund.pk, actor=reviewer, grade=Grade.SHOULD_EDIT, comment="  half was enough  "
    )
    sampled_refund.refresh_from_db()
    assert (sampled_refund.grade, sampled_refund.comment, sampled_refund.graded_by) == (
        "should_edit",
        "half was enough",
        reviewer,
    )
    assert sampled_refund.graded_at is not None and graded.grade == "should_edit"
    event = AuditEvent.objects.get(event="spot_check.graded")
    assert (event.actor_label, event.target_type, event.target_id, event.agent_id) == (
        "reviewer",
        "approvals.actionrequest",
        str(sampled_refund.action_id),
        sampled_refund.agent_id,
    )
    assert event.after["grade"] == "should_edit" and event.after["comment"] == "half was enough"
    assert event.after["spot_check"] == sampled_refund.pk and event.after["action_status"] == ActionStatus.EXECUTED


def test_the_second_grade_loses_and_is_told_who_graded(sampled_refund, demo_user):
    demo_user("admin")
    spot_check_grade(spot_check_id=sampled_refund.pk, actor=user("reviewer"), grade=Grade.FINE, comment="")
    with pytest.raises(AlreadyGraded) as lost:
        spot_check_grade(spot_check_id=sampled_refund.pk, actor=user("admin"), grade=Grade.SHOULD_REJECT, comment="no")
    assert lost.value.status == 409
    assert lost.value.message == "already graded by reviewer (Fine as it ran)"
    assert lost.value.details == {"graded_by": "reviewer", "grade": "fine"}
    sampled_refund.refresh_from_db()
    assert (sampled_refund.grade, sampled_refund.graded_by) == ("fine", user("reviewer"))
    assert AuditEvent.objects.filter(event="spot_check.graded").count() == 1


def test_someone_who_may_not_review_the_agent_cannot_grade(refund_agent, crm_agent, demo_user):
    for name in ("reviewer2", "operator", "auditor"):
        demo_user(name)
    crm_check = spot_check(crm_agent, tool="delete_contacts", arguments={"ids": [3]}, impact="destructive")
    for name in ("reviewer2", "operator", "auditor"):  # reviewer2 reviews refund-triage only
        with pytest.raises(Forbidden):
            spot_check_grade(spot_check_id=crm_check.pk, actor=user(name), grade=Grade.FINE)
        assert login(name).post(f"/spot-checks/{crm_check.pk}/grade", {"grade": "fine"}).status_code == 404
    crm_check.refresh_from_db()
    assert crm_check.grade == "" and not AuditEvent.objects.filter(event="spot_check.graded").exists()


def test_a_tools_reviewer_group_limits_who_grades_its_spot_checks(sampled_refund):
    seniors = Group.objects.create(name="seniors")
    ActionRequest.objects.filter(pk=sampled_refund.action_id).update(reviewer_group=seniors)
    with pytest.raises(Forbidden):
        spot_check_grade(spot_check_id=sampled_refund.pk, actor=user("reviewer"), grade=Grade.FINE)
    user("reviewer").groups.add(seniors)
    assert spot_check_grade(spot_check_id=sampled_refund.pk, actor=user("reviewer"), grade=Grade.FINE).grade == "fine"


def test_no_one_grades_a_call_they_submitted_themselves(refund_agent, orders, demo_user):
    reviewer = demo_user("reviewer")
    set_rate(refund_agent, 1.0)
    own = SpotCheck.objects.get(action=route(refund_agent, actor=reviewer))
    started = spot_check(refund_agent, created_by=reviewer)
    for check in (own, started):
        with pytest.raises(Forbidden) as refused:
            spot_check_grade(spot_check_id=check.pk, actor=reviewer, grade=Grade.FINE)
        assert refused.value.code == "separation_of_duties"
        check.refresh_from_db()
        assert check.grade == ""
    # The queue says so instead of offering the buttons.
    page = login("reviewer").get("/spot-checks/").content.decode()
    assert page.count("you started this work; another reviewer grades it") == 2
    assert 'name="grade"' not in page


@pytest.mark.parametrize("grade", [Grade.SHOULD_EDIT, Grade.SHOULD_REJECT])
@pytest.mark.parametrize("comment", ["", "   \n"])
def test_a_grade_other_than_fine_needs_a_reason(sampled_refund, grade, comment):
    with pytest.raises(InvalidInput) as refused:
        spot_check_grade(spot_check_id=sampled_refund.pk, actor=user("reviewer"), grade=grade, comment=comment)
    assert refused.value.code == "reason_required"
    sampled_refund.refresh_from_db()
    assert sampled_refund.grade == ""


@pytest.mark.parametrize("grade", ["", "approve", "FINE", "Fine as it ran", "x" * 300])
def test_an_unknown_grade_is_refused_and_changes_nothing(sampled_refund, grade):
    with pytest.raises(InvalidInput) as refused:
        spot_check_grade(spot_check_id=sampled_refund.pk, actor=user("reviewer"), grade=grade, comment="why")
    assert refused.value.status == 400 and refused.value.code == "invalid_grade"
    response = login("reviewer").post(
        f"/spot-checks/{sampled_refund.pk}/grade", {"grade": grade, "comment": "why"}, headers=HX
    )
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#notices"
    assert "grade must be one of fine, should_edit, should_reject" in response.content.decode()
    sampled_refund.refresh_from_db()
    assert sampled_refund.grade == "" and not AuditEvent.objects.filter(event="spot_check.graded").exists()


def test_a_comment_longer_than_the_field_allows_is_refused(sampled_refund):
    with pytest.raises(InvalidInput) as refused:
        spot_check_grade(spot_check_id=sampled_refund.pk, actor=user("reviewer"), grade=Grade.FINE, comment="x" * 5001)
    assert refused.value.code == "comment_too_long"


# --- The queue page -------------------------------------------------------------


def row_ids(body: str) -> list[int]:
    return [int(i) for i in re.findall(r'<article class="row spot-check[^"]*" id="spot-check-(\d+)"', body)]


def test_the_queue_lists_what_each_reviewer_may_grade_newest_first(refund_agent, crm_agent, demo_user):
    for name in ("reviewer", "reviewer2", "operator"):
        demo_user(name)
    refund_old = spot_check(refund_agent)
    crm = spot_check(crm_agent, tool="delete_contacts", arguments={"ids": [3]}, impact="destructive")
    refund_new = spot_check(refund_agent, error="order ORD-1001 is closed", result=None, status=ActionStatus.FAILED)
    graded = spot_check(refund_agent, grade=Grade.FINE)
    reviewer_page = login("reviewer").get("/spot-checks/").content.decode()
    assert row_ids(reviewer_page) == [refund_new.pk, crm.pk, refund_old.pk]
    assert row_ids(login("reviewer2").get("/spot-checks/").content.decode()) == [refund_new.pk, refund_old.pk]
    assert row_ids(login("operator").get("/spot-checks/").content.decode()) == []
    # What ran, why, and what it returned.
    assert "<b>order_id</b> ORD-1001" in reviewer_page and "confidence 0.90" in reviewer_page
    assert "order ORD-1001 is closed" in reviewer_page and "<th>refund id</th><td>7</td>" in reviewer_page
    assert reviewer_page.count('name="grade" value="should_reject"') == 3
    # The graded tab: the grades, not the open ones.
    graded_page = login("reviewer").get("/spot-checks/?graded=1").content.decode()
    assert row_ids(graded_page) == [graded.pk]
    assert "Fine as it ran" in graded_page and 'name="grade"' not in graded_page


def test_the_queue_filters_by_agent_and_tool(refund_agent, crm_agent, demo_user):
    demo_user("reviewer")
    refund = spot_check(refund_agent)
    crm = spot_check(crm_agent, tool="delete_contacts", arguments={"ids": [3]}, impact="destructive")
    client = login("reviewer")
    assert row_ids(client.get("/spot-checks/?agent=crm-cleanup").content.decode()) == [crm.pk]
    assert row_ids(client.get("/spot-checks/?tool=issue_refund").content.decode()) == [refund.pk]
    assert row_ids(client.get("/spot-checks/?agent=crm-cleanup&tool=issue_refund").content.decode()) == []
    assert row_ids(client.get("/spot-checks/?agent=no-such-agent").content.decode()) == []
    rows = client.get("/spot-checks/?agent=crm-cleanup", headers=HX).content.decode()
    assert row_ids(rows) == [crm.pk] and "<html" not in rows  # htmx asks for the rows alone


def test_keyset_pages_cover_every_open_spot_check_once(refund_agent, demo_user, monkeypatch):
    demo_user("reviewer")
    monkeypatch.setattr(spot_check_views, "PAGE_SIZE", 3)
    ids = [spot_check(refund_agent).pk for _ in range(8)]
    client = login("reviewer")
    seen: list[int] = []
    url = "/spot-checks/?agent=refund-triage"
    for _ in range(5):
        body = client.get(url).content.decode()
        seen += row_ids(body)
        link = re.search(r'href="(\?[^"]*)" id="next-page"', body)
        if link is None:
            break
        url = "/spot-checks/" + link.group(1).replace("&amp;", "&")
        assert "agent=refund-triage" in url  # the filter is kept across pages
    assert seen == sorted(ids, reverse=True)
    assert len(row_ids(client.get("/spot-checks/?before=x").content.decode())) == 3  # a bad cursor is the first page


def test_the_queue_costs_the_same_queries_for_one_row_or_many(
    refund_agent, crm_agent, demo_user, django_assert_num_queries
):
    demo_user("reviewer")
    client = login("reviewer")
    spot_check(refund_agent)
    client.get("/spot-checks/")  # warm the content-type cache
    with CaptureQueriesContext(connection) as one:
        assert len(row_ids(client.get("/spot-checks/").content.decode())) == 1
    for n in range(20):
        spot_check(refund_agent, result={"refund_id": n, "note": "x" * n})
        spot_check(crm_agent, tool="delete_contacts", arguments={"ids": [n + 1]}, impact="destructive")
    with django_assert_num_queries(len(one)):
        assert len(row_ids(client.get("/spot-checks/").content.decode())) == 41
    with django_assert_num_queries(len(one)):
        client.get("/spot-checks/?graded=1")


def test_grading_with_htmx_swaps_the_row_for_a_graded_line(sampled_refund):
    client = login("reviewer")
    assert client.get(f"/spot-checks/{sampled_refund.pk}/grade").status_code == 405
    response = client.post(
        f"/spot-checks/{sampled_refund.pk}/grade", {"grade": "should_reject", "comment": "wrong order"}, headers=HX
    )
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert body.strip().startswith(f'<article class="row spot-check graded" id="spot-check-{sampled_refund.pk}"')
    assert "Graded <b>Should have been rejected</b>" in body
    # The same spot check again, from a page that was open meanwhile: told who won, row left alone.
    again = client.post(f"/spot-checks/{sampled_refund.pk}/grade", {"grade": "fine"}, headers=HX)
    assert again.status_code == 409 and "already graded by reviewer" in again.content.decode()


def test_grading_without_javascript_redirects_back_to_the_list(sampled_refund):
    client = login("reviewer")
    back = "/spot-checks/?tool=issue_refund"
    response = client.post(f"/spot-checks/{sampled_refund.pk}/grade", {"grade": "fine", "next": back}, follow=True)
    assert response.redirect_chain == [(back, 302)]
    assert f"Spot check of issue_refund #{sampled_refund.action_id}: Fine as it ran." in response.content.decode()
    assert row_ids(response.content.decode()) == []
    sampled_refund.refresh_from_db()
    assert sampled_refund.grade == "fine"


def test_a_failed_grade_without_javascript_shows_the_list_with_the_error(sampled_refund):
    back = "/spot-checks/?agent=refund-triage"
    response = login("reviewer").post(
        f"/spot-checks/{sampled_refund.pk}/grade", {"grade": "should_edit", "comment": "", "next": back}
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert f'data-page-url="{back}"' in body
    assert "say what should have been different" in body
    assert row_ids(body) == [sampled_refund.pk]


def test_an_anonymous_visitor_is_sent_to_log_in(db):
    client = Client()
    assert client.get("/spot-checks/")["Location"].startswith("/login/")
    assert client.post("/spot-checks/1/grade", {"grade": "fine"})["Location"].startswith("/login/")


def test_the_action_page_shows_its_spot_check_and_grade(sampled_refund):
    client = login("reviewer")
    page = client.get(f"/actions/{sampled_refund.action_id}/").content.decode()
    assert "not graded yet" in page and "/spot-checks/?agent=refund-triage" in page
    spot_check_grade(
        spot_check_id=sampled_refund.pk, actor=user("reviewer"), grade=Grade.SHOULD_EDIT, comment="half was enough"
    )
    page = client.get(f"/actions/{sampled_refund.action_id}/").content.decode()
    assert "Should have been edited</span> by reviewer" in page and "half was enough" in page


def test_the_navigation_counts_open_spot_checks_for_those_who_review(refund_agent, crm_agent, demo_user):
    for name in ("reviewer", "reviewer2", "operator"):
        demo_user(name)
    spot_check(refund_agent)
    spot_check(refund_agent, grade=Grade.FINE)
    spot_check(crm_agent, tool="delete_contacts", arguments={"ids": [3]}, impact="destructive")
    badge = '<a href="/spot-checks/">Spot checks <span class="nav-badge" title="{n} waiting for you">{n}</span></a>'
    assert badge.format(n=2) in login("reviewer").get("/agents/").content.decode()
    assert badge.format(n=1) in login("reviewer2").get("/agents/").content.decode()
    assert "/spot-checks/" not in login("operator").get("/agents/").content.decode()


def test_a_large_backlog_is_counted_up_to_a_cap(refund_agent, demo_user, monkeypatch):
    demo_user("reviewer")
    monkeypatch.setattr("approvals.selectors.SPOT_CHECK_COUNT_CAP", 3)
    monkeypatch.setattr("config.navigation.SPOT_CHECK_COUNT_CAP", 3)
    for _ in range(5):
        spot_check(refund_agent, magnitude=Decimal(1))
    page = login("reviewer").get("/agents/").content.decode()
    assert '<span class="nav-badge" title="3 or more waiting for you">3+</span>' in page
