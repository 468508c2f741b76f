"""Agent and run pages: start a run, follow its trace."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from agents import breakers, selectors, services
from agents.errors import DomainError
from agents.models import AgentTool, Run, RunPriority, RunStatus
from agents.tools import all_tools
from config.requests import AuthedRequest


@require_GET
@login_required
def agent_list(request: AuthedRequest) -> HttpResponse:
    operable = set(selectors.agents_with_perm(request.user, "operate_agent").values_list("pk", flat=True))
    agents = list(selectors.agents_visible_to(request.user).prefetch_related("tools"))
    runs = list(selectors.runs_visible_to(request.user).order_by("-id")[:25])
    halted = list(selectors.runs_visible_to(request.user).filter(status=RunStatus.HALTED).order_by("-id")[:50])
    context = {
        "agents": agents,
        "operable": operable,
        "runs": runs,
        "halted": halted,
        "breakers": list(selectors.breakers_visible_to(request.user)),
        "priorities": RunPriority.choices,
    }
    return render(request, "agents/agent_list.html", context)


@require_GET
@login_required
def tool_catalogue(request: AuthedRequest) -> HttpResponse:
    enabled: dict[str, list[AgentTool]] = {}
    visible = selectors.agents_visible_to(request.user)
    for agent_tool in AgentTool.objects.filter(agent__in=visible).select_related("agent").order_by("agent__slug"):
        enabled.setdefault(agent_tool.tool, []).append(agent_tool)
    rows = [
        {
            "tool": tool,
            # Flags computed here: the template language would call these callables.
            "reversible": tool.compensate is not None,
            "previewable": tool.preview is not None,
            "schema": json.dumps(tool.json_schema(), indent=2),
            "enabled": enabled.get(tool.name, []),
        }
        for tool in all_tools()
    ]
    return render(request, "agents/tool_catalogue.html", {"rows": rows})


@require_POST
@login_required
def run_resume(request: AuthedRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(selectors.runs_operable_by(request.user), pk=run_id)
    try:
        services.run_resume(run=run, actor=request.user)
        messages.success(request, f"Run {run.pk} resumed.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("agents:run_detail", run_id=run.pk)


@require_POST
@login_required
def run_cancel(request: AuthedRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(selectors.runs_operable_by(request.user), pk=run_id)
    try:
        services.run_cancel(run=run, actor=request.user)
        messages.success(request, f"Run {run.pk} cancelled.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("agents:run_detail", run_id=run.pk)


@require_POST
@login_required
def breaker_reset(request: AuthedRequest, breaker_id: int) -> HttpResponse:
    breaker = get_object_or_404(selectors.breakers_operable_by(request.user), pk=breaker_id)
    breakers.breaker_reset(breaker=breaker, actor=request.user)
    messages.success(request, f"Breaker {breaker.agent.slug}:{breaker.tool or 'model'} reset.")
    return redirect("agents:agent_list")


@require_POST
@login_required
def run_start(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = get_object_or_404(selectors.agents_with_perm(request.user, "operate_agent"), slug=slug)
    try:
        try:
            payload = json.loads(request.POST.get("input", ""))
        except json.JSONDecodeError as exc:
            raise DomainError(f"input is not valid JSON: {exc.msg}", code="malformed_json") from exc
        priority = int(request.POST.get("priority") or RunPriority.ROUTINE)
        run = services.run_start(agent=agent, input=payload, actor=request.user, priority=priority)
    except DomainError as exc:
        messages.error(request, f"{agent.slug}: {exc.message}")
        return redirect("agents:agent_list")
    return redirect("agents:run_detail", run_id=run.pk)


@require_GET
@login_required
def run_detail(request: AuthedRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=run_id)
    context = {
        "run": run,
        "steps": selectors.run_steps(run),
        "actions": run.actions.select_related("decision__reviewer").order_by("id"),
        "subruns": Run.objects.filter(parent_action__run=run).select_related("agent").order_by("id"),
        "can_operate": selectors.agents_with_perm(request.user, "operate_agent").filter(pk=run.agent_id).exists(),
    }
    return render(request, "agents/run_detail.html", context)
