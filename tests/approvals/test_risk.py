"""Risk ranks by what is at stake: magnitude against the tool's limits and the object it touches."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.tools import Finding, Stake
from approvals import selectors
from approvals.models import ActionRequest, ActionStatus
from approvals.risk import assess
from approvals.routing import route_tool_call
from demo.models import Order
from tests.conftest import user

pytestmark = pytest.mark.django_db

magnitudes = st.decimals(min_value=0, max_value=10**6, allow_nan=False, allow_infinity=False, places=2)
limits = st.none() | st.decimals(min_value=Decimal("0.01"), max_value=10**5, places=2)
shares = st.none() | st.floats(min_value=0, max_value=50)


@given(
    a=magnitudes,
    b=magnitudes,
    confidence=st.floats(0, 1),
    hard=limits,
    auto=limits,
    total=st.none() | st.decimals(min_value=1, max_value=10**5, places=2),
    impact=st.sampled_from(["read", "write", "financial", "destructive", "unheard-of"]),
    flags=st.integers(0, 3),
    sla=st.integers(1, 10_000),
)
def test_a_larger_call_never_ranks_below_a_smaller_one_otherwise_alike(
    a, b, confidence, hard, auto, total, impact, flags, sla
):
    small, large = sorted([a, b])

    def score(m: Decimal) -> int:
        stake = Stake(share=float(m / total), of="the order") if total else None
        risk = assess(
            impact=impact,
            magnitude=m,
            confidence=confidence,
            flags=flags,
            stake=stake,
            hard_limit=hard,
            auto_limit=auto,
            sla_minutes=sla,
        )
        assert 0 <= risk.score <= 100
        assert risk.score == min(100, sum(risk.parts.values()))
        assert set(risk.parts) == {"impact", "stake", "doubt", "flags", "urgency"}
        assert len(risk.basis) <= 200
        return risk.score

    assert score(small) <= score(large)


@given(low=st.floats(0, 1), high=st.floats(0, 1), findings=st.integers(0, 3))
def test_doubt_and_findings_only_raise_the_score(low, high, findings):
    low, high = sorted([low, high])

    def score(confidence: float, n: int) -> int:
        stake = Stake(share=0.5, of="x", findings=tuple(Finding("f", "m") for _ in range(n)))
        return assess(
            impact="financial",
            magnitude=Decimal(50),
            confidence=confidence,
            flags=0,
            stake=stake,
            hard_limit=None,
            auto_limit=Decimal(100),
            sla_minutes=240,
        ).score

    assert score(high, findings) <= score(low, findings)
    assert score(low, 0) <= score(low, findings)


def _submit(agent, tool, arguments, confidence=0.9):
    outcome = route_tool_call(
        agent=agent, run=None, tool=tool, arguments=arguments, confidence=confidence, rationale=""
    )
    assert outcome.action is not None and outcome.action.status == ActionStatus.PENDING, outcome
    return outcome.action


def test_a_realistic_mixed_queue_is_ranked_by_what_is_at_stake(demo, client):
    refund, crm = demo["refund-triage"], demo["crm-cleanup"]
    Order.objects.create(order_id="ORD-7001", customer="Big order", total=Decimal(5000))
    Order.objects.create(order_id="ORD-7002", customer="Mid order", total=Decimal(600))

    def refund_of(amount, order, confidence=0.9):
        args = {"order_id": order, "amount": amount, "reason": "damaged"}
        return _submit(refund, "issue_refund", args, confidence)

    small_of_big = refund_of(250, "ORD-7001")
    most_of_mid = refund_of(500, "ORD-7002")
    all_of_mid = refund_of(600, "ORD-7002")
    over_total = refund_of(5000, "ORD-7002")
    unsure_small = refund_of(40, "ORD-7001", confidence=0.5)
    few_contacts = _submit(crm, "delete_contacts", {"ids": [1, 2, 3]})
    most_contacts = _submit(crm, "delete_contacts", {"ids": list(range(1, 151))})

    order = [a.pk for a in selectors.inbox_for(user("reviewer"))]
    rank = {pk: i for i, pk in enumerate(order)}
    # The refund above its order's total comes first: the whole stake, and a warning.
    assert order[0] == over_total.pk
    assert over_total.findings == [
        {"code": "exceeds_order_total", "message": "refunded in all 5000.00, above the order's total 600.00"}
    ]
    # More of the same order ranks higher; a small share of a big order ranks below a large share of a small one.
    assert rank[all_of_mid.pk] < rank[most_of_mid.pk] < rank[small_of_big.pk]
    # Deleting 150 of 200 contacts outranks deleting 3; a doubtful 40 outranks neither large call.
    assert rank[most_contacts.pk] < rank[few_contacts.pk]
    assert rank[most_contacts.pk] < rank[unsure_small.pk] and rank[most_of_mid.pk] < rank[unsure_small.pk]
    # The parts are kept, and sum to the score.
    for action in ActionRequest.objects.filter(pk__in=order):
        assert sum(action.risk_parts.values()) == action.risk_score, action.risk_parts
        assert action.risk_basis
    assert "of order ORD-7002's total 600.00" in ActionRequest.objects.get(pk=most_of_mid.pk).risk_basis

    # The inbox shows the warning as a warning, and the parts on hover.
    client.force_login(user("reviewer"))
    page = client.get("/").content.decode()
    assert '<span class="warning" role="note" title="exceeds_order_total">' in page
    assert f'title="{ActionRequest.objects.get(pk=over_total.pk).risk_summary()}"' in page.replace("&#x27;", "'")


def test_arguments_show_in_the_order_the_tool_declares_them(demo):
    arguments = {"reason": "damaged", "amount": 300, "order_id": "ORD-1003"}
    action = _submit(demo["refund-triage"], "issue_refund", arguments)
    # As PostgreSQL's jsonb would hand them back: shorter keys first.
    action.arguments = {"amount": "300", "reason": "damaged", "order_id": "ORD-1003"}
    assert [name for name, _ in action.argument_items()] == ["order_id", "amount", "reason"]
    # The score's parts too, whatever order the database hands them back in.
    action.risk_parts = {"urgency": 5, "doubt": 1, "impact": 25, "flags": 0, "stake": 12}
    assert [name for name, _ in action.risk_part_items()] == ["impact", "stake", "doubt", "flags", "urgency"]
    assert action.risk_summary().startswith(f"risk {action.risk_score} = impact 25 + stake 12 + doubt 1")
