"""Caller-executed actions: an approved call to a caller's tool comes with a grant, redeemed once with exactly the
approved arguments and reported once; every refusal is audited, an unused grant expires, an unreported one goes in
doubt."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.services import api_token_issue
from agents.models import AgentTool, UpstreamTool
from approvals import decisions, execution, grants, routing
from approvals.grants import grant_token, grants_sweep
from approvals.models import ActionRequest, ActionStatus, Grant, GrantStatus
from audit.models import AuditEvent
from core.canonical import call_digest
from core.errors import Conflict
from tests.conftest import ApiClient, user
from tests.factories import enabled_caller_tool

pytestmark = pytest.mark.django_db

SCHEMA = {
    "type": "object",
    "properties": {"customer": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["customer", "amount"],
    "additionalProperties": False,
}
CALL = {"customer": "ACME", "amount": 120}


@pytest.fixture
def people(demo_user: Any, refund_agent: Any) -> None:
    for name in ("admin", "operator", "reviewer", "reviewer2"):
        demo_user(name)


def _declare(mode: str = "review", *, reversible: bool = False, agent: Any = None) -> str:
    return enabled_caller_tool(
        agent, admin=user("admin"), mode=mode, input_schema=SCHEMA, magnitude_pointer="/amount", reversible=reversible
    )


def _submit(api: Any, arguments: dict[str, Any] | None = None, confidence: float = 0.9) -> dict[str, Any]:
    response = api.post(
        "/api/v1/agents/refund-triage/actions",
        {"tool": "send_invoice", "arguments": arguments or CALL, "confidence": confidence},
    )
    assert response.status_code == 201, response.content
    return response.json()


def _approved(api_as: Any, refund_agent: Any, **decision: Any) -> dict[str, Any]:
    _declare(agent=refund_agent)
    submitted = _submit(api_as("operator"))
    assert submitted["status"] == "pending" and submitted["grant"] is None and submitted["caller_executes"]
    decided = api_as("reviewer").post(f"/api/v1/actions/{submitted['id']}/decision", {"verdict": "approve", **decision})
    assert decided.status_code == 200, decided.content
    return decided.json()


def _events(action_id: int, prefix: str = "grant.") -> list[str]:
    return list(
        AuditEvent.objects.filter(target_id=str(action_id), event__startswith=prefix)
        .order_by("seq")
        .values_list("event", flat=True)
    )


def test_an_approved_call_comes_with_a_grant_that_is_redeemed_then_reported(
    people: None, api_as: Any, refund_agent: Any
) -> None:
    action = _approved(api_as, refund_agent)
    grant = action["grant"]
    assert action["status"] == "approved" and grant["status"] == "issued"
    assert grant["digest"] == call_digest(agent="refund-triage", tool="send_invoice", arguments=CALL)
    operator = api_as("operator")

    redeemed = operator.post(
        f"/api/v1/actions/{action['id']}/grant/redeem", {"grant": grant["token"], "arguments": CALL}
    )
    assert redeemed.status_code == 200, redeemed.content
    assert redeemed.json()["status"] == "executing" and redeemed.json()["grant"]["status"] == "redeemed"

    reported = operator.post(
        f"/api/v1/actions/{action['id']}/report",
        {"grant": grant["token"], "arguments": CALL, "result": {"invoice": "INV-7"}},
    )
    assert reported.status_code == 200, reported.content
    body = reported.json()
    assert body["status"] == "executed" and body["result"] == {"invoice": "INV-7"}
    assert body["grant"]["status"] == "reported"
    assert _events(action["id"]) == ["grant.issued", "grant.redeemed"]
    executed = AuditEvent.objects.get(target_id=str(action["id"]), event="action.executed")
    assert executed.after["by"] == "caller" and executed.after["result"] == {"invoice": "INV-7"}


def test_a_reported_error_fails_the_action(people: None, api_as: Any, refund_agent: Any) -> None:
    action = _approved(api_as, refund_agent)
    token, operator = action["grant"]["token"], api_as("operator")
    operator.post(f"/api/v1/actions/{action['id']}/grant/redeem", {"grant": token, "arguments": CALL})
    reported = operator.post(
        f"/api/v1/actions/{action['id']}/report", {"grant": token, "arguments": CALL, "error": "billing is down"}
    )
    assert reported.status_code == 200
    assert reported.json()["status"] == "failed" and reported.json()["error"] == "billing is down"


def test_a_result_and_an_error_together_are_refused(people: None, api_as: Any, refund_agent: Any) -> None:
    action = _approved(api_as, refund_agent)
    token, operator = action["grant"]["token"], api_as("operator")
    operator.post(f"/api/v1/actions/{action['id']}/grant/redeem", {"grant": token, "arguments": CALL})
    reported = operator.post(
        f"/api/v1/actions/{action['id']}/report", {"grant": token, "arguments": CALL, "result": 1, "error": "no"}
    )
    assert reported.status_code == 400 and reported.json()["error"] == "invalid_request"
    assert ActionRequest.objects.get(pk=action["id"]).status == ActionStatus.EXECUTING


def test_an_edited_call_is_granted_only_with_the_edited_arguments(people: None, api_as: Any, refund_agent: Any) -> None:
    _declare(agent=refund_agent)
    submitted = _submit(api_as("operator"))
    edited = {"customer": "ACME", "amount": 90}
    decided = (
        api_as("reviewer")
        .post(f"/api/v1/actions/{submitted['id']}/decision", {"verdict": "edit", "arguments": edited})
        .json()
    )
    token = decided["grant"]["token"]
    assert decided["grant"]["digest"] == call_digest(agent="refund-triage", tool="send_invoice", arguments=edited)

    operator = api_as("operator")
    as_proposed = operator.post(f"/api/v1/actions/{submitted['id']}/grant/redeem", {"grant": token, "arguments": CALL})
    assert as_proposed.status_code == 409
    refusal = as_proposed.json()
    assert refusal["error"] == "arguments_mismatch" and refusal["grant_digest"] == decided["grant"]["digest"]
    assert ActionRequest.objects.get(pk=submitted["id"]).status == ActionStatus.APPROVED  # nothing changed
    audited = AuditEvent.objects.get(target_id=str(submitted["id"]), event="grant.redeem_refused")
    assert audited.after["code"] == "arguments_mismatch" and audited.after["arguments"] == CALL

    # The same call written otherwise (key order, 90.0 for 90) is the same call.
    same = {"amount": 90.0, "customer": "ACME"}
    assert (
        operator.post(
            f"/api/v1/actions/{submitted['id']}/grant/redeem", {"grant": token, "arguments": same}
        ).status_code
        == 200
    )


def test_a_grant_is_redeemed_once_and_reported_once(people: None, api_as: Any, refund_agent: Any) -> None:
    action = _approved(api_as, refund_agent)
    token, operator, path = action["grant"]["token"], api_as("operator"), f"/api/v1/actions/{action['id']}"

    early = operator.post(f"{path}/report", {"grant": token, "arguments": CALL, "result": None})
    assert early.status_code == 409 and early.json()["error"] == "grant_not_redeemed"
    assert operator.post(f"{path}/grant/redeem", {"grant": token, "arguments": CALL}).status_code == 200
    again = operator.post(f"{path}/grant/redeem", {"grant": token, "arguments": CALL})
    assert again.status_code == 409 and again.json()["error"] == "grant_used"
    assert operator.post(f"{path}/report", {"grant": token, "arguments": CALL, "result": "ok"}).status_code == 200
    twice = operator.post(f"{path}/report", {"grant": token, "arguments": CALL, "result": "other"})
    assert twice.status_code == 409 and twice.json()["error"] == "already_reported"
    assert ActionRequest.objects.get(pk=action["id"]).result == "ok"
    assert _events(action["id"]) == [
        "grant.issued",
        "grant.report_refused",
        "grant.redeemed",
        "grant.redeem_refused",
        "grant.report_refused",
    ]


def test_an_altered_or_foreign_token_is_refused(people: None, api_as: Any, refund_agent: Any) -> None:
    action = _approved(api_as, refund_agent)
    token, operator = action["grant"]["token"], api_as("operator")
    altered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    refused = operator.post(f"/api/v1/actions/{action['id']}/grant/redeem", {"grant": altered, "arguments": CALL})
    assert refused.status_code == 409 and refused.json()["error"] == "grant_invalid"
    other = _submit(operator, {"customer": "Initech", "amount": 5})
    foreign = operator.post(f"/api/v1/actions/{other['id']}/grant/redeem", {"grant": token, "arguments": CALL})
    assert foreign.status_code == 409 and foreign.json()["error"] == "no_grant"  # still pending: no grant yet


def test_a_rejected_call_has_no_grant(people: None, api_as: Any, refund_agent: Any) -> None:
    _declare(agent=refund_agent)
    submitted = _submit(api_as("operator"))
    rejected = (
        api_as("reviewer")
        .post(f"/api/v1/actions/{submitted['id']}/decision", {"verdict": "reject", "comment": "wrong customer"})
        .json()
    )
    assert rejected["status"] == "rejected" and rejected["grant"] is None
    assert not Grant.objects.exists()


def test_an_auto_approved_call_answers_with_its_grant(people: None, api_as: Any, refund_agent: Any) -> None:
    _declare("auto", agent=refund_agent)
    submitted = _submit(api_as("operator"), confidence=0.99)
    assert submitted["status"] == "auto_approved" and submitted["grant"]["status"] == "issued"


def test_only_whoever_operates_the_agent_may_redeem(
    people: None, api_as: Any, refund_agent: Any, outsider: Any
) -> None:
    action = _approved(api_as, refund_agent)
    body = {"grant": action["grant"]["token"], "arguments": CALL}
    for who in ("reviewer", "reviewer2"):  # they may see it, but they do not act for the agent
        assert api_as(who).post(f"/api/v1/actions/{action['id']}/grant/redeem", body).status_code == 404
    stranger = ApiClient(api_token_issue(user=outsider, actor=None))
    assert stranger.post(f"/api/v1/actions/{action['id']}/grant/redeem", body).status_code == 404
    assert ActionRequest.objects.get(pk=action["id"]).status == ActionStatus.APPROVED


def test_a_grant_never_redeemed_expires_and_is_audited_as_unused(people: None, api_as: Any, refund_agent: Any) -> None:
    action = _approved(api_as, refund_agent)
    Grant.objects.filter(action_id=action["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    refused = api_as("operator").post(
        f"/api/v1/actions/{action['id']}/grant/redeem", {"grant": action["grant"]["token"], "arguments": CALL}
    )
    assert refused.status_code == 409 and refused.json()["error"] == "grant_expired"
    assert grants_sweep() == {"unused": 1, "in_doubt": 0}
    assert grants_sweep() == {"unused": 0, "in_doubt": 0}  # idempotent
    assert ActionRequest.objects.get(pk=action["id"]).status == ActionStatus.EXPIRED
    assert Grant.objects.get(action_id=action["id"]).status == GrantStatus.EXPIRED
    assert _events(action["id"])[-1] == "grant.unused"


def test_an_unreported_redeemed_grant_leaves_the_action_in_doubt_and_a_late_report_settles_it(
    people: None, api_as: Any, refund_agent: Any
) -> None:
    action = _approved(api_as, refund_agent)
    token, operator, path = action["grant"]["token"], api_as("operator"), f"/api/v1/actions/{action['id']}"
    operator.post(f"{path}/grant/redeem", {"grant": token, "arguments": CALL})
    Grant.objects.filter(action_id=action["id"]).update(report_due_at=timezone.now() - timedelta(seconds=1))
    assert grants_sweep() == {"unused": 0, "in_doubt": 1}
    assert ActionRequest.objects.get(pk=action["id"]).status == ActionStatus.IN_DOUBT

    late = operator.post(f"{path}/report", {"grant": token, "arguments": CALL, "result": "sent"})
    assert late.status_code == 200 and late.json()["status"] == "executed"
    assert AuditEvent.objects.get(target_id=str(action["id"]), event="action.executed").after["late"] is True


def test_a_report_after_a_person_settled_the_doubt_is_refused(people: None, api_as: Any, refund_agent: Any) -> None:
    action = _approved(api_as, refund_agent)
    token, operator, path = action["grant"]["token"], api_as("operator"), f"/api/v1/actions/{action['id']}"
    operator.post(f"{path}/grant/redeem", {"grant": token, "arguments": CALL})
    Grant.objects.filter(action_id=action["id"]).update(report_due_at=timezone.now() - timedelta(seconds=1))
    grants_sweep()
    execution.action_resolve_in_doubt(
        action=ActionRequest.objects.get(pk=action["id"]), actor=user("admin"), executed=False, comment="not in billing"
    )
    late = operator.post(f"{path}/report", {"grant": token, "arguments": CALL, "result": "sent"})
    assert late.status_code == 409 and late.json()["error"] == "already_resolved"
    assert ActionRequest.objects.get(pk=action["id"]).status == ActionStatus.FAILED


def test_a_reversible_caller_tool_is_undone_and_another_is_not(people: None, api_as: Any, refund_agent: Any) -> None:
    _declare("auto", reversible=True, agent=refund_agent)
    operator = api_as("operator")
    action = _submit(operator, confidence=0.99)
    token, path = action["grant"]["token"], f"/api/v1/actions/{action['id']}"
    operator.post(f"{path}/grant/redeem", {"grant": token, "arguments": CALL})
    operator.post(f"{path}/report", {"grant": token, "arguments": CALL, "result": "sent"})
    undone = api_as("reviewer").post(f"{path}/undo", {"comment": "sent twice"})
    assert undone.status_code == 200 and undone.json()["status"] == "compensated"

    UpstreamTool.objects.filter(name="send_invoice").update(spec={"magnitude_pointer": "/amount", "reversible": False})
    other = _submit(operator, {"customer": "Initech", "amount": 7}, confidence=0.99)
    token, path = other["grant"]["token"], f"/api/v1/actions/{other['id']}"
    operator.post(f"{path}/grant/redeem", {"grant": token, "arguments": {"customer": "Initech", "amount": 7}})
    operator.post(f"{path}/report", {"grant": token, "arguments": {"customer": "Initech", "amount": 7}, "result": 1})
    kept = api_as("reviewer").post(f"{path}/undo", {"comment": "no"})
    assert kept.status_code == 409 and kept.json()["error"] == "not_reversible"


def test_a_hosted_run_or_the_gateway_cannot_call_a_callers_tool(people: None, refund_agent: Any) -> None:
    _declare("auto", agent=refund_agent)
    outcome = routing.route_tool_call(
        agent=refund_agent, run=None, tool="send_invoice", arguments=CALL, confidence=1.0, rationale=""
    )
    assert outcome.refusal is not None and outcome.refusal.code == "caller_executes"
    assert not ActionRequest.objects.exists()


def test_only_admins_declare_a_callers_tool_and_it_starts_disabled(people: None, api_as: Any) -> None:
    body = {"slug": "send_invoice", "description": "Send one.", "input_schema": SCHEMA, "impact": "financial"}
    assert api_as("operator").post("/api/v1/tool-sources/caller", body).status_code == 403
    made = api_as("admin").post("/api/v1/tool-sources/caller", body)
    assert made.status_code == 201, made.content
    assert made.json()["kind"] == "caller" and made.json()["tools"][0]["state"] == "disabled"
    assert api_as("admin").post("/api/v1/tool-sources/caller", body).status_code == 409
    bad = {**body, "slug": "x", "input_schema": {"type": "object", "properties": {"a": {"type": "no-such-type"}}}}
    refused = api_as("admin").post("/api/v1/tool-sources/caller", bad)
    assert refused.status_code == 400 and "JSON Schema" in refused.json()["detail"]
    assert api_as("admin").post("/api/v1/tool-sources/caller", {**body, "slug": "a__b"}).status_code == 400


# --- the digest -------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), JSON, max_size=6))
def test_the_digest_depends_on_the_call_not_on_how_it_is_written(arguments: dict[str, Any]) -> None:
    shuffled = dict(reversed(list(arguments.items())))
    as_floats = json.loads(
        json.dumps(arguments), parse_int=lambda text: float(text) if abs(int(text)) < 2**53 else int(text)
    )
    digest = call_digest(agent="a", tool="t", arguments=arguments)
    assert digest == call_digest(agent="a", tool="t", arguments=shuffled)
    assert digest == call_digest(agent="a", tool="t", arguments=as_floats)
    assert digest != call_digest(agent="b", tool="t", arguments=arguments)
    assert digest != call_digest(agent="a", tool="t", arguments={**arguments, "\x00extra": 1})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    amount=st.integers(1, 10_000) | st.floats(0.01, 10_000, allow_nan=False), customer=st.text(min_size=1, max_size=30)
)
def test_no_other_arguments_redeem_a_grant(people: None, refund_agent: Any, amount: Any, customer: str) -> None:
    if not AgentTool.objects.filter(tool="send_invoice").exists():
        _declare("auto", agent=refund_agent)
    approved = routing.route_tool_call(
        agent=refund_agent,
        run=None,
        tool="send_invoice",
        arguments=CALL,
        confidence=1.0,
        rationale="",
        actor=user("operator"),
        takes_grant=True,
    ).action
    assert approved is not None
    approved.refresh_from_db()
    other = {"customer": customer, "amount": amount}
    if call_digest(agent="refund-triage", tool="send_invoice", arguments=other) == approved.grant.digest:
        return  # the same call
    with pytest.raises(Conflict) as refused:
        grants.grant_redeem(action=approved, actor=user("operator"), token=grant_token(approved.grant), arguments=other)
    assert refused.value.code == "arguments_mismatch"
    assert ActionRequest.objects.get(pk=approved.pk).status == ActionStatus.AUTO_APPROVED


# --- the race ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_agents_redeeming_one_grant_at_once_execute_it_once(demo_user: Any, refund_agent: Any) -> None:
    for name in ("admin", "operator", "reviewer"):
        demo_user(name)
    _declare(agent=refund_agent)
    action = routing.route_tool_call(
        agent=refund_agent,
        run=None,
        tool="send_invoice",
        arguments=CALL,
        confidence=0.5,
        rationale="",
        actor=user("operator"),
        takes_grant=True,
    ).action
    assert action is not None
    decisions.action_request_decide(action=action, actor=user("reviewer"), verdict="approve")
    token = grant_token(Grant.objects.get(action=action))
    barrier, outcomes = threading.Barrier(2), []

    def redeem() -> None:
        try:
            barrier.wait(timeout=10)
            grants.grant_redeem(
                action=ActionRequest.objects.get(pk=action.pk), actor=user("operator"), token=token, arguments=CALL
            )
            outcomes.append("redeemed")
        except Conflict as exc:
            outcomes.append(exc.code)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=redeem) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["grant_used", "redeemed"]
    assert AuditEvent.objects.filter(target_id=str(action.pk), event="grant.redeemed").count() == 1


def test_a_number_no_double_holds_cannot_be_granted_but_a_large_exact_one_can(
    people: None, api_as: Any, refund_agent: Any
) -> None:
    _declare("auto", agent=refund_agent)
    operator = api_as("operator")
    refused = operator.post(
        "/api/v1/agents/refund-triage/actions",
        {"tool": "send_invoice", "arguments": {"customer": "A", "amount": 2**53 + 1}, "confidence": 1.0},
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_arguments"
    assert not ActionRequest.objects.exists()

    # As an amount it is more than Countersign records: refused, not a 500.
    too_big = operator.post(
        "/api/v1/agents/refund-triage/actions",
        {"tool": "send_invoice", "arguments": {"customer": "A", "amount": 1e20}, "confidence": 1.0},
    )
    assert too_big.status_code == 400 and "10^12" in too_big.json()["detail"]

    # Not measured, it is bound: PostgreSQL stores 1e20 as the integer 100000000000000000000, the same call.
    UpstreamTool.objects.filter(name="send_invoice").update(spec={"magnitude_pointer": ""})
    action = _submit(operator, {"customer": "A", "amount": 1e20}, confidence=1.0)
    path = f"/api/v1/actions/{action['id']}"
    assert ActionRequest.objects.get(pk=action["id"]).arguments["amount"] == 10**20
    body = {"grant": action["grant"]["token"], "arguments": {"customer": "A", "amount": 1e20}}
    assert operator.post(f"{path}/grant/redeem", body).status_code == 200
    assert operator.post(f"{path}/report", {**body, "result": None}).status_code == 200


def test_a_call_that_says_who_executes_it_must_match_the_tool(people: None, api_as: Any, refund_agent: Any) -> None:
    _declare(agent=refund_agent)
    operator = api_as("operator")
    mine = {"tool": "send_invoice", "arguments": CALL, "confidence": 0.9}
    refund = {"tool": "issue_refund", "arguments": {"order_id": "ORD-1002", "amount": 20, "reason": "x"}}
    # The agent means to run Countersign's own tool itself: refused before anything is written, so it cannot run twice.
    wrong = operator.post(
        "/api/v1/agents/refund-triage/actions", {**refund, "confidence": 0.9, "executed_by": "caller"}
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "execution_mismatch"
    other = operator.post("/api/v1/agents/refund-triage/actions", {**mine, "executed_by": "countersign"})
    assert other.status_code == 400 and other.json()["error"] == "execution_mismatch"
    assert not ActionRequest.objects.exists()
    right = operator.post("/api/v1/agents/refund-triage/actions", {**mine, "executed_by": "caller"})
    assert right.status_code == 201 and right.json()["caller_executes"] is True
