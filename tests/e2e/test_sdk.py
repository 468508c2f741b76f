"""The Python SDK (sdk/python) against a live Countersign (daphne and a worker): an agent's function runs only once
a person approved it, with exactly the approved arguments, once; a rejection reaches it as an exception with the
reviewer's reason."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from accounts.services import api_token_issue
from approvals.models import ActionRequest, ActionStatus
from audit.models import AuditEvent
from countersign import (
    AsyncCountersign,
    Conflict,
    Countersign,
    InvalidCall,
    Rejected,
    call_digest,
    require_approval,
)
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import review_in_turn
from tests.factories import enabled_caller_tool

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def invoices(demo_user: Any, refund_agent: Any) -> None:
    """send_invoice: a caller's tool on refund-triage, reviewed."""
    for name in ("admin", "operator", "reviewer"):
        demo_user(name)
    enabled_caller_tool(refund_agent, admin=user("admin"))


def _token(username: str) -> str:
    return api_token_issue(user=user(username), actor=None)


def test_a_guarded_function_runs_once_with_the_edited_arguments(invoices: None, stack: Any) -> None:
    client = Countersign(stack.base, _token("operator"), agent="refund-triage")
    sent: list[dict[str, Any]] = []

    @require_approval(client, confidence=0.6, rationale=lambda args: f"invoice {args['customer']}")
    def send_invoice(customer: str, amount: float) -> dict[str, Any]:
        sent.append({"customer": customer, "amount": amount})
        return {"invoice": "INV-1", "amount": amount}

    reviewer = review_in_turn(
        stack.base, _token("reviewer"), [{"verdict": "edit", "arguments": {"customer": "ACME", "amount": 90}}]
    )
    assert send_invoice("ACME", 120) == {"invoice": "INV-1", "amount": 90}
    reviewer.join(timeout=30)
    assert sent == [{"customer": "ACME", "amount": 90}]  # once, as edited

    action = ActionRequest.objects.get()
    assert action.status == ActionStatus.EXECUTED and action.result == {"invoice": "INV-1", "amount": 90}
    assert action.rationale == "invoice ACME"
    assert action.grant.digest == call_digest(agent="refund-triage", tool="send_invoice", arguments=action.arguments)
    mine = AuditEvent.objects.filter(target_type="approvals.actionrequest", target_id=str(action.pk))
    events = list(mine.order_by("seq").values_list("event", flat=True))
    assert events == ["action.routed", "action.decided", "grant.issued", "grant.redeemed", "action.executed"]

    # The grant was used: another process holding the same approval cannot run it again.
    with pytest.raises(Conflict) as again:
        client.redeem(client.get(action.pk))
    assert again.value.code == "already_reported"
    client.close()


def test_a_rejection_reaches_the_agent_with_the_reason_and_nothing_runs(invoices: None, stack: Any) -> None:
    ran: list[Any] = []
    operator, reviewer_token = _token("operator"), _token("reviewer")

    async def agent() -> None:
        async with AsyncCountersign(stack.base, operator, agent="refund-triage") as client:

            @require_approval(client, confidence=0.6)
            async def send_invoice(customer: str, amount: float) -> str:
                ran.append(customer)
                return "sent"

            reviewer = review_in_turn(stack.base, reviewer_token, [{"verdict": "reject", "comment": "wrong customer"}])
            with pytest.raises(Rejected) as rejected:
                await send_invoice("Initech", 40)
            await asyncio.to_thread(reviewer.join, 30)
            assert rejected.value.reason == "wrong customer" and rejected.value.reviewer == "reviewer"

            with pytest.raises(InvalidCall) as invalid:
                await send_invoice("Initech", "forty")  # type: ignore[arg-type]
            assert invalid.value.code == "invalid_arguments"

    asyncio.run(agent())
    assert ran == []
    assert ActionRequest.objects.get().status == ActionStatus.REJECTED
