"""Agent and run pages: start a run, follow its trace."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agents import breakers, configuration, selectors, services
from agents.forms import AgentSettingsForm, PromptForm, RunInputForm, tool_policy_forms
from agents.models import Agent, AgentTool, PromptEvaluation, PromptStatus, PromptVersion, Run, RunPriority, RunStatus
from agents.tools import all_tools
from core.errors import DomainError
from core.inbound import InputRefused, parse_json
from core.pages import act_and_redirect, render_failed_post
from core.redirects import next_url
from core.requests import AuthedRequest


@require_GET
@login_required
def agent_list(request: AuthedRequest) -> HttpResponse:
    operable = set(selectors.agents_with_perm(request.user, "operate_agent").values_list("pk", flat=True))
    agents = list(selectors.agents_visible_to(request.user).prefetch_related("tools"))
    runs = list(selectors.runs_visible_to(request.user).order_by("-id")[:25])
    halted = list(selectors.runs_visible_to(request.user).filter(status=RunStatus.HALTED).order_by("-id")[:50])
    # Runs are started from a form generated from the agent's input schema (JSON as the alternative).
    context = {
        "agents": [(agent, RunInputForm(agent.input_schema) if agent.pk in operable else None) for agent in agents],
        "operable": operable,
        "configurable": set(selectors.agents_with_perm(request.user, "configure_agent").values_list("pk", flat=True)),
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
    return operate_run(request, run_id, services.run_resume, "resumed")


def operate_run(request: AuthedRequest, run_id: int, service: Callable[..., Run], done: str) -> HttpResponse:
    run = get_object_or_404(selectors.runs_operable_by(request.user), pk=run_id)

    def operate() -> str:
        service(run=run, actor=request.user)
        return f"Run {run.pk} {done}."

    return act_and_redirect(request, operate, to=reverse("agents:run_detail", args=[run.pk]))


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
        payload = _run_input(request, agent)
        raw_priority = request.POST.get("priority") or str(RunPriority.ROUTINE)
        if not raw_priority.isdecimal():
            raise DomainError("priority must be a number", code="invalid_priority")
        priority = int(raw_priority)
        run = services.run_start(agent=agent, input=payload, actor=request.user, priority=priority)
    except DomainError as exc:
        messages.error(request, f"{agent.slug}: {exc.message}")
        return redirect("agents:agent_list")
    return redirect("agents:run_detail", run_id=run.pk)


def _run_input(request: AuthedRequest, agent: Agent) -> Any:
    """The run's input: from the schema form's fields, or from the JSON text when that was sent instead."""
    if request.POST.get("as") != "form":
        try:
            return parse_json(request.POST.get("input", ""), path="input")
        except InputRefused as exc:
            raise DomainError(str(exc), code=exc.code, details=[p.as_dict() for p in exc.problems]) from exc
    form = RunInputForm(agent.input_schema, request.POST)
    if not form.is_valid():
        problems = "; ".join(f"{name}: {' '.join(str(e) for e in errors)}" for name, errors in form.errors.items())
        raise DomainError(f"the run input is incomplete: {problems}", code="invalid_input")
    return form.values()


@require_GET
@login_required
def run_detail(request: AuthedRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=run_id)
    context = selectors.run_page(run)
    if request.htmx:  # a socket reopened: the live part again
        return render(request, "agents/_run_live.html", context)
    context["can_operate"] = selectors.agents_with_perm(request.user, "operate_agent").filter(pk=run.agent_id).exists()
    return render(request, "agents/run_detail.html", context)


def configurable(request: AuthedRequest, slug: str) -> Agent:
    return get_object_or_404(selectors.agents_with_perm(request.user, "configure_agent"), slug=slug)


def config_context(agent: Agent, *, settings_form: Any = None, tool_forms: Any = None, **extra: Any) -> dict[str, Any]:
    if tool_forms is None:
        tool_forms = tool_policy_forms(agent)
    versions = list(PromptVersion.objects.filter(agent=agent).select_related("created_by").order_by("-number"))
    active = next((v for v in versions if v.status == "active"), None)
    # The latest golden-set replay of each version still waiting (one query; the cases stay in the database).
    latest: dict[int, PromptEvaluation] = {}
    waiting = [v.pk for v in versions if v.status == PromptStatus.PROPOSED]
    for evaluation in (
        PromptEvaluation.objects.filter(version_id__in=waiting)
        .defer("details")
        .select_related("baseline")
        .order_by("version_id", "-id")
    ):
        latest.setdefault(evaluation.version_id, evaluation)
    return {
        "agent": agent,
        "settings_form": settings_form or AgentSettingsForm(instance=agent, prefix="agent"),
        "tool_forms": tool_forms,
        "prompt_form": extra.pop("prompt_form", None) or PromptForm(initial={"text": active.text if active else ""}),
        "versions": versions,
        "version_rows": [(v, latest.get(v.pk)) for v in versions],
        "active": active,
        **extra,
    }


@require_GET
@login_required
def agent_configure(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = configurable(request, slug)
    return render(request, "agents/configure.html", config_context(agent))


def configure_failed(request: AuthedRequest, agent: Agent, context: dict[str, Any], *, status: int) -> HttpResponse:
    page = reverse("agents:configure", kwargs={"slug": agent.slug})
    return render_failed_post(request, "agents/configure.html", context, page_url=page, status=status)


@require_POST
@login_required
def prompt_rollback(request: AuthedRequest, slug: str, number: int) -> HttpResponse:
    agent = configurable(request, slug)
    version = get_object_or_404(PromptVersion, agent=agent, number=number)

    def rollback() -> str:
        configuration.prompt_rollback(agent=agent, version=version, actor=request.user)
        return f"Prompt v{number} is active again."

    return act_and_redirect(request, rollback, to=reverse("agents:configure", kwargs={"slug": agent.slug}))


@require_POST
@login_required
def agent_pause(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = get_object_or_404(selectors.agents_with_perm(request.user, "operate_agent"), slug=slug)
    paused = request.POST.get("paused") == "1"
    configuration.agent_set_paused(agent=agent, actor=request.user, paused=paused)
    messages.success(request, f"{agent.slug} {'paused' if paused else 'resumed'}.")
    return redirect(next_url(request, reverse("agents:agent_list")))
