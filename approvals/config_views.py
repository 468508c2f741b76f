"""The changes queue and the configuration posts that can put a change in it (four eyes)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agents import configuration
from agents.forms import AgentSettingsForm, PromptForm, tool_policy_forms
from agents.models import Agent, AgentTool, PromptStatus, PromptVersion
from agents.services import agent_settings
from agents.views import config_context, configurable, configure_failed
from approvals import four_eyes, prompt_release, selectors
from approvals.config_tools import ACTIVATE_PROMPT
from approvals.models import ActionRequest, ActionStatus
from core.background import enqueue_on_commit
from core.errors import DomainError
from core.pages import render_failed_post
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
        version = prompt_release.proposed_version(proposal)
        active = configuration.active_prompt(agent)
        return {
            "kind": "prompt",
            "title": f"new prompt, version {version.number}" if version else "a prompt version that no longer exists",
            "note": version.note if version else "",
            "before": active.text if active else "",
            "after": version.text if version else "",
            "golden": golden_context(version, action_id=proposal.pk) if version else None,
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


def golden_context(version: PromptVersion, *, action_id: int) -> dict[str, Any]:
    """The golden set's verdict on a prompt version, for the approver: agreement beside the active version's."""
    standing = prompt_release.prompt_standing(version)
    evaluation = standing.evaluation
    refusal = standing.refusal() if version.status == PromptStatus.PROPOSED else None
    context: dict[str, Any] = {
        "standing": standing,
        "action_id": action_id,
        "minimum": prompt_release.GOLDEN_SET_MIN,
        "can_evaluate": version.status == PromptStatus.PROPOSED and standing.needed == 0,
        "refusal": refusal.message if refusal is not None else "",
        "overridable": refusal is not None and refusal.code == "prompt_regression",
    }
    if evaluation is not None:
        context["proposed"] = f"{evaluation.agreed}/{evaluation.cases} ({prompt_release.percent(evaluation.agreement)})"
        context["active"] = (
            f"{evaluation.baseline_agreed}/{evaluation.cases} ({prompt_release.percent(evaluation.baseline_agreement)})"
            if evaluation.baseline is not None
            else None
        )
        context["cases"] = [_case_row(case) for case in evaluation.details if isinstance(case, dict)]
    return context


def _case_row(case: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": case.get("run_id"),
        "expected": _call_text(case.get("expected")),
        "candidate": _call_text(case.get("candidate")),
        "baseline": _call_text(case.get("baseline")),
        "agreed": bool(case.get("agreed")),
        "baseline_agreed": bool(case.get("baseline_agreed")),
    }


def _call_text(call: Any) -> str:
    """One proposed call in a line: the tool and its arguments, the answer given instead, or the provider's error."""
    if not isinstance(call, dict):
        return "—"
    if "tool" in call:
        return f"{call['tool']} {json.dumps(call.get('arguments'), sort_keys=True, ensure_ascii=False, default=str)}"
    if "answer" in call:
        return f"answered instead: {call['answer']}"
    return f"provider error: {call.get('error')}: {call.get('message', '')}"


def change_page(
    request: AuthedRequest, action: ActionRequest, *, error: str = "", status: int = 200, **extra: Any
) -> HttpResponse:
    """A configuration change's own page; after a refused decision, again with the reason and the 4xx."""
    context = {
        "action": action,
        "change": change_context(action),
        "can_decide": action.status == ActionStatus.PENDING,
        "own": action.submitted_by_id == request.user.pk,
        "error": error,
        **extra,
    }
    if status == 200:
        return render(request, "approvals/change_detail.html", context)
    page = reverse("approvals:action_detail", args=[action.pk])
    return render_failed_post(request, "approvals/change_detail.html", context, page_url=page, status=status)


@require_POST
@login_required
def prompt_evaluate_again(request: AuthedRequest, action_id: int) -> HttpResponse:
    """Replay the golden set against the change's prompt version again (the admins who may decide it)."""
    # Tier 0 is reviewable only by those who may configure the agent; anyone else gets a 404.
    action = get_object_or_404(selectors.actions_reviewable_by(request.user).filter(tier=0), pk=action_id)
    version = prompt_release.proposed_version(action)
    if version is None or version.status != PromptStatus.PROPOSED:
        return change_page(request, action, error="only a prompt version still waiting can be evaluated", status=409)
    if prompt_release.golden_set_size(action.agent_id) < prompt_release.GOLDEN_SET_MIN:
        return change_page(
            request,
            action,
            error=f"no golden set yet: {prompt_release.GOLDEN_SET_MIN} confirmed runs are needed",
            status=409,
        )
    enqueue_on_commit(configuration.EVALUATE_PROMPT, version.pk, request.user.pk)
    messages.info(request, f"Prompt v{version.number} is being replayed against the golden set.")
    return redirect("approvals:action_detail", action_id=action.pk)
