from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from agents.models import Agent
from agents.services import run_start
from approvals import routing
from approvals.models import ActionRequest, ActionStatus
from tests.conftest import PASSWORD, refund_input, user
from tests.factories import enabled_caller_tool

# Requests commit for real: the runs, routing and executions they start happen on commit (inline).
pytestmark = pytest.mark.django_db(transaction=True)


def login(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


def pending(agent="refund-triage", payload=None):
    run = run_start(agent=Agent.objects.get(slug=agent), input=payload or refund_input(amount=250), actor=None)
    return ActionRequest.objects.get(run=run)


def test_inbox_requires_login(db, client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_login_page_renders(client, db):
    response = client.get("/login/")
    assert response.status_code == 200
    assert b'name="password"' in response.content


def test_inbox_shows_only_actions_the_user_may_review(refund_agent, crm_agent, orders, contacts, demo_user):
    demo_user("reviewer")
    demo_user("reviewer2")
    refund = pending()
    crm = pending("crm-cleanup", {"request": "x", "contact_ids": [3]})
    reviewer_page = login("reviewer").get("/").content.decode()
    reviewer2_page = login("reviewer2").get("/").content.decode()
    assert f'id="action-{refund.pk}"' in reviewer_page
    assert f'id="action-{crm.pk}"' in reviewer_page
    assert f'id="action-{refund.pk}"' in reviewer2_page
    assert f'id="action-{crm.pk}"' not in reviewer2_page
    assert 'ws-connect="/ws/inbox/"' in reviewer_page


def test_inbox_rows_partial_for_htmx(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    response = login("reviewer").get("/", headers={"HX-Request": "true"})
    body = response.content.decode()
    assert f'id="action-{action.pk}"' in body
    assert "<html" not in body


def test_inbox_query_count_does_not_grow_with_rows(refund_agent, crm_agent, orders, contacts, demo_user):
    demo_user("reviewer")
    client = login("reviewer")
    pending()
    client.get("/")  # warm the content-type cache
    with CaptureQueriesContext(connection) as one:
        client.get("/")
    for _ in range(12):
        pending()
        pending("crm-cleanup", {"request": "x", "contact_ids": [4]})
    with CaptureQueriesContext(connection) as many:
        response = client.get("/")
    assert response.content.decode().count('class="row ') == 25
    # session, user, the rows (permission filter inside), the queue counts, unread notifications,
    # the user's global permissions for the navigation (user's and groups'), the per-agent rights
    # the navigation shows (config.navigation), its inbox badge and its open spot checks
    assert len(many) == len(one) == 10


def test_decide_rejects_get(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    assert login("reviewer").get(f"/actions/{action.pk}/decide").status_code == 405


def test_outsider_gets_404_on_detail_and_decide(refund_agent, crm_agent, orders, contacts, demo_user):
    demo_user("reviewer2")
    crm = pending("crm-cleanup", {"request": "x", "contact_ids": [3]})
    client = login("reviewer2")
    assert client.get(f"/actions/{crm.pk}/").status_code == 404
    assert client.post(f"/actions/{crm.pk}/decide", {"verdict": "approve"}).status_code == 404
    crm.refresh_from_db()
    assert crm.status == ActionStatus.PENDING


def test_reviewer_approves_from_the_detail_form_without_javascript(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    client = login("reviewer")
    detail = client.get(f"/actions/{action.pk}/")
    assert b"Why it is here" in detail.content
    assert b"above the auto limit" in detail.content
    response = client.post(f"/actions/{action.pk}/decide", {"verdict": "approve"})
    assert response.status_code == 302
    action.refresh_from_db()
    assert action.status == ActionStatus.EXECUTED


def test_reject_without_reason_shows_the_error_and_changes_nothing(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    client = login("reviewer")
    response = client.post(f"/actions/{action.pk}/decide", {"verdict": "reject", "comment": ""}, follow=True)
    assert b"a rejection needs a reason" in response.content
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING


def test_edit_with_invalid_json_shows_the_error(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    response = login("reviewer").post(
        f"/actions/{action.pk}/decide",
        {"verdict": "edit", "arguments": "{not json"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 400
    assert b"not valid JSON" in response.content
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING


def test_second_reviewer_is_told_who_decided(refund_agent, orders, demo_user):
    demo_user("reviewer")
    demo_user("reviewer2")
    action = pending()
    login("reviewer").post(f"/actions/{action.pk}/decide", {"verdict": "reject", "comment": "duplicate"})
    response = login("reviewer2").post(f"/actions/{action.pk}/decide", {"verdict": "approve"}, follow=True)
    assert b"already decided by reviewer" in response.content


def test_operator_starts_a_run_from_the_ui(refund_agent, orders, demo_user):
    demo_user("operator")
    client = login("operator")
    page = client.get("/agents/")
    assert b"Start run" in page.content
    response = client.post(
        "/agents/refund-triage/runs", {"input": '{"ticket": "broken", "order_id": "ORD-1001", "amount": 10}'}
    )
    assert response.status_code == 302
    run_page = client.get(response["Location"])
    assert b"succeeded" in run_page.content


def test_reviewer_cannot_start_runs_from_the_ui(refund_agent, demo_user):
    demo_user("reviewer")
    response = login("reviewer").post("/agents/refund-triage/runs", {"input": "{}"})
    assert response.status_code == 404


def test_inbox_rows_of_tools_from_outside_cost_no_query_each(refund_agent, demo_user):
    # A declared tool is found in the database; its rows must not look it up one by one.
    demo_user("admin")
    demo_user("operator")
    reviewer = demo_user("reviewer")
    enabled_caller_tool(refund_agent, admin=user("admin"))

    def ask(amount: int) -> None:
        routing.route_tool_call(
            agent=refund_agent,
            run=None,
            tool="send_invoice",
            arguments={"amount": amount, "customer": "ACME"},
            confidence=0.5,
            rationale="",
            actor=user("operator"),
            takes_grant=True,
        )

    client = login(reviewer.get_username())
    ask(1)
    client.get("/")
    with CaptureQueriesContext(connection) as one:
        client.get("/")
    for amount in range(2, 14):
        ask(amount)
    with CaptureQueriesContext(connection) as many:
        response = client.get("/")
    assert response.content.decode().count('class="row ') == 13
    assert len(many) == len(one)
