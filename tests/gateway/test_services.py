"""Opening a gateway call: routed like any call, joined when identical and still owed, nothing left by a refusal."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from hypothesis import given
from hypothesis import strategies as st

from approvals.models import ActionRequest, ActionStatus
from gateway.models import GatewayCall
from gateway.services import call_key, gateway_call_answered, gateway_call_open
from tests.conftest import user

REFUND = {"order_id": "ORD-1004", "amount": 150, "reason": "arrived broken"}


def _open(agent, arguments=REFUND, tool="issue_refund"):
    return gateway_call_open(
        agent=agent, actor=user("operator"), tool=tool, arguments=arguments, confidence=1.0, rationale="test"
    )


@pytest.mark.django_db
def test_a_call_is_routed_like_any_proposed_call(refund_agent, orders, demo_user):
    demo_user("operator")
    opened = _open(refund_agent)
    action = opened.call.action
    assert not opened.joined
    assert action.status == ActionStatus.PENDING  # 150 is above the auto limit of 100
    assert action.call_id == f"mcp-{opened.call.pk}"
    assert action.submitted_by == user("operator")


@pytest.mark.django_db
def test_an_identical_call_joins_the_open_one_until_it_is_answered(refund_agent, orders, demo_user):
    demo_user("operator")
    first = _open(refund_agent)
    # The same call with its keys in another order and 150.0 for 150: the same canonical call.
    again = _open(refund_agent, {"reason": "arrived broken", "amount": 150.0, "order_id": "ORD-1004"})
    assert again.joined and again.call.pk == first.call.pk
    assert ActionRequest.objects.count() == 1
    other = _open(refund_agent, {**REFUND, "amount": 151})
    assert not other.joined and ActionRequest.objects.count() == 2

    assert gateway_call_answered(call_id=first.call.pk)
    assert not gateway_call_answered(call_id=first.call.pk)  # a second caller's close changes nothing
    after = _open(refund_agent)
    assert not after.joined and after.call.pk != first.call.pk
    assert ActionRequest.objects.count() == 3


@pytest.mark.django_db
def test_a_refused_call_leaves_nothing_behind(refund_agent, orders, demo_user):
    demo_user("operator")
    opened = _open(refund_agent, {"order_id": "not an order", "amount": 5, "reason": "x"})
    assert opened.call is None
    assert opened.refusal.code == "invalid_arguments"
    assert not GatewayCall.objects.exists()
    assert not ActionRequest.objects.exists()
    unknown = _open(refund_agent, REFUND, tool="drop_database")
    assert unknown.refusal.code in {"unknown_tool", "tool_not_enabled"}
    assert not GatewayCall.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_identical_calls_at_once_open_one_action(refund_agent, orders, demo_user):
    demo_user("operator")
    barrier = threading.Barrier(2)
    opened = []

    def call() -> None:
        try:
            barrier.wait(timeout=10)
            opened.append(_open(refund_agent))
        finally:
            connection.close()  # this thread's pooled connection goes back to the pool

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(opened) == 2
    assert len({o.call.pk for o in opened}) == 1
    assert sorted(o.joined for o in opened) == [False, True]
    assert ActionRequest.objects.count() == 1


# What JSON carries: integers and floats.
amounts = st.one_of(st.integers(min_value=1, max_value=10**9), st.floats(min_value=0.01, max_value=1e9))


@given(amount=amounts, keys=st.permutations(["order_id", "amount", "reason"]))
def test_the_key_ignores_key_order_and_number_spelling(amount, keys):
    values = {"order_id": "ORD-1001", "amount": amount, "reason": "r"}
    reordered = {k: values[k] for k in keys}
    assert call_key("issue_refund", reordered) == call_key("issue_refund", values)
    if float(amount).is_integer():  # 150 and 150.0 are one amount
        assert call_key("issue_refund", {**values, "amount": float(amount)}) == call_key(
            "issue_refund", {**values, "amount": int(amount)}
        )
    assert call_key("issue_refund", values) != call_key("other_tool", values)
    assert call_key("issue_refund", values) != call_key("issue_refund", {**values, "reason": "r2"})
