"""The writer of the dashboard aggregates: what `core.counters` buffered in a transaction.

Increments are written just before COMMIT as one
`INSERT ... ON CONFLICT DO UPDATE SET n = n + delta` per row (one row per agent
and hour), so counting costs one short statement per row and transaction, the
counter rows are locked in one order, and dashboards read at most a few
hundred rows per agent and window.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.db import connections
from django.db.models import Field, Model

from agents.models import AgentDailyUsage
from approvals.models import QueueCount
from core.counters import AGENT_DAY, AGENT_HOUR, CALIBRATION, LATENCY, QUEUE, TOOL_HOUR
from core.transactions import COUNTERS, register_flusher
from ops.models import AgentHourStat, CalibrationBucket, LatencyBucket, ToolHourStat

# The aggregate table of each kind of count (core.counters).
TABLES: dict[str, type[Model]] = {
    AGENT_HOUR: AgentHourStat,
    TOOL_HOUR: ToolHourStat,
    LATENCY: LatencyBucket,
    CALIBRATION: CalibrationBucket,
    QUEUE: QueueCount,
    AGENT_DAY: AgentDailyUsage,
}


def _flush_counters(connection: Any, items: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    """Upsert `n = n + delta` for every counter row touched in this transaction, in key order."""
    merged: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[type[Model], dict[str, Any]]] = {}
    for kind, keys, deltas in items:
        model = TABLES[kind]
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
    sql, fields = _upsert_statement(connection.alias, model, tuple(keys), tuple(deltas))
    values = [
        f.get_db_prep_save(keys[name] if name in keys else deltas.get(name, f.get_default()), connection)
        for name, f in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)


@cache
def _upsert_statement(
    alias: str, model: type[Model], key_names: tuple[str, ...], delta_names: tuple[str, ...]
) -> tuple[str, list[tuple[str, Field[Any, Any]]]]:
    """The upsert of one counter row, and the field behind each of its values (built once per shape)."""
    ops: Any = connections[alias].ops
    table = ops.quote_name(model._meta.db_table)
    by_name = {n: f for f in model._meta.concrete_fields for n in (f.name, f.attname)}
    fields = [
        (next((n for n in (f.name, f.attname) if n in key_names), f.name), f)
        for f in model._meta.concrete_fields
        if not f.primary_key
    ]
    columns = ", ".join(ops.quote_name(f.column) for _, f in fields)
    key_columns = ", ".join(ops.quote_name(by_name[k].column) for k in key_names)
    updates = ", ".join(
        f"{(col := ops.quote_name(by_name[name].column))} = {table}.{col} + EXCLUDED.{col}" for name in delta_names
    )
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))}) "  # noqa: S608
        f"ON CONFLICT ({key_columns}) DO UPDATE SET {updates}"
    )
    return sql, fields


register_flusher(COUNTERS, _flush_counters)
