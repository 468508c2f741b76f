"""Reviewer pages: the live inbox, an action's detail, and the decision form."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from agents.errors import DomainError
from agents.guard import GuardRefusal, validate_arguments
from agents.selectors import run_steps
from agents.tools import get_tool
from approvals import execution, selectors, services
from approvals.models import ActionRequest, ActionStatus, Verdict
from config.requests import AuthedRequest

PAGE_SIZE = 50


def _reviewable_action(request: AuthedRequest, action_id: int) -> ActionRequest:
    # Anyone who may not review the agent gets a 404, not a hint that it exists.
    return get_object_or_404(selectors.actions_reviewable_by(request.user), pk=action_id)


@require_GET
@login_required
def inbox(request: AuthedRequest) -> HttpResponse:
    before = request.GET.get("before")
    actions = selectors.inbox_for(
        request.user, before=int(before) if before and before.isdigit() else None, limit=PAGE_SIZE + 1
    )
    context = {
        "actions": actions[:PAGE_SIZE],
        "next_before": actions[PAGE_SIZE - 1].pk if len(actions) > PAGE_SIZE else None,
    }
    template = "approvals/inbox.html#rows" if request.htmx else "approvals/inbox.html"
    return render(request, template, context)


@require_GET
@login_required
def action_detail(request: AuthedRequest, action_id: int) -> HttpResponse:
    action = _reviewable_action(request, action_id)
    tool = get_tool(action.tool)
    preview = None
    if tool is not None and tool.preview is not None and action.status == ActionStatus.PENDING:
        checked = validate_arguments(tool, action.arguments)
        preview = None if isinstance(checked, GuardRefusal) else tool.preview(checked)
    context = {
        "action": action,
        "arguments_json": json.dumps(action.arguments, indent=2, ensure_ascii=False),
        "preview": preview,
        "steps": run_steps(action.run) if action.run else [],
        "can_decide": action.status == ActionStatus.PENDING,
        "can_undo": action.status == ActionStatus.EXECUTED and tool is not None and tool.compensate is not None,
        "in_doubt": action.status == ActionStatus.IN_DOUBT,
    }
    return render(request, "approvals/action_detail.html", context)


@require_POST
@login_required
def action_decide(request: AuthedRequest, action_id: int) -> HttpResponse:
    action = _reviewable_action(request, action_id)
    verdict = request.POST.get("verdict", "")
    arguments = None
    try:
        if verdict == Verdict.EDIT:
            try:
                arguments = json.loads(request.POST.get("arguments", ""))
            except json.JSONDecodeError as exc:
                raise DomainError(f"arguments are not valid JSON: {exc.msg}", code="malformed_json") from exc
        services.action_request_decide(
            action=action,
            actor=request.user,
            verdict=verdict,
            arguments=arguments,
            comment=request.POST.get("comment", ""),
        )
    except DomainError as exc:
        if request.htmx:
            return render(
                request,
                "approvals/action_detail.html#decision_error",
                {"action": action, "error": exc.message},
                status=exc.status,
            )
        messages.error(request, exc.message)
        return redirect("approvals:action_detail", action_id=action.pk)
    if request.htmx and request.POST.get("from") == "inbox":
        return HttpResponse("")  # the row swaps itself out; other inboxes hear it over the socket
    messages.success(request, f"Action {action.pk}: {verdict} recorded.")
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = request.POST.get("next") or "/"
        return response
    return redirect("approvals:inbox")


@require_POST
@login_required
def action_undo(request: AuthedRequest, action_id: int) -> HttpResponse:
    action = _reviewable_action(request, action_id)
    try:
        execution.action_undo(action=action, actor=request.user, comment=request.POST.get("comment", ""))
        messages.success(request, f"Action {action.pk} undone.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("approvals:action_detail", action_id=action.pk)


@require_POST
@login_required
def action_resolve(request: AuthedRequest, action_id: int) -> HttpResponse:
    action = _reviewable_action(request, action_id)
    try:
        execution.action_resolve_in_doubt(
            action=action,
            actor=request.user,
            executed=request.POST.get("executed") == "yes",
            comment=request.POST.get("comment", ""),
        )
        messages.success(request, f"Action {action.pk} resolved.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("approvals:action_detail", action_id=action.pk)
