from __future__ import annotations

import re
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from agents.models import Agent
from agents.services import agent_permission_grant, agent_permission_revoke, run_start
from approvals.claims import action_request_claim
from approvals.decisions import action_request_decide, action_request_escalate
from approvals.four_eyes import agent_configure
from approvals.models import ActionRequest
from config.asgi import application
from live import consumers
from live.consumers import CLOSE_NO_RIGHTS, CLOSE_SESSION_ENDED, recheck_delay
from live.groups import user_group
from live.push import OPS_CHANGED, push
from live.relay import html, inline_relay
from tests.conftest import refund_input, user

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in(the_user) -> Client:
    client = Client()
    client.force_login(the_user)
    return client


async def connect(the_user=None, *, client: Client | None = None, path: str = "/ws/inbox/"):
    """Open the socket the way a browser does: the whole ASGI stack, a real session cookie."""
    if client is None and the_user is not None:
        client = await database_sync_to_async(logged_in)(the_user)
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if client is not None:
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    if client is not None:
        communicator.user_id = int(await database_sync_to_async(lambda: client.session["_auth_user_id"])())
    connected, _ = await communicator.connect()
    return communicator, connected


async def close_code(communicator, timeout=5.0):
    """Wait for the server to close the socket (fails on timeout); skip what was sent before."""
    while True:
        message = await communicator.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            return message.get("code")


async def receive_all(communicator):
    """Everything pushed to this socket so far, with no waiting window.

    A marker is sent last, through the same relay, to the user's own group: the socket
    handles its messages in order, so what arrives before the marker is all there was.
    A socket that is behind sends the messages waiting for it as one frame: the marker's
    may carry the last of them, before the marker's number.
    """
    marker = f"barrier-{uuid.uuid4().hex}"
    frame = (user_group(communicator.user_id), html(f'<i id="{marker}"></i>'))
    await database_sync_to_async(inline_relay().send)([frame])
    messages = []
    while marker not in (message := await communicator.receive_from(timeout=10)):
        messages.append(message)
    if head := message[: message.rfind('<div id="live-seq"', 0, message.index(marker))]:
        messages.append(head)
    return messages


def rows(messages):
    """The messages that carry inbox rows (the others: queue counts, run pages, sequence numbers)."""
    return [m for m in messages if 'id="action-' in m]


async def next_row(communicator, timeout=5.0):
    """Wait for the next message that carries an inbox row (fails on timeout)."""
    while 'id="action-' not in (message := await communicator.receive_from(timeout=timeout)):
        pass
    return message


def test_anonymous_socket_is_refused(demo):
    async def scenario():
        _, connected = await connect(None)
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
        got = [rows(await receive_all(c)) for c in (r1, r2, op)]
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
        first = await next_row(r2)  # wait for it: a fixed window is flaky on a busy machine
        await r2.disconnect()
        return first

    first = async_to_sync(scenario)()
    assert f'<article id="action-{action.pk}" hx-swap-oob="delete">' in first


def test_revoked_reviewer_stops_receiving(demo):
    reviewer, admin = user("reviewer"), user("admin")

    async def scenario():
        r1, _ = await connect(reviewer)
        await database_sync_to_async(agent_permission_revoke)(
            agent=demo["crm-cleanup"], perm="review_agent", to=reviewer, actor=admin
        )
        resync = await receive_all(r1)
        await database_sync_to_async(run_start)(
            agent=demo["crm-cleanup"], input={"request": "x", "contact_ids": [9]}, actor=None
        )
        await database_sync_to_async(run_start)(agent=demo["refund-triage"], input=refund_input(amount=400), actor=None)
        after = await receive_all(r1)
        await r1.disconnect()
        return resync, after

    resync, after = async_to_sync(scenario)()
    assert any("inbox-resync" in m for m in resync)
    # Still a reviewer of refund-triage: that row arrives, crm-cleanup's does not.
    refund = ActionRequest.objects.get(agent=demo["refund-triage"])
    crm = ActionRequest.objects.get(agent=demo["crm-cleanup"])
    assert any(f'id="action-{refund.pk}"' in m for m in after)
    assert not any(f'id="action-{crm.pk}"' in m for m in after)


