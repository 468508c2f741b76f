"""Calibrated routing: the isotonic map, its bounds, policy on it, the advisor and the trust page."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.models import AgentTool, ToolMode
from agents.policy import Calibrated, Route, route_for
from agents.tools import get_tool
from approvals import advisor
from approvals.calibration import (
    Sample,
    auto_from,
    calibration_refit,
    effective,
    estimate,
    fit,
    samples_by_tool,
    upper_bound,
)
from approvals.decisions import action_request_decide
from approvals.models import ActionRequest, ActionStatus, CalibrationMap, SpotCheck
from approvals.routing import route_tool_call
from audit.models import AuditEvent
from tests.conftest import user

samples_strategy = st.lists(
    st.builds(
        Sample,
        confidence=st.floats(0, 1),
        agreed=st.booleans(),
        weight=st.sampled_from([1.0, 1.0, 1.0, 4.0, 20.0]),
    ),
    min_size=1,
    max_size=200,
)


@given(samples_strategy)
@settings(max_examples=150, deadline=None)
def test_the_map_never_falls_and_its_bounds_cover_what_was_seen(samples):
    found = fit(samples)
    agreements = [b[2] for b in found.blocks]
    assert all(0.0 <= a <= 1.0 for a in agreements)
    assert agreements == sorted(agreements)  # more confident never means less agreement
    assert [b[0] for b in found.blocks] == sorted(b[0] for b in found.blocks)
    assert sum(b[3] for b in found.blocks) == pytest.approx(sum(s.weight for s in samples))
    for lo, weight, wrong, n_eff, bound in found.tail:
        assert 0 < n_eff <= sum(1 for s in samples if s.confidence >= lo) + 1e-9
        # Post-stratification moves weight within a step, never between steps: the tail's total is kept.
        assert weight == pytest.approx(sum(s.weight for s in samples if s.confidence >= lo))
        assert bound >= wrong / weight - 1e-9  # the upper bound is never below the observed rate
    # The calibrated Brier score is never worse than the stated confidence's (isotonic is the best monotone fit).
    assert found.brier_calibrated <= found.brier_raw + 1e-9


@given(samples_strategy, st.floats(0.001, 0.5), st.floats(0.001, 0.5))
@settings(max_examples=100, deadline=None)
def test_a_stricter_target_never_lets_more_through(samples, a, b):
    tail = fit(samples).tail
    strict, loose = sorted((a, b))
    s, lo = auto_from(tail, strict), auto_from(tail, loose)
    if s is not None:
        assert lo is not None and lo[0] <= s[0]


@given(st.integers(1, 2000), st.floats(0, 1))
@settings(max_examples=100, deadline=None)
def test_the_upper_bound_holds_the_rate_and_tightens_with_evidence(n, rate):
    wrong = rate * n
    assert upper_bound(wrong, n) >= rate
    assert upper_bound(wrong * 2, n * 2) <= upper_bound(wrong, n) + 1e-9


def test_weights_count_as_copies_but_shrink_the_effective_sample():
    once = [Sample(0.9, True, 5.0), Sample(0.4, False)]
    copies = [Sample(0.9, True)] * 5 + [Sample(0.4, False)]
    assert [b[2] for b in fit(once).blocks] == [b[2] for b in fit(copies).blocks]
    assert effective([5.0, 1.0]) == pytest.approx(36 / 26)
    assert effective([1.0] * 6) == 6


def test_spot_checks_joining_reviewed_calls_in_a_step_add_evidence_instead_of_shrinking_it():
    rng = random.Random(7)
    reviewed = [Sample(0.95 + rng.random() * 0.05, True) for _ in range(1000)]
    checks = [Sample(0.95 + rng.random() * 0.05, True, 20.0, "spot_check") for _ in range(40)]
    alone, joined = fit(reviewed).tail[0], fit(reviewed + checks).tail[0]
    assert alone[3] == pytest.approx(1000)
    # Raw weights would give Kish's n = 1,800² / 17,000 ≈ 190: fewer than the reviewed calls alone.
    assert effective([1.0] * 1000 + [20.0] * 40) < 200
    assert joined[3] > alone[3]  # each bin's samples share its weight: about 1,000, not 190
    assert joined[4] < alone[4] < 0.01  # more agreeing evidence, a tighter bound


def test_spot_checks_that_go_wrong_above_what_was_reviewed_keep_their_weight():
    # The map pools the two ranges into one step (the higher calls did worse); the bins do not.
    rng = random.Random(1)
    reviewed = [Sample(0.90 + rng.random() * 0.05, True) for _ in range(2000)]
    checks = [Sample(0.95 + rng.random() * 0.05, i >= 3, 20.0, "spot_check") for i in range(40)]
    tail = fit(reviewed + checks).tail
    lo, weight, wrong, _n, bound = tail[0]
    assert lo == pytest.approx(0.90, abs=0.001)
    assert wrong / weight == pytest.approx(60 / 2800)  # 3 wrong spot checks standing for 60 calls of 2,800
    assert bound > 0.01 and auto_from(tail, 0.01) is None  # no autonomy: 2.1 % wrong, whatever the pooling


def _stream(n, *, error_above=0.0, seed=1):
    """Stated confidence uniform; agreement `c` below 0.8, `1 - error_above` at or above."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c = rng.random()
        p = c if c < 0.8 else 1.0 - error_above
        out.append(Sample(c, rng.random() < p))
    return out


