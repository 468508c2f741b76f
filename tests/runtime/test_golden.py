"""The golden set (runs a person confirmed), its replay against a proposed prompt, and the regression gate."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.configuration import active_prompt
from agents.models import (
    PromptEvaluation,
    PromptStatus,
    PromptVersion,
    RunOutcome,
    RunStatus,
    Step,
    StepKind,
)
from agents.services import run_start
from approvals import prompt_release
from approvals.decisions import action_request_decide
from approvals.four_eyes import prompt_propose
from approvals.models import ActionRequest, ActionStatus, Decision
from approvals.prompt_release import GOLDEN_SET_MIN, PromptStanding, prompt_standing
from audit.models import AuditEvent
from core.errors import Conflict
from runtime import golden
from runtime.golden import canonical_call, golden_set, prompt_evaluate
from tests.conftest import refund_input, user
from tests.factories import ActionFactory, AgentFactory, RunFactory, UserFactory
from tests.runtime.golden_runs import (
    AMOUNT,
    ASKS,
    CRASHES,
    FAILS,
    HALVES,
    ORDERS,
    confirmed_run,
    golden_runs,
    use_prompt_sensitive,
)

pytestmark = pytest.mark.django_db

SAME = "You triage refund requests. Be kind, and propose issue_refund with the order and amount asked for."


@pytest.fixture
def agent(refund_agent, orders, demo_user):
    for name in ("admin", "admin2", "reviewer"):
        demo_user(name)
    use_prompt_sensitive(refund_agent)
    refund_agent.refresh_from_db()
    return refund_agent


# ---- the golden set ----------------------------------------------------------------------------------------------


def test_the_golden_set_is_the_finished_runs_a_person_confirmed_newest_first(agent, commit):
    approved = confirmed_run(agent, commit, order=ORDERS[0])
    edited = confirmed_run(agent, commit, order=ORDERS[1], edit={"amount": 55})
    with commit():
        auto = run_start(agent=agent, input=refund_input(amount=20, order=ORDERS[2]), actor=None)
    with commit():
        rejected = run_start(agent=agent, input=refund_input(amount=AMOUNT, order=ORDERS[3]), actor=None)
    with commit():
        action_request_decide(
            action=ActionRequest.objects.get(run=rejected), actor=user("reviewer"), verdict="reject", comment="no"
        )
    with commit():
        waiting = run_start(agent=agent, input=refund_input(amount=AMOUNT, order=ORDERS[4]), actor=None)
    for run in (auto, rejected, waiting):
        run.refresh_from_db()
    # Done but nobody looked; a person said no; a person has not decided yet.
    assert (auto.outcome, rejected.outcome, waiting.status) == (RunOutcome.DONE, RunOutcome.REJECTED, "waiting")

    cases = golden_set(agent.pk)

    assert [c.run_id for c in cases] == [edited.pk, approved.pk]
    edited_case, approved_case = cases
    # The edited arguments are the confirmed call, not what the agent proposed.
    assert edited_case.tool == "issue_refund" and Decimal(edited_case.arguments["amount"]) == 55
    assert Decimal(ActionRequest.objects.get(run=edited).proposed_arguments["amount"]) == AMOUNT
    assert approved_case.arguments == ActionRequest.objects.get(run=approved).arguments
    assert edited_case.input == refund_input(amount=AMOUNT, order=ORDERS[1])
    assert edited_case.history == []  # the reviewed call was the run's first
    assert prompt_release.golden_set_size(agent.pk) == 2


def _confirmed_row(agent, reviewer, *, results=(), verdict="approve", outcome=RunOutcome.DONE):
    """A confirmed run built as rows (fixtures), with tool results before its reviewed call."""
    run = RunFactory(agent=agent, status=RunStatus.SUCCEEDED, outcome=outcome, input={"n": 1})
    seq = 0
    earlier = []
    for result in results:
        seq += 1
        payload = dict(result)
        if payload.get("outcome") == "executed":
            payload["action_id"] = ActionFactory(run=run, status=ActionStatus.EXECUTED, route="auto").pk
        earlier.append(payload)
        Step.objects.create(run=run, seq=seq, kind=StepKind.TOOL_RESULT, payload=payload)
    action = ActionFactory(run=run, status=ActionStatus.EXECUTED, arguments={"order_id": "ORD-1001", "amount": 30})
    Decision.objects.create(
        action=action, reviewer=reviewer, verdict=verdict, arguments_before={}, arguments_after=action.arguments
    )
    Step.objects.create(
        run=run, seq=seq + 1, kind=StepKind.TOOL_RESULT, payload={"action_id": action.pk, "outcome": "executed"}
    )
    return run, action, earlier


def test_a_case_carries_what_the_run_had_been_told_before_its_reviewed_call():
    agent = AgentFactory()
    reviewer = UserFactory()
    refused = {"tool": "issue_refund", "outcome": "refused", "error": "bad order id"}
    run, action, earlier = _confirmed_row(agent, reviewer, results=[refused, {"outcome": "executed"}])
    # A later reviewed call of the same run is not the case: the first reviewed one is.
    later = ActionFactory(run=run, status=ActionStatus.EXECUTED, arguments={"order_id": "ORD-1002", "amount": 1})
    Decision.objects.create(action=later, reviewer=reviewer, verdict="approve", arguments_before={}, arguments_after={})

    (case,) = golden_set(agent.pk)

    assert (case.run_id, case.action_id, case.arguments) == (run.pk, action.pk, action.arguments)
    assert case.history == earlier and len(case.history) == 2


def test_only_approve_and_edit_confirm_a_run_and_only_finished_runs_that_acted_count():
    agent = AgentFactory()
    reviewer = UserFactory()
    confirmed, _, _ = _confirmed_row(agent, reviewer, verdict="edit", outcome=RunOutcome.DONE_WITH_EDITS)
    _confirmed_row(agent, reviewer, verdict="reject")
    _confirmed_row(agent, reviewer, outcome=RunOutcome.FAILED)
    _confirmed_row(AgentFactory(), reviewer)  # another agent's
    assert [c.run_id for c in golden_set(agent.pk)] == [confirmed.pk]


def test_the_golden_set_is_capped_at_the_newest(monkeypatch):
    agent = AgentFactory()
    reviewer = UserFactory()
    runs = [_confirmed_row(agent, reviewer)[0] for _ in range(4)]
    monkeypatch.setattr(golden, "GOLDEN_SET_MAX", 3)
    monkeypatch.setattr(prompt_release, "GOLDEN_SET_MAX", 3)
    assert [c.run_id for c in golden_set(agent.pk)] == [r.pk for r in reversed(runs)][:3]
    assert prompt_release.golden_set_size(agent.pk) == 3


@pytest.mark.parametrize("size", [GOLDEN_SET_MIN, 3 * GOLDEN_SET_MIN])
def test_building_the_golden_set_takes_three_queries_however_many_runs(size, django_assert_num_queries):
    agent = AgentFactory()
    reviewer = UserFactory()
    for _ in range(size):
        _confirmed_row(agent, reviewer, results=[{"tool": "issue_refund", "outcome": "refused"}])
    with django_assert_num_queries(3):
        cases = golden_set(agent.pk)
    assert len(cases) == size and all(len(c.history) == 1 for c in cases)


# ---- comparing calls -----------------------------------------------------------------------------------------------

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(99999), places=2)


@settings(max_examples=60, deadline=None)
@given(amount=amounts, reason=st.text(min_size=1, max_size=40))
def test_a_call_is_the_same_call_whatever_its_key_order_and_number_spelling(amount, reason):
    spellings = [str(amount), float(amount), amount]
    if amount == amount.to_integral_value():
        spellings.append(int(amount))
    calls = {
        canonical_call("issue_refund", {"reason": reason, "amount": value, "order_id": "ORD-1001"})
        for value in spellings
    } | {canonical_call("issue_refund", {"order_id": "ORD-1001", "amount": amount, "reason": reason})}
    assert len(calls) == 1
    other = canonical_call("issue_refund", {"order_id": "ORD-1001", "amount": amount + 1, "reason": reason})
    assert other not in calls
    assert canonical_call("delete_contacts", {"order_id": "ORD-1001", "amount": amount, "reason": reason}) not in calls


def test_arguments_the_tool_refuses_are_compared_as_sent():
    assert canonical_call("issue_refund", {"b": 1, "a": [2]}) == canonical_call("issue_refund", {"a": [2], "b": 1})
    assert canonical_call("issue_refund", "not json") != canonical_call("issue_refund", {"a": [2], "b": 1})
    assert canonical_call("no_such_tool", {"x": 1}) == '{"arguments":{"x":1},"tool":"no_such_tool"}'


# ---- the replay -----------------------------------------------------------------------------------------------------


def test_proposing_a_prompt_replays_the_golden_set_against_it_and_the_active_version(agent, commit):
    runs = golden_runs(agent, commit)
    with commit():
        version, _ = prompt_propose(agent=agent, actor=user("admin"), text=HALVES)

    evaluation = PromptEvaluation.objects.get(version=version)
    # Halving agrees only where the reviewer halved the amount; the active prompt everywhere else.
    assert (evaluation.cases, evaluation.agreed, evaluation.baseline_agreed) == (5, 1, 4)
    assert evaluation.baseline == active_prompt(agent) and evaluation.created_by is None
    by_run = {d["run_id"]: d for d in evaluation.details}
    assert list(by_run) == [r.pk for r in reversed(runs)]
    edited = by_run[runs[0].pk]
    assert (edited["agreed"], edited["baseline_agreed"]) == (True, False)
    assert edited["expected"]["tool"] == "issue_refund" and Decimal(edited["expected"]["arguments"]["amount"]) == 60
    assert edited["candidate"]["arguments"]["amount"] == 60.0
    assert edited["baseline"]["arguments"]["amount"] == AMOUNT
    approved = by_run[runs[1].pk]
    assert (approved["agreed"], approved["baseline_agreed"]) == (False, True)
    assert approved["action_id"] == ActionRequest.objects.get(run=runs[1]).pk

    event = AuditEvent.objects.get(event="prompt.evaluated")
    assert event.actor_label == "golden set"
    assert event.after == {
        "evaluation": evaluation.pk,
        "version": version.number,
        "cases": 5,
        "agreed": 1,
        "baseline": 1,
        "baseline_agreed": 4,
        "errors": 0,
    }


def test_the_replay_asks_the_provider_with_each_versions_text(agent, commit):
    golden_runs(agent, commit)
    provider = use_prompt_sensitive(agent)
    version, _ = prompt_propose(agent=agent, actor=user("admin"), text=SAME)
    prompt_evaluate(version=version, actor=user("admin2"))
    v1 = active_prompt(agent)
    assert provider.prompts == [SAME, v1.text] * 5
    evaluation = PromptEvaluation.objects.get(version=version)
    assert (evaluation.agreed, evaluation.baseline_agreed, evaluation.created_by) == (4, 4, user("admin2"))
    assert AuditEvent.objects.get(event="prompt.evaluated").actor_label == "admin2"


@pytest.mark.parametrize(
    ("text", "error"),
    [(FAILS, "rate_limited"), (CRASHES, "provider_crashed")],
)
def test_a_provider_failure_is_a_disagreement_recorded_with_its_reason(agent, commit, text, error):
    golden_runs(agent, commit)
    version, _ = prompt_propose(agent=agent, actor=user("admin"), text=text)

    evaluation = prompt_evaluate(version=version, actor=user("admin2"))

    assert evaluation is not None and (evaluation.agreed, evaluation.baseline_agreed) == (0, 4)
    assert {d["candidate"]["error"] for d in evaluation.details} == {error}
    assert all(d["candidate"]["message"] for d in evaluation.details)
    assert AuditEvent.objects.get(event="prompt.evaluated").after["errors"] == 5


def test_an_answer_instead_of_a_call_disagrees(agent, commit):
    golden_runs(agent, commit)
    version, _ = prompt_propose(agent=agent, actor=user("admin"), text=ASKS)
    evaluation = prompt_evaluate(version=version, actor=user("admin2"))
    assert evaluation is not None and evaluation.agreed == 0
    assert {d["candidate"]["answer"] for d in evaluation.details} == {"Please send the receipt."}


def test_an_unreadable_api_key_fails_every_case_not_the_evaluation(agent, commit, monkeypatch):
    golden_runs(agent, commit)
    monkeypatch.delenv("GOLDEN_TEST_KEY", raising=False)
    type(agent).objects.filter(pk=agent.pk).update(api_key_ref="env:GOLDEN_TEST_KEY")
    version, _ = prompt_propose(agent=agent, actor=user("admin"), text=SAME)
    evaluation = prompt_evaluate(version=version, actor=user("admin2"))
    assert evaluation is not None and (evaluation.agreed, evaluation.baseline_agreed) == (0, 0)
    assert {d["candidate"]["error"] for d in evaluation.details} == {"provider_configuration"}
    assert {d["baseline"]["error"] for d in evaluation.details} == {"provider_configuration"}


def test_without_enough_confirmed_runs_nothing_is_replayed(agent, commit):
    golden_runs(agent, commit, count=GOLDEN_SET_MIN - 1)
    with commit():
        version, proposal = prompt_propose(agent=agent, actor=user("admin"), text=HALVES)
    assert not PromptEvaluation.objects.exists()
    assert not AuditEvent.objects.filter(event="prompt.evaluated").exists()
    assert prompt_standing(version).needed == 1
    # No golden set: nothing to regress against, so nothing blocks the approval.
    with commit():
        action_request_decide(action=proposal, actor=user("admin2"), verdict="approve")
    assert active_prompt(agent) == version


def test_only_a_proposed_version_is_evaluated(agent, commit):
    golden_runs(agent, commit)
    with pytest.raises(Conflict):
        prompt_evaluate(version=active_prompt(agent), actor=user("admin"))
    assert not PromptEvaluation.objects.exists()


# ---- the gate -------------------------------------------------------------------------------------------------------


def test_a_regression_beyond_the_margin_blocks_approval_until_overridden_in_writing(agent, commit):
    golden_runs(agent, commit)
    with commit():
        version, proposal = prompt_propose(agent=agent, actor=user("admin"), text=HALVES)
    decisions_before = AuditEvent.objects.filter(event="action.decided").count()

    with pytest.raises(Conflict) as refused:
        action_request_decide(action=proposal, actor=user("admin2"), verdict="approve")
    assert refused.value.code == "prompt_regression"
    assert "1/5 (20 %)" in refused.value.message and "4/5 (80 %)" in refused.value.message
    with pytest.raises(Conflict):
        action_request_decide(action=proposal, actor=user("admin2"), verdict="approve", override_reason="   ")
    proposal.refresh_from_db()
    assert proposal.status == ActionStatus.PENDING and active_prompt(agent).number == 1
    assert AuditEvent.objects.filter(event="action.decided").count() == decisions_before
    assert not AuditEvent.objects.filter(event="prompt.regression_overridden").exists()

    with commit():
        action_request_decide(
            action=proposal, actor=user("admin2"), verdict="approve", override_reason="the edits were the right call"
        )
    assert active_prompt(agent) == version
    override = AuditEvent.objects.get(event="prompt.regression_overridden")
    evaluation = PromptEvaluation.objects.get(version=version)
    assert override.actor_label == "admin2"
    assert override.after == {
        "version": version.number,
        "evaluation": evaluation.pk,
        "cases": 5,
        "agreed": 1,
        "baseline": 1,
        "baseline_agreed": 4,
        "margin": 0.05,
        "action": proposal.pk,
        "reason": "the edits were the right call",
    }


def test_a_rejection_needs_no_evaluation_and_no_override(agent, commit):
    golden_runs(agent, commit)
    version, proposal = prompt_propose(agent=agent, actor=user("admin"), text=HALVES)
    with commit():
        action_request_decide(action=proposal, actor=user("admin2"), verdict="reject", comment="no")
    version.refresh_from_db()
    assert version.status == PromptStatus.REJECTED


def test_with_a_golden_set_a_version_not_evaluated_yet_must_be_evaluated_first(agent, commit):
    golden_runs(agent, commit)
    version, proposal = prompt_propose(agent=agent, actor=user("admin"), text=SAME)  # no commit: no evaluation
    with pytest.raises(Conflict, match="evaluate first") as refused:
        action_request_decide(action=proposal, actor=user("admin2"), verdict="approve", override_reason="trust me")
    assert refused.value.code == "evaluate_first"
    prompt_evaluate(version=version, actor=user("admin2"))
    with commit():
        action_request_decide(action=proposal, actor=user("admin2"), verdict="approve")
    assert active_prompt(agent) == version
    assert not AuditEvent.objects.filter(event="prompt.regression_overridden").exists()


def test_an_evaluation_against_a_version_no_longer_active_is_stale(agent, commit):
    golden_runs(agent, commit)
    with commit():
        v2, first = prompt_propose(agent=agent, actor=user("admin"), text=SAME)
    with commit():
        v3, second = prompt_propose(agent=agent, actor=user("admin"), text=SAME + " Thank them.")
    with commit():
        action_request_decide(action=first, actor=user("admin2"), verdict="approve")
    assert active_prompt(agent) == v2
    with pytest.raises(Conflict, match="evaluate first: v3 was compared with v1, and v2 is active now"):
        action_request_decide(action=second, actor=user("admin2"), verdict="approve")
    prompt_evaluate(version=v3, actor=user("admin2"))
    with commit():
        action_request_decide(action=second, actor=user("admin2"), verdict="approve")
    assert active_prompt(agent) == v3


def test_a_wider_margin_lets_the_same_regression_through(agent, commit):
    golden_runs(agent, commit)
    type(agent).objects.filter(pk=agent.pk).update(prompt_regression_margin=0.6)
    with commit():
        version, proposal = prompt_propose(agent=agent, actor=user("admin"), text=HALVES)
    with commit():
        action_request_decide(action=proposal, actor=user("admin2"), verdict="approve")  # 60 points: exactly the margin
    assert active_prompt(agent) == version


def _standing(*, cases, agreed, baseline_agreed, margin):
    agent = AgentFactory.build(pk=1)
    version = PromptVersion(pk=2, agent=agent, number=2, text="x", status=PromptStatus.PROPOSED)
    active = PromptVersion(pk=1, agent=agent, number=1, text="y", status=PromptStatus.ACTIVE)
    evaluation = PromptEvaluation(
        version=version, baseline=active, cases=cases, agreed=agreed, baseline_agreed=baseline_agreed
    )
    return PromptStanding(version=version, active=active, margin=margin, golden_cases=cases, evaluation=evaluation)


@settings(max_examples=300, deadline=None)
@given(
    cases=st.integers(GOLDEN_SET_MIN, 50),
    data=st.data(),
    margin_points=st.integers(0, 100),
)
def test_a_version_is_blocked_exactly_when_it_falls_more_than_the_margin_below(cases, data, margin_points):
    agreed = data.draw(st.integers(0, cases))
    baseline_agreed = data.draw(st.integers(0, cases))
    standing = _standing(cases=cases, agreed=agreed, baseline_agreed=baseline_agreed, margin=margin_points / 100)
    # In whole numbers: (baseline - agreed) / cases > points / 100.
    expected = (baseline_agreed - agreed) * 100 > margin_points * cases
    assert standing.regresses is expected
    refusal = standing.refusal()
    assert (refusal is not None and refusal.code == "prompt_regression") is expected
