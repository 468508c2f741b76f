"""Charts people can read: a continuous time axis, round value ticks with a unit, a tooltip per bar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from agents.services import run_start
from ops.charts import _nice, timeseries
from tests.conftest import refund_input, user

END = datetime(2026, 12, 1, 13, 30, tzinfo=UTC)


@given(
    hours=st.integers(1, 200),
    values=st.dictionaries(st.integers(0, 199), st.floats(0, 1e6, allow_nan=False), max_size=40),
)
def test_every_bucket_of_the_window_gets_one_bar_inside_the_plot(hours, values):
    start = END - timedelta(hours=hours)
    series = [
        {"bucket": start.replace(minute=0) + timedelta(hours=k), "runs": v} for k, v in values.items() if k < hours
    ]
    chart = timeseries(series, "runs", start=start, end=END, step=timedelta(hours=1), unit="runs")
    assert len(chart["bars"]) == hours + 1  # from the hour the window starts in to the current one
    for bar in chart["bars"]:
        assert chart["left"] <= bar["x"] and bar["x"] + bar["w"] <= chart["width"] + 0.1
        assert chart["top"] - 0.1 <= bar["y"] and bar["y"] + bar["h"] <= chart["bottom"] + 0.1
        assert bar["title"].endswith(" runs") and "UTC" in bar["title"]
    assert chart["max"] >= max((v for k, v in values.items() if k < hours), default=0)
    assert [t["y"] for t in chart["y_ticks"]] == sorted((t["y"] for t in chart["y_ticks"]), reverse=True)
    assert 2 <= len(chart["x_ticks"]) <= 6 or hours + 1 < 2


@given(st.floats(min_value=1e-9, max_value=1e12))
def test_the_value_axis_tops_at_a_round_number_not_far_above_the_largest_value(value):
    top = _nice(value)
    assert value <= top <= 2.5 * value * (1 + 1e-9)
    mantissa = top / 10 ** int(f"{top:e}".split("e")[1])
    assert round(mantissa, 6) in (1, 2, 5, 10)


def test_days_with_nothing_are_drawn_as_zero_and_labelled_by_date():
    start = END - timedelta(days=7)
    chart = timeseries(
        [{"day": (END - timedelta(days=2)).date(), "cost": 1.5}],
        "cost",
        start=start,
        end=END,
        step=timedelta(days=1),
        unit="USD",
        bucket="day",
    )
    assert len(chart["bars"]) == 8
    assert [b["h"] > 0 for b in chart["bars"]].count(True) == 1
    assert chart["x_ticks"][0]["label"] == "Nov 24" and chart["total"] == 1.5


@pytest.mark.django_db
def test_the_agent_dashboard_draws_axes_labels_and_tooltips(demo, commit):
    with commit():
        run_start(agent=demo["refund-triage"], input=refund_input(amount=20), actor=None)
    client = Client()
    client.force_login(user("operator"))
    page = client.get("/ops/agents/refund-triage/").content.decode()
    assert page.count('<figure class="chart">') == 4
    assert "runs started (runs)" in page and "cost (USD)" in page
    assert 'text-anchor="end" dominant-baseline="middle">0</text>' in page  # the value axis starts at 0
    assert ":00</text>" in page  # hour labels on the time axis
    assert " UTC: 1 runs</title>" in page  # this hour's run, in its bar's tooltip
