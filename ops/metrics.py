"""A Prometheus text endpoint with the dashboards' counters and gauges (bearer-token protected)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from accounts.auth import BearerToken
from agents.models import Agent, BreakerState, CircuitBreaker, Run, RunStatus
from agents.selectors import agents_with_perm
from approvals.models import ActionRequest, ActionStatus, QueueCount
from ops.models import HOUR_COUNTERS, AgentHourStat


class CountersignCollector:
    """Collected at scrape time from the maintained aggregates, for the agents the scraper may operate."""

    def __init__(self, agents: list[Agent]) -> None:
        self.agents = {a.pk: a.slug for a in agents}

    def collect(self) -> Iterator[Any]:
        ids = list(self.agents)
        totals: Any = (
            AgentHourStat.objects.filter(agent_id__in=ids)
            .values("agent_id")
            .annotate(**{name: Sum(name) for name in (*HOUR_COUNTERS, "cost")})
        )
        families = {
            name: CounterMetricFamily(f"countersign_{name}", f"Total {name.replace('_', ' ')}", labels=["agent"])
            for name in HOUR_COUNTERS
        }
        cost = CounterMetricFamily("countersign_cost_usd", "Model cost in USD", labels=["agent"])
        for row in totals:
            slug = self.agents[row["agent_id"]]
            for name, family in families.items():
                family.add_metric([slug], float(row[name] or 0))
            cost.add_metric([slug], float(row["cost"] or 0))
        yield from families.values()
        yield cost

        pending = GaugeMetricFamily(
            "countersign_pending_actions", "Actions waiting for a person", labels=["agent", "tier"]
        )
        for agent_id, tier, count in QueueCount.objects.filter(agent_id__in=ids).values_list(
            "agent_id", "tier", "pending"
        ):
            pending.add_metric([self.agents[agent_id], str(tier)], float(count))
        yield pending

        breakers = GaugeMetricFamily("countersign_open_breakers", "Circuit breakers not closed", labels=["agent"])
        for row in (
            CircuitBreaker.objects.filter(agent_id__in=ids)
            .exclude(state=BreakerState.CLOSED)
            .values("agent_id")
            .annotate(n=Count("id"))
        ):
            breakers.add_metric([self.agents[row["agent_id"]]], float(row["n"]))
        yield breakers

        halted = GaugeMetricFamily("countersign_halted_runs", "Runs halted by a limit", labels=["agent"])
        for row in (
            Run.objects.filter(agent_id__in=ids, status=RunStatus.HALTED).values("agent_id").annotate(n=Count("id"))
        ):
            halted.add_metric([self.agents[row["agent_id"]]], float(row["n"]))
        yield halted

        doubt = GaugeMetricFamily(
            "countersign_in_doubt_actions", "Executions whose effect is unknown", labels=["agent"]
        )
        for row in (
            ActionRequest.objects.filter(agent_id__in=ids, status=ActionStatus.IN_DOUBT)
            .values("agent_id")
            .annotate(n=Count("id"))
        ):
            doubt.add_metric([self.agents[row["agent_id"]]], float(row["n"]))
        yield doubt


def metrics_view(request: HttpRequest) -> HttpResponse:
    header = request.headers.get("Authorization", "")
    user = None
    if header.startswith("Bearer "):
        user = BearerToken().authenticate(request, header.removeprefix("Bearer ").strip())
    if user is None:
        response = HttpResponse("a valid 'Authorization: Bearer <token>' header is required\n", status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CountersignCollector(list(agents_with_perm(user, "operate_agent"))))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
