"""Agent and run pages: start a run, follow its trace."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from agents import selectors, services
from agents.errors import DomainError
from config.requests import AuthedRequest


@require_GET
@login_required
def agent_list(request: AuthedRequest) -> HttpResponse:
    operable = set(selectors.agents_with_perm(request.user, "operate_agent").values_list("pk", flat=True))
    agents = list(selectors.agents_visible_to(request.user).prefetch_related("tools"))
    runs = list(selectors.runs_visible_to(request.user).order_by("-id")[:25])
    return render(request, "agents/agent_list.html", {"agents": agents, "operable": operable, "runs": runs})


@require_POST
@login_required
def run_start(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = get_object_or_404(selectors.agents_with_perm(request.user, "operate_agent"), slug=slug)
    try:
        try:
            payload = json.loads(request.POST.get("input", ""))
        except json.JSONDecodeError as exc:
            raise DomainError(f"input is not valid JSON: {exc.msg}", code="malformed_json") from exc
        run = services.run_start(agent=agent, input=payload, actor=request.user)
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
    }
    return render(request, "agents/run_detail.html", context)