def test_operators_hear_when_a_run_halts(demo):

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
    # The row itself replaces the page's copy (an element wrapping it would be put in the list with it).
    replaced = re.compile(rf'<article [^>]*id="action-{action.pk}"[^>]*hx-swap-oob="true"')
    assert any(replaced.search(m) and "reviewer is on it" in m for m in claimed)
    assert not any("outerHTML:" in m for m in claimed)
    # reviewer2 (first tier only) loses the row; reviewer (second tier too) gets it back as escalated.
    assert any(f'<article id="action-{action.pk}" hx-swap-oob="delete">' in m for m in to_r2)
    assert not any("afterbegin" in m for m in to_r2)
    assert any("afterbegin" in m and "escalated" in m for m in to_r1)


def test_configuration_changes_reach_only_those_who_configure_the_agent(demo):

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
    assert any(f'id="action-{proposal.pk}"' in m and "Configuration change" in m for m in to_admin2)
    assert not any(f'id="action-{proposal.pk}"' in m for m in to_reviewer)


def test_operator_pages_are_told_to_refresh_only_for_their_agents(demo):

    limited = get_user_model().objects.create_user(username="crm-operator")
    agent_permission_grant(agent=demo["crm-cleanup"], perm="operate_agent", to=limited, actor=None)
    operator = user("operator")

    async def scenario():
        op, _ = await connect(operator)
        crm_op, _ = await connect(limited)
        await database_sync_to_async(push)(OPS_CHANGED, agent_id=demo["refund-triage"].pk)
        got = await receive_all(op), await receive_all(crm_op)
        for c in (op, crm_op):
            await c.disconnect()
        return got

    to_operator, to_limited = async_to_sync(scenario)()
    assert any('id="ops-refresh"' in m for m in to_operator)
    assert to_limited == []


