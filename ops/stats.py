"""Writers of the dashboard aggregates, called inside the transaction of the event they count.

Increments are `UPDATE ... SET n = n + delta` on one row per agent and hour
(created on first use), so counting costs one short statement and dashboards
read at most a few hundred rows per agent and window.
"""

from __future__ import annotations

import bisect
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Model
from django.utils import timezone

from ops.models import LATENCY_BOUNDS, AgentHourStat, CalibrationBucket, LatencyBucket, ToolHourStat


def hour_of(moment: datetime | None = None) -> datetime:
    moment = moment or timezone.now()
    return moment.replace(minute=0, second=0, microsecond=0)


def _increment(model: type[Model], keys: dict[str, Any], deltas: dict[str, Any]) -> None:
    updates = {name: F(name) + value for name, value in deltas.items() if value}
    if not updates:
        return
    if model._default_manager.filter(**keys).update(**updates):
        return
    try:
        with transaction.atomic():
            model._default_manager.create(**keys, **{k: v for k, v in deltas.items()})
    except IntegrityError:
        # Created by a concurrent transaction a moment ago: add to that row.
        model._default_manager.filter(**keys).update(**updates)


def bump(agent_id: int, **deltas: int | float | Decimal) -> None:
    """Add to this hour's counters of one agent."""
    _increment(AgentHourStat, {"agent_id": agent_id, "hour": hour_of()}, dict(deltas))


def bump_tool(agent_id: int, tool: str, *, calls: int = 0, errors: int = 0) -> None:
    _increment(
        ToolHourStat, {"agent_id": agent_id, "tool": tool, "hour": hour_of()}, {"calls": calls, "errors": errors}
    )


def observe(agent_id: int, metric: str, seconds: float) -> None:
    """Count one latency observation in its log-scale bucket."""
    bucket = bisect.bisect_left(LATENCY_BOUNDS, max(0.0, seconds))
    _increment(
        LatencyBucket,
        {"agent_id": agent_id, "metric": metric, "hour": hour_of(), "bucket": bucket},
        {"count": 1},
    )


def calibrate(*, agent_id: int, tool: str, confidence: float, verdict: str) -> None:
    """Record how people decided a reviewed call the agent was `confidence` sure of."""
    confidence = max(0.0, min(1.0, confidence))
    agreed = 1 if verdict == "approve" else 0
    _increment(
        CalibrationBucket,
        {"agent_id": agent_id, "tool": tool, "day": timezone.now().date(), "bin": min(9, int(confidence * 10))},
        {
            "reviewed": 1,
            "agreed": agreed,
            "edited": 1 if verdict == "edit" else 0,
            "rejected": 1 if verdict == "reject" else 0,
            "confidence_sum": confidence,
            "brier_sum": (confidence - agreed) ** 2,
        },
    )
