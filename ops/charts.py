"""Server-rendered SVG charts: the numbers become coordinates here, the template draws them."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

WIDTH, HEIGHT = 600, 150


# The plot inside the SVG: room on the left for the value axis, below for the time axis.
LEFT, BOTTOM, TOP = 44, 22, 8
Y_TICKS = 4
X_TICKS = 6
TINY = 1e-9


def timeseries(
    series: list[dict[str, Any]],
    key: str,
    *,
    start: datetime,
    end: datetime,
    step: timedelta,
    unit: str,
    bucket: str = "bucket",
) -> dict[str, Any]:
    """Bars over a continuous time axis from `start` to `end`, one per `step` (empty buckets drawn as zero).

    With a value axis of round ticks and their unit, time labels, and a tooltip per bar.
    """
    by_bucket = {_as_time(row[bucket]): float(row.get(key) or 0) for row in series if row.get(bucket) is not None}
    first = _floor(start, step)
    buckets: list[datetime] = []
    at = first
    while at <= end and len(buckets) < 1000:
        buckets.append(at)
        at += step
    values = [by_bucket.get(b, 0.0) for b in buckets]
    top = _nice(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(buckets), 1)
    label_format = "%H:%M" if step < timedelta(days=1) else "%b %d"
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "right": WIDTH,
        "unit": unit,
        "max": top,
        "total": sum(values),
        "bars": [
            {
                "x": round(LEFT + i * slot + slot * 0.1, 1),
                "w": round(max(slot * 0.8, 0.5), 1),
                "h": round(plot_h * v / top, 1),
                "y": round(TOP + plot_h - plot_h * v / top, 1),
                "title": f"{b:%Y-%m-%d %H:%M} UTC: {_number(v)} {unit}",
            }
            for i, (b, v) in enumerate(zip(buckets, values, strict=True))
        ],
        "y_ticks": [
            {"y": round(TOP + plot_h - plot_h * k / Y_TICKS, 1), "label": _number(top * k / Y_TICKS)}
            for k in range(Y_TICKS + 1)
        ],
        "x_ticks": [
            {"x": round(LEFT + i * slot + slot / 2, 1), "label": buckets[i].strftime(label_format)}
            for i in _spread(len(buckets), X_TICKS)
        ],
    }


def _as_time(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _floor(moment: datetime, step: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    if step >= timedelta(days=1):
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def _nice(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (1 for an empty chart)."""
    if value <= 0:
        return 1.0
    if value < TINY:  # below any count or cost worth a tick (and where powers of ten underflow)
        return TINY
    power = 10 ** math.floor(math.log10(value))
    return next((m * power for m in (1, 2, 5, 10) if m * power >= value), 10 * power)


def _number(value: float) -> str:
    return f"{value:.4g}" if value and abs(value) < 1 else f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def _spread(count: int, wanted: int) -> list[int]:
    if count <= wanted:
        return list(range(count))
    return sorted({round(k * (count - 1) / (wanted - 1)) for k in range(wanted)})


def reliability(points: list[dict[str, Any]], size: int = 200) -> dict[str, Any]:
    """Stated confidence (x) against how often reviewers agreed (y); the diagonal is perfect calibration."""
    return {
        "size": size,
        "points": [
            {
                "cx": round(p["stated"] * size, 1),
                "cy": round(size - p["agreement"] * size, 1),
                "r": min(12, 3 + p["reviewed"] ** 0.5 / 2),
                "title": f"stated {p['stated']:.2f}, agreed {p['agreement']:.0%} of {p['reviewed']}",
            }
            for p in points
        ],
    }


def calibrated(points: list[dict[str, Any]], blocks: list[list[float]], size: int = 200) -> dict[str, Any]:
    """The reliability diagram with the calibrated map over it: a step line, one step per isotonic block."""
    chart = reliability(points, size)
    steps: list[str] = []
    for low, high, agreement, _weight, _n in blocks:
        y = round(size - agreement * size, 1)
        steps += [f"{round(low * size, 1)},{y}", f"{round(high * size, 1)},{y}"]
    chart["steps"] = " ".join(steps)
    return chart
