from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from agents.services import agent_permission_revoke, run_start
from approvals.consumers import InboxConsumer
from approvals.models import ActionRequest
from approvals.services import action_request_decide
from tests.conftest import refund_input, user

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(the_user):
    communicator = WebsocketCommunicator(InboxConsumer.as_asgi(), "/ws/inbox/")
    communicator.scope["user"] = the_user
    connected, _ = await communicator.connect()
    return communicator, connected


async def receive_all(communicator, timeout=0.3):
    # receive_nothing() leaves the consumer running; a timed-out receive_from() would cancel it.
    messages = []
    while not await communicator.receive_nothing(timeout=timeout):
        messages.append(await communicator.receive_from())
    return messages


def test_anonymous_socket_is_refused(demo):
    async def scenario():
        _, connected = await connect(AnonymousUser())
        return connected

    assert async_to_sync(scenario)() is False


def test_new_actions_reach_only_reviewers_allowed_to_see_them(demo):
    reviewer, reviewer2, operator = user("reviewer"), user("reviewer2"), user("operator")

    async def scenario():
        r1, _ = await connect(reviewer)
        r2, _ = await connect(reviewer2)
        op, _ = await connect(operator)
        await database_sync_to_async(run_start)(
            agent=demo["crm-cleanup"], input={"request": "x", "contact_ids": [9]}, actor=None
        )
        await database_sync_to_async(run_start)(agent=demo["refund-triage"], input=refund_input(amount=400), actor=None)
        got = [await receive_all(c) for c in (r1, r2, op)]
        for c in (r1, r2, op):
            await c.disconnect()
        return got

    to_reviewer, to_reviewer2, to_operator = async_to_sync(scenario)()
    crm = ActionRequest.objects.get(agent=demo["crm-cleanup"])
    refund = ActionRequest.objects.get(agent=demo["refund-triage"])
    assert len(to_reviewer) == 2
    assert any(f'id="action-{crm.pk}"' in m for m in to_reviewer)
    assert any(f'id="action-{refund.pk}"' in m for m in to_reviewer)
    assert len(to_reviewer2) == 1
    assert f'id="action-{refund.pk}"' in to_reviewer2[0]
    assert 'hx-swap-oob="afterbegin:#inbox-rows"' in to_reviewer2[0]
    assert to_operator == []


def test_a_decision_removes_the_row_from_every_open_inbox(demo):
    run = run_start(agent=demo["refund-triage"], input=refund_input(amount=400), actor=None)
    action = ActionRequest.objects.get(run=run)
    reviewer, reviewer2 = user("reviewer"), user("reviewer2")

    async def scenario():
        r2, _ = await connect(reviewer2)
        await database_sync_to_async(action_request_decide)(action=action, actor=reviewer, verdict="approve")
        got = await receive_all(r2)
        await r2.disconnect()
        return got

    messages = async_to_sync(scenario)()
    assert f'<article id="action-{action.pk}" hx-swap-oob="delete">' in messages[0]


def test_revoked_reviewer_stops_receiving(demo):
    reviewer2, admin = user("reviewer2"), user("admin")

    async def scenario():
        r2, _ = await connect(reviewer2)
        await database_sync_to_async(agent_permission_revoke)(
            agent=demo["refund-triage"], perm="review_agent", to=reviewer2, actor=admin
        )
        resync = await receive_all(r2)
        await database_sync_to_async(run_start)(agent=demo["refund-triage"], input=refund_input(amount=400), actor=None)
        after = await receive_all(r2)
        await r2.disconnect()
        return resync, after

    resync, after = async_to_sync(scenario)()
    assert any("inbox-resync" in m for m in resync)
    assert after == []


