"""Operator pages: exceptions first, per-agent health and calibration, alert rules, /metrics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agents.models import AgentTool
from agents.selectors import agents_with_perm
from approvals import advisor
from approvals.calibration import calibration_refit_agent, samples_by_tool
from approvals.models import CalibrationMap
from audit.services import record
from core.errors import DomainError
from core.pages import render_failed_post
from core.requests import AuthedRequest
from ops import alerts, charts, metrics, selectors
from ops.forms import AlertRuleForm
from ops.models import Alert, AlertRule


@require_GET
@login_required
def exceptions(request: AuthedRequest) -> HttpResponse:
    found = selectors.exceptions_for(request.user)
    context = {
        "exceptions": found,
        "kinds": [
            ("breaker", "Open circuit breakers"),
            ("halted", "Halted runs"),
            ("in_doubt", "Executions in doubt"),
            ("sla", "Past or near their SLA"),
            ("budget", "Over budget"),
            ("burn", "Burning faster than the budget allows"),
            ("failing", "Failing above their usual rate"),
            ("escalation", "Escalation spikes"),
        ],
        "alerts": Alert.objects.filter(
            resolved_at__isnull=True, agent__in=agents_with_perm(request.user, "operate_agent")
        ).select_related("rule", "agent")[:50],
        "agents": agents_with_perm(request.user, "operate_agent"),
    }
    template = "ops/exceptions.html#list" if request.htmx else "ops/exceptions.html"
    return render(request, template, context)


@require_GET
@login_required
def agent_dashboard(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = get_object_or_404(agents_with_perm(request.user, "operate_agent"), slug=slug)
    window_key, window = selectors.window_of(request.GET.get("window", "24h"))
    health = selectors.agent_health(agent, window)
    calibration = selectors.calibration(agent, window)
    for tool in calibration:
        tool["chart"] = charts.reliability(tool["reliability"])
    context = {
        "agent": agent,
        "window": window_key,
        "windows": list(selectors.WINDOWS),
        "h": health,
        "runs_chart": _chart(health, health["series"], "runs", unit="runs"),
        "failed_chart": _chart(health, health["series"], "failed", unit="runs"),
        "review_chart": _chart(health, health["series"], "review", unit="actions"),
        "cost_chart": _chart(health, health["daily"], "cost", unit="USD", bucket="day", step=timedelta(days=1)),
        "calibration": calibration,
    }
    return render(request, "ops/agent.html", context)


@require_GET
@login_required
def agent_trust(request: AuthedRequest, slug: str) -> HttpResponse:
    """Per enabled tool: the calibrated map over the raw diagram, every rule replayed, and the proposal."""
    agent = get_object_or_404(agents_with_perm(request.user, "operate_agent"), slug=slug)
    tools = list(AgentTool.objects.filter(agent=agent, enabled=True).select_related("agent").order_by("tool"))
    samples = samples_by_tool(agent_id=agent.pk)
    maps = {m.tool: m for m in CalibrationMap.objects.filter(agent=agent)}
    raw = {c["tool"]: c for c in selectors.calibration(agent, advisor.CALIBRATION_WINDOW)}
    seconds = advisor.review_seconds(agent)
    rows = []
    for tool in tools:
        cal = maps.get(tool.tool)
        rows.append(
            {
                "advice": advisor.advise(tool, samples.get(tool.tool, []), seconds=seconds),
                "map": cal,
                "chart": charts.calibrated(raw.get(tool.tool, {}).get("reliability", []), cal.blocks if cal else []),
            }
        )
    context = {
        "agent": agent,
        "rows": rows,
        "may_configure": agents_with_perm(request.user, "configure_agent").filter(pk=agent.pk).exists(),
        "minimum": settings.CALIBRATION_MIN_SAMPLES,
    }
    return render(request, "ops/trust.html", context)


@require_POST
@login_required
def agent_trust_adopt(request: AuthedRequest, slug: str, tool: str) -> HttpResponse:
    """Submit the advisor's proposal for one tool: a narrowing applies now, a widening waits for four eyes."""
    agent = get_object_or_404(agents_with_perm(request.user, "configure_agent"), slug=slug)
    agent_tool = get_object_or_404(AgentTool.objects.select_related("agent"), agent=agent, tool=tool)
    try:
        outcome = advisor.advice_adopt(agent_tool=agent_tool, actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("ops:trust", slug=agent.slug)
    if outcome.applied:
        messages.success(request, f"{tool}: applied (it narrows autonomy, so it does not wait).")
    else:
        messages.warning(request, f"{tool}: waiting for a second admin: " + "; ".join(outcome.risky))
    return redirect("ops:trust", slug=agent.slug)


@require_POST
@login_required
def agent_trust_refit(request: AuthedRequest, slug: str) -> HttpResponse:
    """Refit the agent's calibration maps now instead of at the next periodic job."""
    agent = get_object_or_404(agents_with_perm(request.user, "operate_agent"), slug=slug)
    tools = AgentTool.objects.filter(agent=agent, enabled=True).values_list("tool", flat=True)
    calibration_refit_agent(agent_id=agent.pk, tools=tools)
    messages.success(request, "Calibration refitted.")
    return redirect("ops:trust", slug=agent.slug)


def _chart(
    health: dict[str, Any],
    series: list[dict[str, Any]],
    key: str,
    *,
    unit: str,
    bucket: str = "bucket",
    step: timedelta | None = None,
) -> dict[str, Any]:
    return charts.timeseries(
        series, key, start=health["since"], end=health["until"], step=step or health["step"], unit=unit, bucket=bucket
    )


@login_required
def alert_rules(request: AuthedRequest) -> HttpResponse:
    operable = agents_with_perm(request.user, "operate_agent")
    if request.method == "POST":
        form = AlertRuleForm(request.POST, agents=operable)
        if form.is_valid():
            with transaction.atomic():
                rule = form.save(commit=False)
                rule.created_by = request.user
                rule.save()
                record(
                    actor=request.user,
                    event="alert_rule.created",
                    target=rule,
                    agent_id=rule.agent_id,
                    after=form.audit_view(),
                )
            messages.success(request, f"Alert rule {rule.name!r} created.")
            return redirect("ops:alerts")
    else:
        form = AlertRuleForm(agents=operable)
    rules = AlertRule.objects.filter(agent__in=operable) | AlertRule.objects.filter(agent__isnull=True)
    context = {
        "form": form,
        "rules": rules.select_related("agent").order_by("name"),
        "recent": Alert.objects.filter(agent__in=operable).select_related("rule", "agent").order_by("-id")[:50],
    }
    if request.method == "POST":
        return render_failed_post(request, "ops/alerts.html", context, page_url=reverse("ops:alerts"))
    return render(request, "ops/alerts.html", context)


def _switchable_rules(request: AuthedRequest) -> QuerySet[AlertRule]:
    # A rule for one agent is for whoever operates it; a rule for all agents covers
    # the agents its creator operates, so it is the creator's to switch.
    operable = agents_with_perm(request.user, "operate_agent")
    return AlertRule.objects.filter(Q(agent__in=operable) | Q(agent__isnull=True, created_by=request.user))


@require_POST
@login_required
def alert_rule_toggle(request: AuthedRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(_switchable_rules(request), pk=rule_id)
    if not alerts.alert_rule_switch(rule=rule, actor=request.user, enabled=not rule.enabled):
        messages.info(request, "Someone changed this rule a moment ago; here it is as it is now.")
    return redirect("ops:alerts")


@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    return metrics.metrics_view(request)
