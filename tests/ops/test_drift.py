"""Drift alerts: an agent's agreement rate, edit rate or confidence gap against its own 30-day baseline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.models import Agent
from approvals.models import Notification
from audit.models import AuditEvent
from ops.alerts import (
    AGREEMENT,
    DRIFT_MIN_BASELINE,
    DRIFT_MIN_RECENT,
    EDITS,
    GAP,
    Tally,
    alerts_evaluate,
    drift_shifts,
)
from ops.forms import AlertRuleForm
from ops.models import Alert, AlertKind, AlertRule, CalibrationBucket
from tests.conftest import user

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
YESTERDAY = TODAY - timedelta(days=1)
DB_EXAMPLES = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- the statistics ----------------------------------------------------------------


@st.composite
def tallies(draw, *, min_reviewed=DRIFT_MIN_RECENT, max_reviewed=400):
    n = draw(st.integers(min_reviewed, max_reviewed))
    agreed = draw(st.integers(0, n))
    edited = draw(st.integers(0, n - agreed))
    return Tally(reviewed=n, agreed=agreed, edited=edited, confidence=n * draw(st.floats(0, 1)))


@settings(max_examples=500)
@given(recent=tallies(), times=st.integers(3, 50))
def test_a_baseline_distributed_as_the_last_day_shows_no_shift(recent, times):
    baseline = Tally(recent.reviewed * times, recent.agreed * times, recent.edited * times, recent.confidence * times)
    shifts = drift_shifts(recent, baseline)
    assert [s.metric for s in shifts] == [AGREEMENT, EDITS, GAP]
    assert all(abs(s.z) < 1e-6 for s in shifts), shifts  # under every bound a rule may set (1..20)


# The baseline: 60 % agreed, 5 % edited, 35 % rejected, stated confidence 0.6 (no gap).
BASE = {"agreed": 0.6, "edited": 0.05, "confidence": 0.6}
# Each shift moves one metric by 0.3 or more and keeps the other two where they were.
SHIFTS = {
    AGREEMENT: {"agreed": 0.3, "edited": 0.05, "confidence": 0.3},  # agrees less, and says so
    EDITS: {"agreed": 0.6, "edited": 0.35, "confidence": 0.6},  # rejections turned into edits
    GAP: {"agreed": 0.6, "edited": 0.05, "confidence": 0.95},  # just as right, far surer
}


def tally(n: int, shape: dict[str, float]) -> Tally:
    # n is a multiple of 20, so every count is whole and the rates are exactly the shape's.
    return Tally(n, round(n * shape["agreed"]), round(n * shape["edited"]), n * shape["confidence"])


@settings(max_examples=300)
@given(
    metric=st.sampled_from(list(SHIFTS)),
    recent_n=st.integers(3, 20).map(lambda k: 20 * k),
    base_n=st.integers(10, 100).map(lambda k: 20 * k),
    bound=st.floats(1, 3.5),
)
def test_a_clear_shift_of_one_metric_is_beyond_the_bound_and_the_others_are_not(metric, recent_n, base_n, bound):
    shifts = {s.metric: s for s in drift_shifts(tally(recent_n, SHIFTS[metric]), tally(base_n, BASE))}
    assert abs(shifts[metric].z) > bound
    assert all(abs(s.z) < 1 for name, s in shifts.items() if name != metric), shifts


@settings(max_examples=300)
@given(
    recent=st.one_of(tallies(min_reviewed=0, max_reviewed=DRIFT_MIN_RECENT - 1), tallies()),
    baseline=st.one_of(tallies(min_reviewed=0, max_reviewed=DRIFT_MIN_BASELINE - 1), tallies(min_reviewed=50)),
)
def test_too_few_reviews_in_either_window_never_shift(recent, baseline):
    enough = recent.reviewed >= DRIFT_MIN_RECENT and baseline.reviewed >= DRIFT_MIN_BASELINE
    assert bool(drift_shifts(recent, baseline)) == enough


def test_a_worked_example():
    # Last day: 40 reviewed, 20 agreed, 10 edited, mean confidence 0.9 (gap +0.4).
    # Baseline: 200 reviewed, 140 agreed, 20 edited, mean confidence 0.8 (gap +0.1).
    shifts = drift_shifts(Tally(40, 20, 10, 36.0), Tally(200, 140, 20, 160.0))
    # Pooled agreement 160/240, pooled edits 30/240; 1/40 + 1/200 = 0.03.
    se_agreement = (160 / 240 * 80 / 240 * 0.03) ** 0.5
    se_edits = (30 / 240 * 210 / 240 * 0.03) ** 0.5
    assert [(s.metric, s.before, s.after) for s in shifts] == [
        (AGREEMENT, 0.7, 0.5),
        (EDITS, 0.1, 0.25),
        (GAP, pytest.approx(0.1), pytest.approx(0.4)),
    ]
    assert [s.z for s in shifts] == [
        pytest.approx(-0.2 / se_agreement),  # -2.45
        pytest.approx(0.15 / se_edits),  # +2.62
        pytest.approx(0.3 / se_agreement),  # +3.67
    ]
    assert [s.describe() for s in shifts] == [
        "agreement rate fell from 70% to 50% (z = -2.4)",
        "edit rate rose from 10% to 25% (z = +2.6)",
        "confidence gap rose from +0.10 to +0.40 (z = +3.7)",
    ]


def test_every_agreement_with_only_the_confidence_moved_still_has_a_finite_z():
    shifts = {s.metric: s for s in drift_shifts(Tally(40, 40, 0, 40 * 0.99), Tally(200, 200, 0, 200 * 0.6))}
    assert shifts[AGREEMENT].z == 0 and shifts[EDITS].z == 0
    assert 3 < shifts[GAP].z < 100


# --- the alert -------------------------------------------------------------------


def buckets(agent: Agent, day, n: int, shape: dict[str, float], *, tool: str = "issue_refund") -> None:
    agreed, edited = round(n * shape["agreed"]), round(n * shape["edited"])
    CalibrationBucket.objects.create(
        agent=agent,
        tool=tool,
        day=day,
        bin=min(9, int(shape["confidence"] * 10)),
        reviewed=n,
        agreed=agreed,
        edited=edited,
        rejected=n - agreed - edited,
        confidence_sum=n * shape["confidence"],
    )


def baseline(agent: Agent, n_per_day: int = 20, days: int = 10) -> None:
    for back in range(2, 2 + days):
        buckets(agent, TODAY - timedelta(days=back), n_per_day, BASE)


@pytest.fixture
def rule(refund_agent, demo_user):
    demo_user("operator")
    return AlertRule.objects.create(name="drift", kind=AlertKind.DRIFT, agent=refund_agent, threshold=3)


@pytest.mark.parametrize("metric", list(SHIFTS))
def test_a_shift_fires_once_names_the_metric_links_the_evidence_and_resolves_when_it_goes(
    refund_agent, rule, commit, metric
):
    baseline(refund_agent)  # 200 reviewed over the 30 days before
    buckets(refund_agent, YESTERDAY, 20, SHIFTS[metric])
    buckets(refund_agent, TODAY, 20, SHIFTS[metric], tool="refund_note")  # all tools count together
    with commit():
        assert alerts_evaluate(now=NOW)["fired"] == 1
    alert = Alert.objects.get(rule=rule, resolved_at__isnull=True)
    expected = {
        AGREEMENT: "agreement rate fell from 60% to 30% (z = -",
        EDITS: "edit rate rose from 5% to 35% (z = +",
        GAP: "confidence gap rose from +0.00 to +0.35 (z = +",
    }[metric]
    assert alert.message.startswith(f"refund-triage: {expected}"), alert.message
    assert alert.message.endswith("in the last day against the 30 days before")
    assert [m for m in (AGREEMENT, EDITS, GAP) if m in alert.message] == [metric]
    assert abs(alert.value) > 3
    notice = Notification.objects.get(user__username="operator", text__startswith="Alert:")
    assert notice.url == "/ops/agents/refund-triage/?window=24h"
    assert AuditEvent.objects.filter(event="alert.fired", agent_id=refund_agent.pk).count() == 1
    operator = Client()
    operator.force_login(user("operator"))
    for page in ("/ops/", "/ops/alerts/"):
        assert 'href="/ops/agents/refund-triage/?window=24h"' in operator.get(page).content.decode(), page
    assert alerts_evaluate(now=NOW) == {"fired": 0, "still_firing": 1, "resolved": 0}

    # The last day comes back to the agent's usual: the alert resolves.
    CalibrationBucket.objects.filter(day__gte=YESTERDAY).delete()
    buckets(refund_agent, YESTERDAY, 20, BASE)
    buckets(refund_agent, TODAY, 20, BASE)
    with commit():
        assert alerts_evaluate(now=NOW) == {"fired": 0, "still_firing": 0, "resolved": 1}
    assert Alert.objects.get(pk=alert.pk).resolved_at == NOW


bins = st.tuples(
    st.sampled_from(["issue_refund", "refund_note"]),
    st.integers(0, 9),
    st.integers(20, 60),
    st.floats(0, 1),
    st.floats(0, 1),
)


@DB_EXAMPLES
@given(recent=st.lists(bins, min_size=1, max_size=6, unique_by=lambda b: b[:2]), days=st.integers(3, 12))
def test_an_agent_whose_last_day_looks_like_its_baseline_never_fires(refund_agent, rule, recent, days):
    CalibrationBucket.objects.all().delete()
    for tool, bin_, n, agreed_share, edited_share in recent:
        agreed = round(n * agreed_share)
        edited = round((n - agreed) * edited_share)
        counts = {"reviewed": n, "agreed": agreed, "edited": edited, "rejected": n - agreed - edited}
        for day in [TODAY] + [YESTERDAY - timedelta(days=back) for back in range(1, days + 1)]:
            CalibrationBucket.objects.create(
                agent=refund_agent, tool=tool, day=day, bin=bin_, confidence_sum=n * (bin_ + 0.5) / 10, **counts
            )
    assert alerts_evaluate(now=NOW)["fired"] == 0
    assert not Alert.objects.exists()


@DB_EXAMPLES
@given(
    recent_n=st.integers(0, 200),
    base_n=st.integers(0, 400),
    metric=st.sampled_from(list(SHIFTS)),
)
def test_a_shift_on_too_little_data_never_fires(refund_agent, rule, recent_n, base_n, metric):
    CalibrationBucket.objects.all().delete()
    Alert.objects.all().delete()
    if recent_n >= DRIFT_MIN_RECENT and base_n >= DRIFT_MIN_BASELINE:
        recent_n = DRIFT_MIN_RECENT - 1  # keep one window short, by as little as one review
    recent_shape = SHIFTS[metric]
    if recent_n:
        buckets(refund_agent, TODAY, recent_n, recent_shape)
    if base_n:
        buckets(refund_agent, TODAY - timedelta(days=5), base_n, BASE)
    assert alerts_evaluate(now=NOW)["fired"] == 0


def test_just_enough_data_fires():
    n1, n0 = DRIFT_MIN_RECENT, DRIFT_MIN_BASELINE
    shifts = {s.metric: s for s in drift_shifts(Tally(n1, 0, 0, 0.0), Tally(n0, n0, 0, float(n0)))}
    assert abs(shifts[AGREEMENT].z) > 3


def test_the_last_day_is_yesterday_and_today_and_the_baseline_the_30_days_before(refund_agent, rule):
    baseline(refund_agent, n_per_day=10, days=10)
    # A bad day two days ago is baseline, not the last day: with a usual last day, nothing fires.
    buckets(refund_agent, TODAY - timedelta(days=2), 100, SHIFTS[AGREEMENT], tool="refund_note")
    buckets(refund_agent, YESTERDAY, 40, BASE)
    assert alerts_evaluate(now=NOW)["fired"] == 0
    # Counted against the 30 days before yesterday only: older days are not the baseline.
    CalibrationBucket.objects.all().delete()
    for back in range(32, 42):
        buckets(refund_agent, TODAY - timedelta(days=back), 20, BASE)
    buckets(refund_agent, YESTERDAY, 60, SHIFTS[AGREEMENT])
    assert alerts_evaluate(now=NOW)["fired"] == 0  # no baseline at all within the 30 days
    buckets(refund_agent, TODAY - timedelta(days=31), 100, BASE)  # the baseline's first day
    assert alerts_evaluate(now=NOW)["fired"] == 1


def test_a_rule_for_all_agents_judges_each_against_its_own_baseline(refund_agent, crm_agent):
    AlertRule.objects.create(name="drift everywhere", kind=AlertKind.DRIFT, threshold=3)
    baseline(refund_agent)
    buckets(refund_agent, TODAY, 40, BASE)
    # The CRM agent has always agreed 30 % of the time: low, but its usual.
    for back in range(2, 12):
        buckets(crm_agent, TODAY - timedelta(days=back), 20, SHIFTS[AGREEMENT], tool="delete_contacts")
    buckets(crm_agent, TODAY, 40, SHIFTS[AGREEMENT], tool="delete_contacts")
    assert alerts_evaluate(now=NOW)["fired"] == 0
    CalibrationBucket.objects.filter(agent=refund_agent, day=TODAY).update(agreed=12, edited=2, rejected=26)
    assert alerts_evaluate(now=NOW)["fired"] == 1
    assert list(Alert.objects.values_list("agent__slug", flat=True)) == ["refund-triage"]


# --- the rule's threshold ------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "ok"), [("0.5", False), ("0.99", False), ("1", True), ("3", True), ("20", True), ("25", False)]
)
def test_a_drift_rule_takes_a_z_bound_between_1_and_20(threshold, ok):
    form = AlertRuleForm({"name": "r", "kind": "drift", "threshold": threshold}, agents=Agent.objects.none())
    assert form.is_valid() == ok, form.errors
    if not ok:
        assert form.errors["threshold"] == ["For this kind the threshold is between 1 and 20."]


@pytest.mark.parametrize("threshold", ["0.5", "25"])
def test_the_alerts_page_refuses_a_drift_rule_out_of_range(refund_agent, demo_user, threshold):
    demo_user("operator")
    client = Client()
    client.force_login(user("operator"))
    response = client.post(
        "/ops/alerts/", {"name": "drift", "kind": "drift", "agent": refund_agent.pk, "threshold": threshold}
    )
    assert response.status_code == 400
    assert "For this kind the threshold is between 1 and 20." in response.content.decode()
    assert not AlertRule.objects.exists()