def test_operators_hear_when_a_run_halts(demo):
    from agents.models import Agent

    operator, reviewer2 = user("operator"), user("reviewer2")
    Agent.objects.filter(slug="refund-triage").update(max_steps=1, loop_limit=5)

    async def scenario():
        op, _ = await connect(operator)
        r2, _ = await connect(reviewer2)
        # The refund is rejected, so the run needs a second model call: over the step limit.
        run = await database_sync_to_async(run_start)(
            agent=demo["refund-triage"], input=refund_input(amount=400), actor=None
        )
        action = await database_sync_to_async(ActionRequest.objects.get)(run=run)
        await database_sync_to_async(action_request_decide)(
            action=action, actor=user_obj, verdict="reject", comment="no"
        )
        got = await receive_all(op), await receive_all(r2)
        await op.disconnect()
        await r2.disconnect()
        return run, got

    user_obj = user("reviewer")
    run, (to_operator, to_reviewer2) = async_to_sync(scenario)()
    notices = [m for m in to_operator if "run-notice" in m]
    assert len(notices) == 1
    assert f'Run <a href="/runs/{run.pk}/">{run.pk}</a>' in notices[0]
    assert "step limit reached (1 steps)" in notices[0]
    assert not any("run-notice" in m for m in to_reviewer2)


def test_claims_and_escalations_update_open_inboxes_live(demo):
    from approvals.services import action_request_claim, action_request_escalate

    run = run_start(agent=demo["refund-triage"], input=refund_input(amount=400), actor=None)
    action = ActionRequest.objects.get(run=run)
    reviewer, reviewer2 = user("reviewer"), user("reviewer2")

    async def scenario():
        r1, _ = await connect(reviewer)
        r2, _ = await connect(reviewer2)
        await database_sync_to_async(action_request_claim)(action=action, actor=reviewer)
        claimed = await receive_all(r2)
        await database_sync_to_async(action_request_escalate)(action=action, actor=reviewer2, reason="too big")
        to_r1, to_r2 = await receive_all(r1), await receive_all(r2)
        for c in (r1, r2):
            await c.disconnect()
        return claimed, to_r1, to_r2

    claimed, to_r1, to_r2 = async_to_sync(scenario)()
    assert any(f'hx-swap-oob="outerHTML:#action-{action.pk}"' in m and "reviewer is on it" in m for m in claimed)
    # reviewer2 (first tier only) loses the row; reviewer (second tier too) gets it back as escalated.
    assert any(f'<article id="action-{action.pk}" hx-swap-oob="delete">' in m for m in to_r2)
    assert not any("afterbegin" in m for m in to_r2)
    assert any("afterbegin" in m and "escalated" in m for m in to_r1)


def test_configuration_changes_reach_only_those_who_configure_the_agent(demo):
    from agents.configuration import agent_configure

    admin2, reviewer = user("admin2"), user("reviewer")
    admin = user("admin")

    async def scenario():
        a2, _ = await connect(admin2)
        r1, _ = await connect(reviewer)
        outcome = await database_sync_to_async(agent_configure)(
            agent=demo["refund-triage"], actor=admin, settings={"review_threshold": 0.4}, tools={}
        )
        got = await receive_all(a2), await receive_all(r1)
        for c in (a2, r1):
            await c.disconnect()
        return outcome.proposal, got

    proposal, (to_admin2, to_reviewer) = async_to_sync(scenario)()
    assert any(f'id="action-{proposal.pk}"' in m and "apply_agent_config" in m for m in to_admin2)
    assert not any(f'id="action-{proposal.pk}"' in m for m in to_reviewer)


def test_operator_pages_are_told_to_refresh_only_for_their_agents(demo):
    from django.contrib.auth import get_user_model

    from agents.services import agent_permission_grant
    from approvals.broadcast import ops_changed

    limited = get_user_model().objects.create_user(username="crm-operator")
    agent_permission_grant(agent=demo["crm-cleanup"], perm="operate_agent", to=limited, actor=None)
    operator = user("operator")

    async def scenario():
        op, _ = await connect(operator)
        crm_op, _ = await connect(limited)
        await database_sync_to_async(ops_changed)(demo["refund-triage"].pk)
        got = await receive_all(op), await receive_all(crm_op)
        for c in (op, crm_op):
            await c.disconnect()
        return got

    to_operator, to_limited = async_to_sync(scenario)()
    assert any('id="ops-refresh"' in m for m in to_operator)
    assert to_limited == []


def test_the_changes_page_resyncs_with_rows_only(demo):
    from django.test import Client

    client = Client()
    client.force_login(user("admin2"))
    body = client.get("/changes/", headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in body
