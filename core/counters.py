"""Counting what happens, in the transaction of the event counted, for the dashboards.

Any app counts here (runs, routing, decisions, executions, latencies, how
people decided a call of a given confidence); the counts are buffered and
written just before COMMIT by the app that owns the aggregate tables (`ops`
registers the writer, `ops.stats`), in the lock order of core.transactions.
An app never imports the dashboards to be counted by them.
"""

from __future__ import annotations

import bisect
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from core.transactions import COUNTERS, defer

# What is counted, by the aggregate that holds it.
AGENT_HOUR = "agent_hour"  # per agent per UTC hour
TOOL_HOUR = "tool_hour"  # per agent, tool and hour
LATENCY = "latency"  # log-scale histogram buckets per agent, metric and hour
CALIBRATION = "calibration"  # reviewed calls by confidence tenth, per agent, tool and day
QUEUE = "queue"  # pending actions per agent and tier (the inbox's queue counts)
AGENT_DAY = "agent_day"  # runs, tokens and cost per agent per UTC day (what its daily budgets are checked against)

# Upper bounds (seconds) of the latency buckets; the last catches everything.
LATENCY_BOUNDS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600, float("inf"))


def hour_of(moment: datetime | None = None) -> datetime:
    moment = moment or timezone.now()
    return moment.replace(minute=0, second=0, microsecond=0)


def _count(kind: str, keys: dict[str, Any], deltas: dict[str, Any]) -> None:
    if any(deltas.values()):
        defer(COUNTERS, (kind, keys, deltas))


def bump(agent_id: int, **deltas: int | float | Decimal) -> None:
    """Add to this hour's counters of one agent."""
    _count(AGENT_HOUR, {"agent_id": agent_id, "hour": hour_of()}, dict(deltas))


def usage(agent_id: int, *, runs: int = 0, tokens: int = 0, cost: Decimal = Decimal(0)) -> None:
    """Add to an agent's use of today (its daily budgets). Written just before COMMIT like every counter: every
    step of an agent adds here, and a row locked from the model call to COMMIT made its steps wait on each other."""
    _count(
        AGENT_DAY, {"agent_id": agent_id, "day": timezone.now().date()}, {"runs": runs, "tokens": tokens, "cost": cost}
    )


def bump_tool(agent_id: int, tool: str, *, calls: int = 0, errors: int = 0) -> None:
    _count(TOOL_HOUR, {"agent_id": agent_id, "tool": tool, "hour": hour_of()}, {"calls": calls, "errors": errors})


def observe(agent_id: int, metric: str, seconds: float) -> None:
    """Count one latency observation in its log-scale bucket."""
    bucket = bisect.bisect_left(LATENCY_BOUNDS, max(0.0, seconds))
    _count(LATENCY, {"agent_id": agent_id, "metric": metric, "hour": hour_of(), "bucket": bucket}, {"count": 1})


def calibrate(*, agent_id: int, tool: str, confidence: float, verdict: str) -> None:
    """Record how people decided a reviewed call the agent was `confidence` sure of."""
    confidence = max(0.0, min(1.0, confidence))
    agreed = 1 if verdict == "approve" else 0
    _count(
        CALIBRATION,
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


def queue(*, agent_id: int, tier: int, delta: int) -> None:
    """Move one queue's pending count, written just before COMMIT like every counter.

    Written last, the count's row is locked only for the moment before COMMIT: decisions and
    routed calls of one agent do not wait on each other for the rest of their transactions.
    """
    _count(QUEUE, {"agent_id": agent_id, "tier": tier}, {"pending": delta})
