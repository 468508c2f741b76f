from __future__ import annotations

import re
from decimal import Decimal

import pytest

from agents.models import Agent, AgentTool
from agents.services import agent_permission_grant, run_start
from approvals.models import ActionRequest, ActionStatus, Decision, Notification
from audit.models import AuditEvent
from demo.models import Order, Refund
from tests.approvals.test_views import login
from tests.conftest import refund_input, user

# Requests commit for real: the runs, routing and executions they start happen on commit (inline).
pytestmark = pytest.mark.django_db(transaction=True)


def pending(agent="refund-triage", amount=300):
    payload = (
        {"request": "x", "contact_ids": [3]}
        if agent == "crm-cleanup"
        else refund_input(amount=amount, order="ORD-1003")
    )
    return ActionRequest.objects.get(run=run_start(agent=Agent.objects.get(slug=agent), input=payload, actor=None))


def test_edit_form_is_generated_from_the_tool_schema(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    page = login("reviewer").get(f"/actions/{action.pk}/").content.decode()
    for name in ("order_id", "amount", "reason"):
        assert f'name="arg-{name}"' in page
    assert 'value="300"' in page
    assert "What it will change" in page and "<th>refunded after</th>" in page
    assert "How people decided this before" in page


def test_an_invalid_edit_shows_the_field_error_and_changes_nothing(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    response = login("reviewer").post(
        f"/actions/{action.pk}/decide",
        {"verdict": "edit", "arg-order_id": "ORD-1003", "arg-amount": "-5", "arg-reason": "partial"},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "greater than 0" in body
    assert 'class="field invalid"' in body
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING
    assert action.arguments["amount"] == "300"


def edit_and_confirm(client, action, fields):
    """Post an edit; when the page asks to confirm what it changes, confirm it (the same fields again)."""
    response = client.post(f"/actions/{action.pk}/decide", {"verdict": "edit", **fields})
    found = re.search(r'name="confirm" value="([0-9a-f]+)"', response.content.decode())
    if response.status_code != 200 or found is None:
        return response
    return client.post(f"/actions/{action.pk}/decide", {"verdict": "edit", **fields, "confirm": found.group(1)})


def test_a_valid_edit_from_the_form_is_approved_as_an_override(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    response = edit_and_confirm(
        login("reviewer"), action, {"arg-order_id": "ORD-1003", "arg-amount": "45.50", "arg-reason": "partial refund"}
    )
    assert response.status_code == 302
    action.refresh_from_db()
    assert action.status == ActionStatus.EXECUTED
    assert action.decision.verdict == "edit"
    assert action.decision.arguments_before["amount"] == "300"
    assert action.decision.arguments_after["amount"] == "45.50"
    page = login("reviewer").get(f"/actions/{action.pk}/").content.decode()
    assert "Changed by a reviewer" in page


def test_reject_with_a_preset_reason(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    login("reviewer").post(
        f"/actions/{action.pk}/decide", {"verdict": "reject", "preset": "Duplicate of an earlier request"}
    )
    action.refresh_from_db()
    assert action.decision.comment == "Duplicate of an earlier request"


def test_bulk_decisions_skip_what_the_user_may_not_decide(refund_agent, crm_agent, orders, contacts, demo_user):
    demo_user("reviewer2")
    a1, a2 = pending(), pending()
    crm = pending("crm-cleanup")
    response = login("reviewer2").post(
        "/actions/bulk", {"verdict": "reject", "ids": [a1.pk, a2.pk, crm.pk], "comment": "batch cleanup"}, follow=True
    )
    assert b"reject recorded for 2 of 3 selected action(s)" in response.content
    assert b"1 of the selected action(s) are not yours to decide; nothing was done to them." in response.content
    assert ActionRequest.objects.get(pk=a1.pk).status == ActionStatus.REJECTED
    assert ActionRequest.objects.get(pk=a2.pk).status == ActionStatus.REJECTED
    assert ActionRequest.objects.get(pk=crm.pk).status == ActionStatus.PENDING


def test_bulk_approve_reports_conflicts(refund_agent, orders, demo_user):
    demo_user("reviewer")
    demo_user("reviewer2")
    a1, a2 = pending(), pending()
    login("reviewer").post(f"/actions/{a2.pk}/decide", {"verdict": "reject", "comment": "no"})
    response = login("reviewer2").post("/actions/bulk", {"verdict": "approve", "ids": [a1.pk, a2.pk]}, follow=True)
    assert b"approve recorded for 1 of 2 selected action(s)" in response.content
    assert b"already decided by reviewer" in response.content
    assert Refund.objects.count() == 1


def test_inbox_approve_button_works_without_javascript(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    client = login("reviewer")
    page = client.get("/").content.decode()
    assert f'formaction="/actions/{action.pk}/decide"' in page
    # What the browser sends when the button submits the surrounding bulk form to its formaction.
    response = client.post(f"/actions/{action.pk}/decide", {"verdict": "approve", "next": "/", "comment": ""})
    assert response.status_code == 302
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.EXECUTED


def test_inbox_shows_counts_filters_claims_and_quorum(refund_agent, crm_agent, orders, contacts, demo_user):
    demo_user("reviewer")
    demo_user("reviewer2")
    AgentTool.objects.filter(tool="issue_refund").update(required_approvals=2)
    action = pending()
    pending("crm-cleanup")
    login("reviewer").post(f"/actions/{action.pk}/claim")
    page = login("reviewer2").get("/").content.decode()
    assert "reviewer is on it" in page
    assert "0/2 approvals" in page
    assert 'refund-triage <b class="qc-sum">1</b>' in page
    assert "crm-cleanup" not in page  # reviewer2 may not review it: no count either
    filtered = login("reviewer").get("/?impact=destructive").content.decode()
    assert "delete_contacts" in filtered and f'id="action-{action.pk}"' not in filtered


def test_claim_rejects_get_and_outsiders(refund_agent, crm_agent, orders, contacts, demo_user):
    demo_user("reviewer")
    demo_user("reviewer2")
    crm = pending("crm-cleanup")
    assert login("reviewer").get(f"/actions/{crm.pk}/claim").status_code == 405
    assert login("reviewer2").post(f"/actions/{crm.pk}/claim").status_code == 404


def test_escalate_from_the_page_and_notifications(refund_agent, orders, demo_user):
    demo_user("reviewer2")
    demo_user("reviewer")
    action = pending()
    login("reviewer2").post(f"/actions/{action.pk}/decide", {"verdict": "escalate", "comment": "over my limit"})
    assert login("reviewer2").get(f"/actions/{action.pk}/").status_code == 404
    page = login("reviewer").get("/notifications/").content.decode()
    assert "Escalated to you: issue_refund (over my limit)" in page
    login("reviewer").post("/notifications/read")
    assert not Notification.objects.filter(user__username="reviewer", read_at__isnull=True).exists()


def test_api_escalate_claim_and_separation_of_duties(refund_agent, orders, demo_user, api_as):
    demo_user("operator")
    operator = api_as("operator")

    agent_permission_grant(agent=refund_agent, perm="review_agent", to=user("operator"), actor=None)
    submitted = operator.post(
        "/api/v1/agents/refund-triage/actions",
        {
            "tool": "issue_refund",
            "arguments": {"order_id": "ORD-1003", "amount": 150, "reason": "x"},
            "confidence": 0.9,
        },
    ).json()
    own = operator.post(f"/api/v1/actions/{submitted['id']}/decision", {"verdict": "approve"})
    assert own.status_code == 403
    assert own.json()["error"] == "separation_of_duties"
    claimed = api_as("reviewer2").post(f"/api/v1/actions/{submitted['id']}/claim")
    assert claimed.json()["claimed_by"] == "reviewer2"
    taken = api_as("reviewer").post(f"/api/v1/actions/{submitted['id']}/claim")
    assert taken.status_code == 409
    assert taken.json()["claimed_by"] == "reviewer2"
    escalated = api_as("reviewer2").post(f"/api/v1/actions/{submitted['id']}/decision", {"verdict": "escalate"})
    assert escalated.status_code == 200
    assert escalated.json()["tier"] == 2
    # Now only second-tier reviewers see it.
    assert api_as("reviewer2").get(f"/api/v1/actions/{submitted['id']}").status_code == 404
    assert api_as("reviewer").get(f"/api/v1/actions/{submitted['id']}").json()["tier"] == 2


@pytest.mark.parametrize("amount", ["Infinity", "sNaN", "1e999999"])
def test_odd_numbers_in_the_edit_form_are_a_field_error_not_a_crash(refund_agent, orders, demo_user, amount):
    demo_user("reviewer")
    action = pending()
    response = login("reviewer").post(
        f"/actions/{action.pk}/decide",
        {"verdict": "edit", "arg-order_id": "ORD-1003", "arg-amount": amount, "arg-reason": "x"},
    )
    assert response.status_code == 400
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.PENDING


def test_odd_query_values_do_not_crash(refund_agent, orders, demo_user):
    demo_user("reviewer")
    demo_user("operator")
    client = login("reviewer")
    assert client.get("/?age=older:²").status_code == 200
    assert client.post("/actions/bulk", {"verdict": "approve", "ids": ["²", "1"]}).status_code == 302
    operator = login("operator")
    response = operator.post(
        "/agents/refund-triage/runs", {"input": '{"ticket": "x", "order_id": "ORD-1", "amount": 1}', "priority": "abc"}
    )
    assert response.status_code == 302


def test_an_edit_naming_an_unknown_order_is_refused_on_its_field_and_changes_nothing(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    decided_before = AuditEvent.objects.filter(event="action.decided").count()
    response = login("reviewer").post(
        f"/actions/{action.pk}/decide",
        {"verdict": "edit", "arg-order_id": "ORD-9999", "arg-amount": "20", "arg-reason": "partial"},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "there is no order ORD-9999" in body
    assert 'class="field invalid"><label for="id_arg-order_id"' in body
    action.refresh_from_db()
    assert (action.status, action.arguments["order_id"], action.magnitude) == (ActionStatus.PENDING, "ORD-1003", 300)
    assert not Decision.objects.exists() and not Refund.objects.exists()
    assert AuditEvent.objects.filter(event="action.decided").count() == decided_before


def test_an_edit_refunding_more_than_is_left_is_refused_on_the_amount_field(refund_agent, orders, demo_user):
    demo_user("reviewer")
    Order.objects.filter(order_id="ORD-1003").update(total=Decimal("351"), refunded_total=Decimal("300"))
    action = pending()
    response = login("reviewer").post(
        f"/actions/{action.pk}/decide",
        {"verdict": "edit", "arg-order_id": "ORD-1003", "arg-amount": "51.01", "arg-reason": "partial"},
    )
    assert response.status_code == 400
    assert "at most 51.00 of order ORD-1003 is left to refund" in response.content.decode()
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.PENDING


def test_an_edit_deleting_a_contact_that_does_not_exist_is_refused(
    refund_agent, crm_agent, orders, contacts, demo_user
):
    demo_user("reviewer")
    action = pending("crm-cleanup")
    response = login("reviewer").post(f"/actions/{action.pk}/decide", {"verdict": "edit", "arg-ids": "3, 9999"})
    assert response.status_code == 400
    assert "no such contact (or already deleted): 9999" in response.content.decode()
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.PENDING


def test_an_edit_over_the_hard_limit_is_refused_when_the_tool_denies_over_limit_calls(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    AgentTool.objects.filter(tool="issue_refund").update(max_magnitude=Decimal(320), over_limit="deny")
    response = login("reviewer").post(
        f"/actions/{action.pk}/decide",
        {"verdict": "edit", "arg-order_id": "ORD-1003", "arg-amount": "321", "arg-reason": "more"},
    )
    assert response.status_code == 400
    assert "exceeds the hard limit 320.00" in response.content.decode()
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.PENDING


def test_an_edit_stores_the_magnitude_of_the_edited_arguments(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    response = edit_and_confirm(
        login("reviewer"), action, {"arg-order_id": "ORD-1003", "arg-amount": "45.50", "arg-reason": "partial refund"}
    )
    assert response.status_code == 302
    action.refresh_from_db()
    assert action.magnitude == Decimal("45.50")
    assert AuditEvent.objects.get(event="action.decided", target_id=str(action.pk)).after["magnitude"] == "45.50"


def test_an_edit_toward_a_quorum_stores_the_new_magnitude_and_preview(refund_agent, orders, demo_user):
    demo_user("reviewer")
    demo_user("reviewer2")
    AgentTool.objects.filter(tool="issue_refund").update(required_approvals=2)
    action = pending()
    client = login("reviewer")
    edit_and_confirm(client, action, {"arg-order_id": "ORD-1003", "arg-amount": "12", "arg-reason": "partial"})
    action.refresh_from_db()
    assert (action.status, action.magnitude) == (ActionStatus.PENDING, Decimal(12))
    page = login("reviewer2").get(f"/actions/{action.pk}/").content.decode()
    assert "magnitude 12.00" in page
    assert '<th>refunded after</th><td><span class="text">12.00</span></td>' in page


def test_a_failed_edit_answers_at_the_action_page_url_not_the_post_url(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    data = {"verdict": "edit", "arg-order_id": "ORD-9999", "arg-amount": "20", "arg-reason": "partial"}
    plain = login("reviewer").post(f"/actions/{action.pk}/decide", data)
    assert plain.status_code == 400
    assert f'data-page-url="/actions/{action.pk}/"' in plain.content.decode()
    # The same page, asked for with GET, is what a reload then shows.
    assert login("reviewer").get(f"/actions/{action.pk}/").status_code == 200


def test_an_htmx_decision_error_goes_to_the_message_area_and_leaves_the_row(refund_agent, orders, demo_user):
    demo_user("reviewer")
    demo_user("reviewer2")
    action = pending()
    login("reviewer").post(f"/actions/{action.pk}/decide", {"verdict": "reject", "comment": "no"})
    response = login("reviewer2").post(
        f"/actions/{action.pk}/decide", {"verdict": "approve", "from": "inbox"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 409
    assert response["HX-Retarget"] == "#notices"
    assert response["HX-Reswap"] == "innerHTML"
    assert "already decided by reviewer" in response.content.decode()


def test_an_inbox_decision_answers_with_a_toast_that_says_what_was_done(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    response = login("reviewer").post(
        f"/actions/{action.pk}/decide", {"verdict": "approve", "from": "inbox"}, headers={"HX-Request": "true"}
    )
    body = response.content.decode()
    assert response.status_code == 200
    # Only the out-of-band toast: the row itself is swapped for nothing.
    assert body.startswith('<div hx-swap-oob="afterbegin:#notices">')
    assert f"Approved issue_refund #{action.pk} for Refund triage. It runs in a moment." in body
    assert ActionRequest.objects.get(pk=action.pk).status != ActionStatus.PENDING


def test_an_edit_shows_what_it_changes_and_decides_nothing_until_confirmed(refund_agent, orders, demo_user):
    demo_user("reviewer")
    action = pending()
    client = login("reviewer")
    fields = {"verdict": "edit", "arg-order_id": "ORD-1003", "arg-amount": "45.50", "arg-reason": "partial refund"}
    first = client.post(f"/actions/{action.pk}/decide", fields)
    page = first.content.decode()
    assert first.status_code == 200 and 'id="edit-review"' in page and "Confirm edit &amp; approve" in page
    # The recomputed preview beside the agent's: refunded after 300.00 becomes 45.50.
    assert '<th>refunded after</th><td><del><span class="text">300.00</span></del></td>' in page
    assert '<ins><span class="text">45.50</span></ins>' in page
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.PENDING
    digest = re.search(r'name="confirm" value="([0-9a-f]+)"', page).group(1)

    # Changed again after seeing it: asked again, still nothing decided.
    again = client.post(f"/actions/{action.pk}/decide", {**fields, "arg-amount": "40", "confirm": digest})
    assert again.status_code == 200 and 'id="edit-review"' in again.content.decode()
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.PENDING

    done = client.post(f"/actions/{action.pk}/decide", {**fields, "confirm": digest})
    assert done.status_code == 302
    assert ActionRequest.objects.get(pk=action.pk).decision.arguments_after["amount"] == "45.50"
