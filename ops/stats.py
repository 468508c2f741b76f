"""Writers of the dashboard aggregates, counted in the transaction of the event they count.

Increments are buffered and written just before COMMIT as one
`INSERT ... ON CONFLICT DO UPDATE SET n = n + delta` per row (one row per agent
and hour), so counting costs one short statement per row and transaction, the
counter rows are locked in one order, and dashboards read at most a few
hundred rows per agent and window.
"""

from __future__ import annotations

import bisect
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Model
from django.utils import timezone

from core.transactions import COUNTERS, defer, register_flusher
from ops.models import LATENCY_BOUNDS, AgentHourStat, CalibrationBucket, LatencyBucket, ToolHourStat


def hour_of(moment: datetime | None = None) -> datetime:
    moment = moment or timezone.now()
    return moment.replace(minute=0, second=0, microsecond=0)


def _increment(model: type[Model], keys: dict[str, Any], deltas: dict[str, Any]) -> None:
    # Deferred to just before COMMIT, after every domain row and before the audit
    # append (core.transactions: the lock order), summed per row and written sorted.
    if any(deltas.values()):
        defer(COUNTERS, (model, keys, deltas))


def _flush_counters(connection: Any, items: list[tuple[type[Model], dict[str, Any], dict[str, Any]]]) -> None:
    """Upsert `n = n + delta` for every counter row touched in this transaction, in key order."""
    merged: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[type[Model], dict[str, Any]]] = {}
    for model, keys, deltas in items:
        row_key = (model._meta.db_table, tuple(sorted(keys.items())))
        _, total = merged.setdefault(row_key, (model, {}))
        for name, value in deltas.items():
            if value:
                total[name] = total.get(name, 0) + value
    for row_key in sorted(merged, key=lambda k: (k[0], tuple((n, str(v)) for n, v in k[1]))):
        model, total = merged[row_key]
        if total:
            _upsert(connection, model, dict(row_key[1]), total)


def _upsert(connection: Any, model: type[Model], keys: dict[str, Any], deltas: dict[str, Any]) -> None:
    table = connection.ops.quote_name(model._meta.db_table)
    by_name = {n: f for f in model._meta.concrete_fields for n in (f.name, f.attname)}
    columns: list[str] = []
    values: list[Any] = []
    for f in model._meta.concrete_fields:
        if f.primary_key:
            continue
        name = next((n for n in (f.name, f.attname) if n in keys), f.name)
        value = keys[name] if name in keys else deltas.get(name, f.get_default())
        columns.append(connection.ops.quote_name(f.column))
        values.append(f.get_db_prep_save(value, connection))
    key_columns = [connection.ops.quote_name(by_name[k].column) for k in keys]
    updates = ", ".join(
        f"{(col := connection.ops.quote_name(by_name[name].column))} = {table}.{col} + EXCLUDED.{col}"
        for name in deltas
    )
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(values))}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE SET {updates}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)


register_flusher(COUNTERS, _flush_counters)


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
