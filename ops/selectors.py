"""Reads behind the operator pages. Every query reads maintained aggregates or a partial index.

None of them scans history: hour rows (at most 720 per agent for 30 days),
latency buckets, calibration buckets, and the pending/halted/in-doubt slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Case, F, FloatField, IntegerField, Q, Sum, Value, When
from django.db.models.functions import TruncDate
from django.utils import timezone

from agents.models import Agent, AgentDailyUsage, BreakerState, CircuitBreaker, Run, RunOutcome, RunStatus
from agents.selectors import agents_with_perm
from approvals.models import ActionRequest, ActionStatus
from core.counters import LATENCY_BOUNDS
from ops.models import HOUR_COUNTERS, RUN_ENDS, AgentHourStat, CalibrationBucket, LatencyBucket, ToolHourStat

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
NEAR_SLA = timedelta(minutes=10)


def window_of(raw: str) -> tuple[str, timedelta]:
    key = raw if raw in WINDOWS else "24h"
    return key, WINDOWS[key]


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


# --- exceptions -------------------------------------------------------------------


@dataclass
class ExceptionRow:
    kind: str
    agent: Agent
    message: str
    url: str = ""
    run_id: int | None = None
    breaker_id: int | None = None
    action_id: int | None = None
    severity: int = 1  # 2: act now


@dataclass
class Exceptions:
    rows: list[ExceptionRow] = field(default_factory=list)

    def of(self, kind: str) -> list[ExceptionRow]:
        return [r for r in self.rows if r.kind == kind]


def exceptions_for(user: AbstractBaseUser | AnonymousUser, *, now: datetime | None = None) -> Exceptions:
    """Everything that needs an operator now, for the agents this user may operate."""
    now = now or timezone.now()
    agents = {a.pk: a for a in agents_with_perm(user, "operate_agent")}
    found = Exceptions()
    if not agents:
        return found
    ids = list(agents)
    for b in CircuitBreaker.objects.filter(agent_id__in=ids).exclude(state=BreakerState.CLOSED).order_by("agent_id"):
        found.rows.append(
            ExceptionRow(
                "breaker",
                agents[b.agent_id],
                f"circuit breaker {b.tool or 'model'} is {b.state} after {b.consecutive_failures} failures: "
                f"{b.last_error[:120]}",
                breaker_id=b.pk,
                severity=2,
            )
        )
    for run in Run.objects.filter(agent_id__in=ids, status=RunStatus.HALTED).order_by("-id")[:50]:
        found.rows.append(
            ExceptionRow(
                "halted",
                agents[run.agent_id],
                f"run {run.pk} halted: {run.halt_reason}",
                url=f"/runs/{run.pk}/",
                run_id=run.pk,
                severity=2,
            )
        )
    for action in ActionRequest.objects.filter(agent_id__in=ids, status=ActionStatus.IN_DOUBT).order_by("-id")[:50]:
        found.rows.append(
            ExceptionRow(
                "in_doubt",
                agents[action.agent_id],
                f"{action.tool} #{action.pk}: the effect is unknown after a crash",
                url=f"/actions/{action.pk}/",
                action_id=action.pk,
                severity=2,
            )
        )
    sla = ActionRequest.objects.filter(
        agent_id__in=ids, status=ActionStatus.PENDING, due_at__lte=now + NEAR_SLA
    ).order_by("due_at")[:50]
    for action in sla:
        late = action.due_at is not None and action.due_at <= now
        found.rows.append(
            ExceptionRow(
                "sla",
                agents[action.agent_id],
                f"{action.tool} #{action.pk} {'is past its SLA' if late else 'is due within 10 minutes'}",
                url=f"/actions/{action.pk}/",
                action_id=action.pk,
                severity=2 if late else 1,
            )
        )
    found.rows.extend(_budget_rows(agents, now))
    found.rows.extend(_rate_rows(agents, now))
    return found


def _budget_rows(agents: dict[int, Agent], now: datetime) -> list[ExceptionRow]:
    rows: list[ExceptionRow] = []
    budgeted = {pk: a for pk, a in agents.items() if a.max_cost_per_day is not None or a.max_tokens_per_day is not None}
    if not budgeted:
        return rows
    day_fraction = max((now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds() / 86400, 1 / 96)
    for usage in AgentDailyUsage.objects.filter(agent_id__in=list(budgeted), day=now.date()):
        agent = budgeted[usage.agent_id]
        for used, limit, unit in (
            (float(usage.cost), agent.max_cost_per_day, "cost"),
            (float(usage.tokens), agent.max_tokens_per_day, "tokens"),
        ):
            if limit is None:
                continue
            budget = float(limit)
            if used >= budget:
                rows.append(
                    ExceptionRow("budget", agent, f"daily {unit} budget used up ({used:g} of {budget:g})", severity=2)
                )
            elif used / day_fraction > budget:
                rows.append(
                    ExceptionRow(
                        "burn",
                        agent,
                        f"{unit} burning faster than the daily budget allows: {used:g} so far, "
                        f"projected {used / day_fraction:.4g} of {budget:g}",
                    )
                )
    return rows


def recent_and_baseline(agent_ids: list[int], now: datetime) -> dict[int, dict[str, int]]:
    """Per agent: counters for the last 24 h and for the 7 days before them (one grouped query)."""
    recent = Q(hour__gte=now - timedelta(hours=24))
    fields = (*RUN_ENDS, "actions_routed", "routed_review")
    aggregates = {}
    for name in fields:
        aggregates[f"r_{name}"] = Sum(Case(When(recent, then=F(name)), default=0, output_field=IntegerField()))
        aggregates[f"b_{name}"] = Sum(Case(When(~recent, then=F(name)), default=0, output_field=IntegerField()))
    rows: Any = (
        AgentHourStat.objects.filter(agent_id__in=agent_ids, hour__gte=now - timedelta(days=8))
        .values("agent_id")
        .annotate(**aggregates)
    )
    return {row["agent_id"]: row for row in rows}


# The drift alert's windows over the calibration buckets, which are counted per UTC day. "The last
# 24 h" is the days that any of the last 24 hours fall on (yesterday and today), as on the agent's
# ops page with ?window=24h, so the page an alert links to shows the numbers it fired on; the
# baseline is the 30 days before those.
DRIFT_BASELINE_DAYS = 30
CALIBRATION_COUNTS = ("reviewed", "agreed", "edited", "rejected")


def drift_days(now: datetime) -> tuple[date, date]:
    """(first day of the recent window, first day of the baseline)."""
    recent = (now - timedelta(hours=24)).date()
    return recent, recent - timedelta(days=DRIFT_BASELINE_DAYS)


def calibration_recent_and_baseline(agent_ids: list[int], now: datetime) -> dict[int, dict[str, float]]:
    """Per agent, all tools together: reviewed, agreed, edited, rejected and the confidence sum, recent (r_) and
    baseline (b_), in one grouped query over at most 32 days of buckets."""
    recent_start, base_start = drift_days(now)
    recent = Q(day__gte=recent_start)
    aggregates: dict[str, Any] = {}
    for name in CALIBRATION_COUNTS:
        aggregates[f"r_{name}"] = Sum(Case(When(recent, then=F(name)), default=0, output_field=IntegerField()))
        aggregates[f"b_{name}"] = Sum(Case(When(~recent, then=F(name)), default=0, output_field=IntegerField()))
    for prefix, when in (("r_", recent), ("b_", ~recent)):
        aggregates[f"{prefix}confidence"] = Sum(
            Case(When(when, then=F("confidence_sum")), default=Value(0.0), output_field=FloatField())
        )
    rows: Any = (
        CalibrationBucket.objects.filter(agent_id__in=agent_ids, day__gte=base_start, day__lte=now.date())
        .values("agent_id")
        .annotate(**aggregates)
    )
    return {row["agent_id"]: row for row in rows}


def _rate_rows(agents: dict[int, Agent], now: datetime) -> list[ExceptionRow]:
    rows = []
    for agent_id, c in recent_and_baseline(list(agents), now).items():
        agent = agents[agent_id]
        failed = failure_rates(c)
        if failed is not None:
            recent_rate, base_rate, finished = failed
            rows.append(
                ExceptionRow(
                    "failing",
                    agent,
                    f"{recent_rate:.0%} of runs failed in the last 24 h ({finished} finished) "
                    f"against {base_rate:.0%} over the week before",
                )
            )
        spike = escalation_spike(c)
        if spike is not None:
            recent_rate, base_rate = spike
            rows.append(
                ExceptionRow(
                    "escalation",
                    agent,
                    f"{recent_rate:.0%} of actions went to review in the last 24 h "
                    f"against {base_rate:.0%} over the week before",
                )
            )
    return rows


def runs_ended(counts: dict[str, Any], prefix: str = "") -> int:
    """Runs that finished or halted, whatever they came to."""
    return sum(counts[prefix + name] for name in RUN_ENDS)


def failure_rates(c: dict[str, int], *, factor: float = 2.0, min_runs: int = 5) -> tuple[float, float, int] | None:
    """(recent, baseline, finished) when the last 24 h fail clearly more than the week before."""
    finished = runs_ended(c, "r_")
    base_finished = runs_ended(c, "b_")
    if finished < min_runs:
        return None
    recent = (c["r_runs_failed"] + c["r_runs_halted"]) / finished
    base = (c["b_runs_failed"] + c["b_runs_halted"]) / base_finished if base_finished else 0.0
    if recent >= max(0.1, base * factor, base + 0.1):
        return recent, base, finished
    return None


def escalation_spike(c: dict[str, int], *, factor: float = 2.0, min_actions: int = 10) -> tuple[float, float] | None:
    """(recent, baseline) when the share routed to review jumped against its own 7-day baseline."""
    if c["r_actions_routed"] < min_actions or not c["b_actions_routed"]:
        return None
    recent = c["r_routed_review"] / c["r_actions_routed"]
    base = c["b_routed_review"] / c["b_actions_routed"]
    if recent >= max(base * factor, base + 0.1):
        return recent, base
    return None


# --- per-agent health ---------------------------------------------------------------


def agent_health(agent: Agent, window: timedelta, *, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    since = now - window
    hours = AgentHourStat.objects.filter(agent=agent, hour__gte=since)
    totals = hours.aggregate(**{name: Sum(name) for name in (*HOUR_COUNTERS, "cost", "review_seconds")})
    t = {k: (v or 0) for k, v in totals.items()}
    finished = runs_ended(t)
    decisions = t["decisions_approve"] + t["decisions_edit"] + t["decisions_reject"]
    cost = Decimal(t["cost"] or 0)
    days = max(window.total_seconds() / 86400, 1 / 24)
    series_by = "day" if window > timedelta(days=2) else "hour"
    series = _series(hours, series_by)
    daily = list(
        hours.annotate(day=TruncDate("hour"))
        .values("day")
        .annotate(cost=Sum("cost"), tokens=Sum("tokens"))
        .order_by("day")
    )
    return {
        "totals": t,
        "finished": finished,
        # Done means it acted: a run that was refused, rejected or denied did not succeed.
        "success_rate": _ratio(t["runs_done"] + t["runs_done_with_edits"], finished),
        "outcomes": [(outcome.value, outcome.label, t[f"runs_{outcome.value}"]) for outcome in RunOutcome],
        "escalation_rate": _ratio(t["routed_review"], t["actions_routed"]),
        "approve_rate": _ratio(t["decisions_approve"], decisions),
        "edit_rate": _ratio(t["decisions_edit"], decisions),
        "reject_rate": _ratio(t["decisions_reject"], decisions),
        "decisions": decisions,
        "run_p50": percentile(agent, "run_duration", since, 0.5),
        "run_p95": percentile(agent, "run_duration", since, 0.95),
        "decision_p50": percentile(agent, "decision_latency", since, 0.5),
        "decision_p95": percentile(agent, "decision_latency", since, 0.95),
        "tokens_per_run": _ratio(t["tokens"], t["runs_started"]),
        "cost_per_run": (cost / t["runs_started"]) if t["runs_started"] else None,
        "cost_per_day": cost / Decimal(str(days)),
        "daily": daily,
        "daily_budget": agent.max_cost_per_day,
        "series": series,
        "series_by": series_by,
        # The charts' time axis: the whole window, one bar per hour or per day.
        "since": since,
        "until": now,
        "step": timedelta(days=1) if series_by == "day" else timedelta(hours=1),
        "tools": tool_usage(agent, since),
        "business": business_metrics(t, cost, days),
    }


def _series(hours: Any, by: str) -> list[dict[str, Any]]:
    if by == "day":
        qs = hours.annotate(bucket=TruncDate("hour")).values("bucket")
    else:
        qs = hours.annotate(bucket=F("hour")).values("bucket")
    return list(
        qs.annotate(
            runs=Sum("runs_started"),
            failed=Sum("runs_failed"),
            review=Sum("routed_review"),
            routed=Sum("actions_routed"),
        ).order_by("bucket")
    )


def percentile(agent: Agent, metric: str, since: datetime, q: float) -> float | None:
    """Upper bound (seconds) of the histogram bucket holding the q-th observation."""
    counts = dict(
        LatencyBucket.objects.filter(agent=agent, metric=metric, hour__gte=since)
        .values_list("bucket")
        .annotate(n=Sum("count"))
    )
    total = sum(counts.values())
    if not total:
        return None
    running = 0
    for bucket in sorted(counts):
        running += counts[bucket]
        if running >= q * total:
            return LATENCY_BOUNDS[bucket]
    return LATENCY_BOUNDS[-1]


def tool_usage(agent: Agent, since: datetime) -> list[dict[str, Any]]:
    rows = (
        ToolHourStat.objects.filter(agent=agent, hour__gte=since)
        .values("tool")
        .annotate(calls=Sum("calls"), errors=Sum("errors"))
        .order_by("-calls")
    )
    return [{**row, "error_rate": _ratio(row["errors"], row["calls"])} for row in rows]


def business_metrics(t: dict[str, Any], cost: Decimal, days: float) -> dict[str, Any]:
    return {
        "cost_per_automated_action": (cost / t["auto_executed"]) if t["auto_executed"] else None,
        "automated_per_day": t["auto_executed"] / days,
        "reviewer_hours": t["review_seconds"] / 3600,
        "errors_per_1000": (1000 * (t["undos"] + t["execution_failures"]) / t["actions_routed"])
        if t["actions_routed"]
        else None,
    }


# --- calibration -----------------------------------------------------------------


def calibration(agent: Agent, window: timedelta, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per tool: a reliability table by confidence tenth and the Brier score (the advisor replays thresholds)."""
    since = ((now or timezone.now()) - window).date()
    rows = (
        CalibrationBucket.objects.filter(agent=agent, day__gte=since)
        .values("tool", "bin")
        .annotate(
            reviewed=Sum("reviewed"),
            agreed=Sum("agreed"),
            edited=Sum("edited"),
            rejected=Sum("rejected"),
            confidence=Sum("confidence_sum"),
            brier=Sum("brier_sum"),
        )
        .order_by("tool", "bin")
    )
    tools: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        tools.setdefault(row["tool"], []).append(dict(row))
    result = []
    for tool, bins in tools.items():
        total = sum(b["reviewed"] for b in bins)
        reliability = [
            {
                "bin": b["bin"],
                "low": b["bin"] / 10,
                "stated": b["confidence"] / b["reviewed"],
                "agreement": b["agreed"] / b["reviewed"],
                "reviewed": b["reviewed"],
            }
            for b in bins
            if b["reviewed"]
        ]
        result.append(
            {
                "tool": tool,
                "reviewed": total,
                "brier": sum(b["brier"] for b in bins) / total if total else None,
                "reliability": reliability,
            }
        )
    return result