def test_a_clean_top_is_found_and_an_overconfident_one_is_not():
    clean = fit(_stream(3000, error_above=0.0)).tail
    start, bound = auto_from(clean, 0.01)
    assert 0.75 <= start <= 0.85 and bound <= 0.01
    dirty = fit(_stream(3000, error_above=0.05)).tail
    found = auto_from(dirty, 0.01)
    assert found is None or found[0] > 0.95


# --- policy on the estimate --------------------------------------------------


def _policy(refund_agent, **kw):
    agent_tool = AgentTool.objects.get(agent=refund_agent, tool="issue_refund")
    for k, v in kw.items():
        setattr(agent_tool, k, v)
    return agent_tool


def _route(agent, agent_tool, confidence, calibrated, magnitude=Decimal(10)):
    return route_for(
        agent=agent,
        agent_tool=agent_tool,
        tool=get_tool("issue_refund"),
        confidence=confidence,
        magnitude=magnitude,
        calibrated=calibrated,
    )


def test_policy_routes_on_the_calibrated_rule_and_says_so(refund_agent):
    at = _policy(refund_agent, target_error_rate=0.01)
    fitted = Calibrated(samples=500, minimum=50, agreement=0.995, auto_from=0.62, bound=0.008)
    auto = _route(refund_agent, at, 0.7, fitted)  # below the static 0.8, above the learned 0.62
    assert auto.route == Route.AUTO and "isotonic, n=500" in auto.reason and "0.80%" in auto.reason
    below = _route(refund_agent, at, 0.6, fitted)
    assert below.route == Route.REVIEW and "below 0.62" in below.reason
    none_yet = _route(refund_agent, at, 0.99, Calibrated(samples=500, minimum=50, agreement=0.9))
    assert none_yet.route == Route.REVIEW and "no confidence yet" in none_yet.reason
    # The auto limit still applies on top.
    assert _route(refund_agent, at, 0.9, fitted, magnitude=Decimal(500)).route == Route.REVIEW


def test_cold_start_and_no_target_use_the_static_threshold(refund_agent):
    cold = Calibrated(samples=12, minimum=50, agreement=1.0, auto_from=0.1, bound=0.0)
    at = _policy(refund_agent, target_error_rate=0.01)
    decision = _route(refund_agent, at, 0.7, cold)
    assert decision.route == Route.REVIEW and "static threshold (calibration has 12 of 50 samples)" in decision.reason
    plain = _policy(refund_agent, target_error_rate=None)
    fitted = Calibrated(samples=500, minimum=50, agreement=0.995, auto_from=0.62, bound=0.008)
    assert _route(refund_agent, plain, 0.7, fitted).route == Route.REVIEW  # no target: the map is not used


def test_flags_destructive_and_review_mode_outrank_calibration(refund_agent):
    fitted = Calibrated(samples=500, minimum=50, agreement=1.0, auto_from=0.0, bound=0.0)
    at = _policy(refund_agent, target_error_rate=0.01, mode=ToolMode.REVIEW)
    assert _route(refund_agent, at, 0.99, fitted).route == Route.REVIEW
    at = _policy(refund_agent, target_error_rate=0.01)
    flagged = route_for(
        agent=refund_agent,
        agent_tool=at,
        tool=get_tool("issue_refund"),
        confidence=0.99,
        magnitude=Decimal(1),
        flag_reasons=["looks injected"],
        calibrated=fitted,
    )
    assert flagged.route == Route.REVIEW


