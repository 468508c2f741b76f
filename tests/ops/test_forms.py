from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.models import Agent
from ops.forms import AlertRuleForm
from ops.models import ALERT_THRESHOLDS, AlertKind

pytestmark = pytest.mark.django_db


def threshold_errors(kind: str, threshold: str) -> list[str]:
    form = AlertRuleForm({"name": "r", "kind": kind, "threshold": threshold}, agents=Agent.objects.none())
    form.is_valid()
    return list(form.errors.get("threshold", []))


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(AlertKind.values),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**12), 10**12)),
)
def test_a_threshold_is_accepted_exactly_when_it_is_finite_and_in_its_kinds_range(kind, value):
    low, high, whole = ALERT_THRESHOLDS[kind]
    number = float(value)
    expected = math.isfinite(number) and low <= number <= high and (not whole or number == int(number))
    assert (threshold_errors(kind, repr(value)) == []) == expected, (kind, value)


@pytest.mark.parametrize(
    ("kind", "threshold"),
    [
        ("failure_rate", "1e308"),
        ("failure_rate", "1.5"),
        ("failure_rate", "0"),
        ("sla_breaches", "2.5"),
        ("cost_burn", "inf"),
    ],
)
def test_thresholds_out_of_their_kinds_range_are_refused(kind, threshold):
    assert threshold_errors(kind, threshold)


def test_an_empty_agent_is_accepted_and_means_all_agents():
    form = AlertRuleForm({"name": "r", "kind": "failure_rate", "threshold": "0.25"}, agents=Agent.objects.none())
    assert form.is_valid(), form.errors
    assert form.cleaned_data["agent"] is None
    assert "every agent you may operate" in str(form["agent"].help_text)
