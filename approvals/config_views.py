"""The changes queue and the configuration posts that can put a change in it (four eyes)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from agents import configuration
from agents.forms import AgentSettingsForm, PromptForm, tool_policy_forms
from agents.models import Agent, AgentTool, PromptVersion
from agents.services import agent_settings
from agents.views import config_context, configurable, configure_failed
from approvals import four_eyes, selectors
from approvals.config_tools import ACTIVATE_PROMPT
from approvals.models import ActionRequest
from core.errors import DomainError
from core.requests import AuthedRequest


@require_POST
@login_required
def agent_configure_save(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = configurable(request, slug)
    settings_form = AgentSettingsForm(request.POST, instance=Agent.objects.get(pk=agent.pk), prefix="agent")
    tool_forms = tool_policy_forms(agent, request.POST)
    valid = settings_form.is_valid() & all([form.is_valid() for _, form in tool_forms])
    if not valid:
        messages.error(request, "Nothing was saved: fix the highlighted fields.")
        context = config_context(agent, settings_form=settings_form, tool_forms=tool_forms)
        return configure_failed(request, agent, context, status=400)
    tools = {
        tool.name: form.settings() for tool, form in tool_forms if form.instance.pk or form.cleaned_data.get("enabled")
    }
    try:
        outcome = four_eyes.agent_configure(
            agent=agent, actor=request.user, settings=settings_form.settings(), tools=tools
        )
    except DomainError as exc:
        messages.error(request, f"Nothing was saved: {exc.message}")
        context = config_context(agent, settings_form=settings_form, tool_forms=tool_forms)
        return configure_failed(request, agent, context, status=exc.status)
    if not outcome.changed:
        messages.info(request, "No changes.")
    elif outcome.applied:
        messages.success(request, "Saved.")
    else:
        messages.warning(request, "Waiting for a second admin (nothing applied yet): " + "; ".join(outcome.risky))
    return redirect("agents:configure", slug=agent.slug)


@require_POST
@login_required
def prompt_propose(request: AuthedRequest, slug: str) -> HttpResponse:
    agent = configurable(request, slug)
    form = PromptForm(request.POST)
    if not form.is_valid():
        return configure_failed(request, agent, config_context(agent, prompt_form=form), status=400)
    try:
        version, _ = four_eyes.prompt_propose(
            agent=agent, actor=request.user, text=form.cleaned_data["text"], note=form.cleaned_data["note"]
        )
        messages.warning(request, f"Prompt v{version.number} proposed; it goes live when a second admin approves it.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("agents:configure", slug=agent.slug)


@require_GET
@login_required
def config_changes(request: AuthedRequest) -> HttpResponse:
    proposals = selectors.config_queue_for(request.user)
    rows = [
        {"proposal": p, "change": change_context(p), "own": p.submitted_by_id == request.user.pk} for p in proposals
    ]
    live_rows = selectors.with_row_data(ActionRequest.objects.filter(pk__in=[p.pk for p in proposals])).order_by("id")
    template = "approvals/changes.html#rows" if request.htmx else "approvals/changes.html"
    return render(request, template, {"rows": rows, "proposals": live_rows})


def change_context(proposal: ActionRequest) -> dict[str, Any]:
    """What a configuration change would do, for people: settings old → new, or the prompt side by side.

    "Before" is the agent as it is now, so a decided change compares against what it left behind.
    """
    agent = proposal.agent
    if proposal.tool == ACTIVATE_PROMPT.name:
        version = PromptVersion.objects.filter(pk=proposal.arguments.get("version")).first()
        active = configuration.active_prompt(agent)
        return {
            "kind": "prompt",
            "title": f"new prompt, version {version.number}" if version else "a prompt version that no longer exists",
            "note": version.note if version else "",
            "before": active.text if active else "",
            "after": version.text if version else "",
        }
    wanted = proposal.arguments if isinstance(proposal.arguments, dict) else {}
    agent_after = wanted.get("agent") or {}
    current = agent_settings(agent)
    tools = []
    policies = {t.tool: t for t in AgentTool.objects.filter(agent=agent, tool__in=list(wanted.get("tools") or {}))}
    for tool, after in (wanted.get("tools") or {}).items():
        policy = policies.get(tool)
        now = configuration.tool_settings(policy) if policy else {}
        tools.append({"tool": tool, "before": {k: now.get(k) for k in after}, "after": after, "new": policy is None})
    return {
        "kind": "settings",
        "title": "settings and tool policies",
        "before": {k: current.get(k) for k in agent_after},
        "after": agent_after,
        "tools": tools,
        "evidence": wanted.get("evidence"),
    }