def test_the_changes_page_resyncs_with_rows_only(demo):

    client = Client()
    client.force_login(user("admin2"))
    body = client.get("/changes/", headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in body


# --- The socket follows the session ----------------------------------------------


def test_logout_closes_the_socket_of_that_session_only(demo):
    reviewer = user("reviewer")
    laptop, phone = logged_in(reviewer), logged_in(reviewer)

    async def scenario():
        on_laptop, _ = await connect(client=laptop)
        on_phone, _ = await connect(client=phone)
        response = await database_sync_to_async(laptop.post)("/logout/")
        code = await close_code(on_laptop)
        # The other session's socket is still open and still served.
        await database_sync_to_async(run_start)(agent=demo["refund-triage"], input=refund_input(amount=400), actor=None)
        still_served = await next_row(on_phone)
        await on_laptop.disconnect()
        await on_phone.disconnect()
        return response.status_code, code, still_served

    status, code, still_served = async_to_sync(scenario)()
    assert status == 302
    assert code == CLOSE_SESSION_ENDED
    assert "action-" in still_served


def test_deactivating_the_user_closes_the_socket(demo):
    reviewer = user("reviewer")

    def deactivate():
        reviewer.is_active = False
        reviewer.save()

    async def scenario():
        socket_, connected = await connect(reviewer)
        await database_sync_to_async(deactivate)()
        code = await close_code(socket_)
        await socket_.disconnect()
        return connected, code

    assert async_to_sync(scenario)() == (True, CLOSE_SESSION_ENDED)


def test_a_password_change_closes_the_socket(demo):
    reviewer = user("reviewer")

    def change_password():
        reviewer.set_password("another-password-2")
        reviewer.save()

    async def scenario():
        socket_, connected = await connect(reviewer)
        await database_sync_to_async(change_password)()
        code = await close_code(socket_)
        await socket_.disconnect()
        return connected, code

    assert async_to_sync(scenario)() == (True, CLOSE_SESSION_ENDED)


def test_the_socket_closes_when_its_session_expires(demo):
    client = logged_in(user("reviewer"))
    session = client.session
    session.set_expiry(2)
    session.save()

    async def scenario():
        socket_, connected = await connect(client=client)
        opened = time.monotonic()
        code = await close_code(socket_, timeout=8)
        lasted = time.monotonic() - opened
        await socket_.disconnect()
        return connected, code, lasted

    connected, code, lasted = async_to_sync(scenario)()
    assert connected is True
    assert code == CLOSE_SESSION_ENDED
    assert 0.5 < lasted < 6  # closed by the expiry timer, not at once and not by the 30 s re-check


def test_losing_the_last_right_closes_the_socket(demo):
    reviewer2, admin = user("reviewer2"), user("admin")

    async def scenario():
        socket_, connected = await connect(reviewer2)
        await database_sync_to_async(agent_permission_revoke)(
            agent=demo["refund-triage"], perm="review_agent", to=reviewer2, actor=admin
        )
        code = await close_code(socket_)
        await socket_.disconnect()
        return connected, code

    assert async_to_sync(scenario)() == (True, CLOSE_NO_RIGHTS)


def test_a_user_with_nothing_to_review_or_operate_is_refused(demo):
    auditor = user("auditor")

    async def scenario():
        _, connected = await connect(auditor)
        return connected

    assert async_to_sync(scenario)() is False


def test_the_periodic_recheck_catches_changes_that_send_no_signal(demo, settings):

    settings.SOCKET_RECHECK_SECONDS = 1
    reviewer = user("reviewer")

    async def scenario():
        socket_, connected = await connect(reviewer)
        # QuerySet.update sends no post_save: only the timer can notice.
        await database_sync_to_async(get_user_model().objects.filter(pk=reviewer.pk).update)(is_active=False)
        code = await close_code(socket_)
        await socket_.disconnect()
        return connected, code

    assert async_to_sync(scenario)() == (True, CLOSE_SESSION_ENDED)


@given(interval=st.floats(min_value=1, max_value=1e6), first=st.booleans())
def test_a_periodic_recheck_waits_no_longer_than_the_interval(interval, first):
    wait = recheck_delay(interval, first=first)
    assert 0 <= wait <= interval
    if not first:
        assert wait == interval  # after the first, one re-check per interval: no more load than that


def test_sockets_opened_together_do_not_recheck_together(demo, settings, monkeypatch):
    # All at once, 300 sockets' re-checks held every push up by up to 1.5 s (docs/benchmarks-history.md).
    settings.SOCKET_RECHECK_SECONDS = 600
    drawn: list[float] = []

    def recorded(interval: float, *, first: bool) -> float:
        assert first  # these sockets close long before a second wait
        drawn.append(recheck_delay(interval, first=first))
        return drawn[-1]

    monkeypatch.setattr(consumers, "recheck_delay", recorded)
    reviewer = user("reviewer")

    async def scenario():
        opened = [await connect(reviewer) for _ in range(12)]
        for socket_, _ in opened:
            await socket_.disconnect()
        return [connected for _, connected in opened]

    assert async_to_sync(scenario)() == [True] * 12
    assert len(drawn) == 12
    assert all(0 <= wait <= 600 for wait in drawn)
    # Twelve draws from 0-600 s: the chance that they all fall within two minutes is about 2e-7.
    assert max(drawn) - min(drawn) > 120


def test_an_open_run_page_and_the_queue_counts_follow_a_decision_for_those_allowed_only(demo):
    agent = demo["crm-cleanup"]
    run = run_start(agent=agent, input={"request": "x", "contact_ids": [7]}, actor=None)
    action = ActionRequest.objects.get(run=run)
    # reviewer2 reviews refund-triage only: its socket is open, but this run is not its to see.
    operator, reviewer, outsider = user("operator"), user("reviewer"), user("reviewer2")

    async def scenario():
        on_run_page = f"/ws/inbox/?run={run.pk}"
        sockets = [(await connect(u, path=on_run_page))[0] for u in (operator, reviewer, outsider)]
        inbox_only = (await connect(reviewer))[0]  # the same reviewer's inbox page
        sockets.append(inbox_only)
        await database_sync_to_async(action_request_decide)(
            action=action, actor=reviewer, verdict="reject", comment="not eligible"
        )
        got = [await receive_all(s) for s in sockets]
        for s in sockets:
            await s.disconnect()
        return got

    to_operator, to_reviewer, to_outsider, to_inbox = async_to_sync(scenario)()
    live_part = f'<div id="run-{run.pk}-live" data-run-status="succeeded" hx-swap-oob="true">'
    assert any(live_part in m and "status-rejected" in m for m in to_operator)
    assert any(live_part in m for m in to_reviewer)
    assert any(f'<span id="qc-{agent.pk}-1" class="qc" data-n="0" hx-swap-oob="true" hidden>' in m for m in to_reviewer)
    assert not any(f'id="qc-{agent.pk}-1"' in m for m in to_operator)  # operators have no queue to count
    # A run page of a run they may not see joins nothing for it; an inbox page gets no run frames.
    assert not any(f'id="run-{run.pk}-live"' in m for m in to_outsider + to_inbox)
    assert any(f'id="qc-{agent.pk}-1"' in m for m in to_inbox)