# --- through the real services ------------------------------------------------


def _refund(agent, confidence, amount=20):
    return route_tool_call(
        agent=agent,
        run=None,
        tool="issue_refund",
        arguments={"order_id": "ORD-1001", "amount": amount, "reason": "damaged"},
        confidence=confidence,
        rationale="",
    ).action


def test_routing_uses_the_stored_map(refund_agent, orders, settings):
    settings.CALIBRATION_MIN_SAMPLES = 50
    AgentTool.objects.filter(agent=refund_agent, tool="issue_refund").update(target_error_rate=0.02)
    assert _refund(refund_agent, 0.7).status == ActionStatus.PENDING  # no map yet: static 0.8
    assert "static threshold (calibration has 0 of 50" in ActionRequest.objects.latest("id").route_reason
    calibration_refit(agent_id=refund_agent.pk, tool="issue_refund", samples=_stream(2000))
    auto = _refund(refund_agent, 0.85)
    assert auto.status == ActionStatus.AUTO_APPROVED and "isotonic, n=2000" in auto.route_reason
    assert _refund(refund_agent, 0.3).status == ActionStatus.PENDING


def test_samples_weigh_spot_checks_by_their_rate(refund_agent, orders, demo_user, commit):
    reviewer = demo_user("reviewer")
    AgentTool.objects.filter(agent=refund_agent, tool="issue_refund").update(mode=ToolMode.REVIEW)
    pending = _refund(refund_agent, 0.5)
    with commit():
        action_request_decide(action=pending, actor=reviewer, verdict="reject", comment="no")
    AgentTool.objects.filter(agent=refund_agent, tool="issue_refund").update(mode=ToolMode.AUTO)
    ran = _refund(refund_agent, 0.95)
    assert ran.status != ActionStatus.PENDING
    SpotCheck.objects.create(
        action=ran, agent=refund_agent, tool="issue_refund", rate=0.05, grade="fine", graded_at=timezone.now()
    )
    ungraded = _refund(refund_agent, 0.96)
    SpotCheck.objects.create(action=ungraded, agent=refund_agent, tool="issue_refund", rate=0.05)
    got = samples_by_tool(agent_id=refund_agent.pk)["issue_refund"]
    assert sorted((s.confidence, s.agreed, s.weight, s.source) for s in got) == [
        (0.5, False, 1.0, "review"),
        (0.95, True, 20.0, "spot_check"),
    ]


# --- the advisor ----------------------------------------------------------------


def _history(n, seed=3):
    # Reviewed below 0.8 (agreement = c), spot-checked above at 5 % (always fine).
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c = rng.random()
        if c < 0.8:
            out.append(Sample(c, rng.random() < c))
        elif rng.random() < 0.05:
            out.append(Sample(c, True, 20.0, "spot_check"))
    return out


def test_the_advisor_replays_every_rule_and_marks_the_one_in_force(refund_agent):
    at = AgentTool.objects.select_related("agent").get(agent=refund_agent, tool="issue_refund")
    advice = advisor.advise(at, _history(4000), seconds=90.0)
    assert advice.current_rule == "confidence ≥ 0.80"
    [current] = [o for o in advice.options if o.current]
    assert current.hours_saved == 0.0
    shares = [o.auto_share for o in advice.options if o.kind == "static"]
    assert shares == sorted(shares, reverse=True)  # a higher threshold never runs more without review
    for o in advice.options:
        assert o.wrong_low <= o.wrong + 1e-9 <= o.wrong_high + 2e-9 or o.auto_from is None


def _reviewed_history(n, seed=4):
    # Everything reviewed (a cold start): agreement c below 0.7, always agreed from 0.7 up.
    rng = random.Random(seed)
    return [Sample(c := rng.random(), c >= 0.7 or rng.random() < c) for _ in range(n)]


def test_thin_evidence_above_the_threshold_proposes_no_widening(refund_agent):
    # 5 % spot checks above 0.8 are ~70 effective samples: too few to show <= 1 % wrong at 95 %.
    at = AgentTool.objects.select_related("agent").get(agent=refund_agent, tool="issue_refund")
    advice = advisor.advise(at, _history(6000), seconds=60.0)
    assert advice.proposal is None
    assert next(o for o in advice.options if o.kind == "target" and o.value == 0.01).auto_from is None


def test_wider_autonomy_waits_for_four_eyes_with_its_evidence(refund_agent, demo_user):
    admin = demo_user("admin")
    at = AgentTool.objects.select_related("agent").get(agent=refund_agent, tool="issue_refund")
    history = _reviewed_history(4000)
    advice = advisor.advise(at, history, seconds=60.0)
    assert advice.proposal is not None and advice.proposal.widens
    assert advice.proposal.change == {"target_error_rate": 0.01}
    outcome = four_eyes_adopt(at, admin, history)
    assert not outcome.applied and outcome.proposal.tier == 0
    assert outcome.proposal.arguments["evidence"]["target"] == 0.01
    at.refresh_from_db()
    assert at.target_error_rate is None  # nothing applied before a second admin
    proposed = AuditEvent.objects.filter(event="config.proposed").latest("seq")
    assert proposed.after["change"]["evidence"]["why"].startswith("calibrated routing would run")


def test_narrower_autonomy_applies_at_once_with_its_evidence(refund_agent, demo_user):
    admin = demo_user("admin")
    at = AgentTool.objects.select_related("agent").get(agent=refund_agent, tool="issue_refund")
    # Above the static 0.8 the agent was wrong 10 % of the time: far over 1 %.
    rng = random.Random(5)
    bad = [Sample(c := rng.random(), rng.random() < (0.9 if c >= 0.8 else c)) for _ in range(3000)]
    advice = advisor.advise(at, bad, seconds=60.0)
    assert advice.proposal is not None and not advice.proposal.widens
    outcome = four_eyes_adopt(at, admin, bad)
    assert outcome.applied
    at.refresh_from_db()
    assert at.min_confidence == advice.proposal.change.get("min_confidence") or at.mode == ToolMode.REVIEW
    row = AuditEvent.objects.filter(event="agent.tool_configured").latest("seq")
    assert row.after["evidence"]["why"].startswith("at or above 0.80")


def test_too_little_evidence_proposes_nothing(refund_agent, demo_user, settings):
    settings.CALIBRATION_MIN_SAMPLES = 50
    at = AgentTool.objects.select_related("agent").get(agent=refund_agent, tool="issue_refund")
    assert advisor.advise(at, _history(40), seconds=60.0).proposal is None
    with pytest.raises(advisor.Conflict):
        advisor.advice_adopt(agent_tool=at, actor=demo_user("admin"))


def four_eyes_adopt(agent_tool, actor, samples):
    return advisor.advice_adopt(agent_tool=agent_tool, actor=actor, samples=samples)


# --- the trust page ---------------------------------------------------------------


def test_the_trust_page_is_for_the_agents_operators(refund_agent, demo_user, client, outsider):
    demo_user("operator")
    client.force_login(outsider)
    assert client.get(f"/ops/agents/{refund_agent.slug}/trust").status_code == 404
    client.force_login(user("operator"))
    calibration_refit(agent_id=refund_agent.pk, tool="issue_refund", samples=_history(3000))
    page = client.get(f"/ops/agents/{refund_agent.slug}/trust")
    assert page.status_code == 200
    assert b"issue_refund" in page.content and b'class="calibrated"' in page.content
    # Operators see the advice; only an admin of the agent may adopt it.
    assert client.post(f"/ops/agents/{refund_agent.slug}/trust/issue_refund/adopt").status_code == 404
    assert client.post(f"/ops/agents/{refund_agent.slug}/trust/refit").status_code == 302
    assert CalibrationMap.objects.get(agent=refund_agent, tool="issue_refund").samples == 0  # refit from the db


def test_adopting_a_tool_the_agent_lacks_is_404(refund_agent, demo_user, client):
    client.force_login(demo_user("admin"))
    assert client.post(f"/ops/agents/{refund_agent.slug}/trust/no_such_tool/adopt").status_code == 404


def test_estimate_falls_back_without_a_map(settings):
    settings.CALIBRATION_MIN_SAMPLES = 50
    assert estimate(None, confidence=0.9, target=0.01).cold
