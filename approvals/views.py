"""Reviewer pages: the live inbox, an action's detail, decisions, claims, bulk decisions, the interventions export."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from agents.guard import GuardRefusal, guard_edited_call, validate_arguments
from agents.selectors import agent_perms_held, run_steps
from agents.tools import get_tool
from approvals import claims, decisions, execution, export, selectors
from approvals.config_views import change_page
from approvals.forms import REJECT_REASONS, ArgumentsForm
from approvals.models import ActionRequest, ActionStatus, Notification, Verdict
from core.errors import DomainError, InvalidInput
from core.inbound import InputRefused, parse_json
from core.pages import act_and_redirect, render_failed_post
from core.redirects import next_url
from core.requests import AuthedRequest

PAGE_SIZE = 50
AGE_CHOICES = [
    ("", "any age"),
    ("newer:15", "newer than 15 min"),
    ("older:15", "older than 15 min"),
    ("older:60", "older than 1 h"),
]


def _reviewable_action(request: AuthedRequest, action_id: int) -> ActionRequest:
    # Anyone who may not review the agent gets a 404, not a hint that it exists.
    action = selectors.action_reviewable_by(request.user, action_id)
    if action is None:
        raise Http404("No such action.")
    return action


def _filters(request: AuthedRequest) -> selectors.InboxFilters:
    age = request.GET.get("age", "")
    older = newer = None
    kind, _, minutes = age.partition(":")
    if minutes.isdecimal() and len(minutes) < 7:
        older = int(minutes) if kind == "older" else None
        newer = int(minutes) if kind == "newer" else None
    return selectors.InboxFilters(
        agent=request.GET.get("agent", "")[:50],
        tool=request.GET.get("tool", "")[:100],
        impact=request.GET.get("impact", "")[:16],
        older_than_minutes=older,
        newer_than_minutes=newer,
    )


@require_GET
@login_required
def inbox(request: AuthedRequest) -> HttpResponse:
    cursor = selectors.InboxCursor.decode(request.GET.get("after", ""))
    filters = _filters(request)
    actions = selectors.inbox_for(request.user, filters=filters, cursor=cursor, limit=PAGE_SIZE + 1)
    page = actions[:PAGE_SIZE]
    query = request.GET.copy()
    query.pop("after", None)
    context: dict[str, Any] = {
        "actions": page,
        "next_after": selectors.InboxCursor.after(page[-1]).encode() if len(actions) > PAGE_SIZE else None,
        "query": query.urlencode(),
        "filters": filters,
        "age": request.GET.get("age", ""),
        "age_choices": AGE_CHOICES,
        "filtered": any([filters.agent, filters.tool, filters.impact, request.GET.get("age")]),
        "now": timezone.now(),
        "reject_reasons": REJECT_REASONS,
    }
    if request.htmx:
        return render(request, "approvals/inbox.html#rows", context)
    context["counts"] = selectors.queue_counts(request.user)
    context["unread"] = len(selectors.unread_notifications(request.user))
    # Someone who may decide nothing sees no bulk controls, and is told where their work is.
    context["reviews"] = bool(agent_perms_held(request.user) & {"review_agent", "review_escalated_agent"})
    return render(request, "approvals/inbox.html", context)


@require_GET
@login_required
def action_detail(request: AuthedRequest, action_id: int) -> HttpResponse:
    action = _reviewable_action(request, action_id)
    if action.tier == 0:
        # A configuration change has its own page: what it changes, not an agent's tool call.
        return change_page(request, action)
    return render(request, "approvals/action_detail.html", _detail_context(request, action))


def _detail_context(request: AuthedRequest, action: ActionRequest, **extra: Any) -> dict[str, Any]:
    tool = get_tool(action.tool)
    preview = None
    edit_form = None
    if tool is not None and action.status == ActionStatus.PENDING and action.tier > 0:
        checked = validate_arguments(tool, action.arguments)
        if tool.preview is not None and not isinstance(checked, GuardRefusal):
            preview = tool.preview(checked)
        edit_form = ArgumentsForm(tool, initial_arguments=action.arguments)
    context = {
        "action": action,
        "arguments_json": json.dumps(action.arguments, indent=2, ensure_ascii=False),
        "preview": preview,
        "edit_form": edit_form,
        "stats": selectors.decision_stats(action),
        "approvals": list(action.approvals.select_related("reviewer").order_by("id")),
        "steps": run_steps(action.run) if action.run else [],
        "can_decide": action.status == ActionStatus.PENDING,
        "can_undo": action.status == ActionStatus.EXECUTED and tool is not None and tool.compensate is not None,
        "in_doubt": action.status == ActionStatus.IN_DOUBT,
        "reject_reasons": REJECT_REASONS,
        "now": timezone.now(),
        "spot_check": selectors.spot_check_of(action),
    }
    context.update(extra)
    return context


@require_POST
@login_required
def action_decide(request: AuthedRequest, action_id: int) -> HttpResponse:
    action = _reviewable_action(request, action_id)
    verdict = request.POST.get("verdict", "")
    comment = request.POST.get("comment", "") or request.POST.get("preset", "")
    edit_form = None
    try:
        arguments = None
        override_reason = _override_reason(request)
        if verdict == Verdict.EDIT:
            arguments, edit_form = _edited_arguments(request, action)
            review = _edit_review(action, arguments) if edit_form is not None else None
            if review is not None and request.POST.get("confirm") != review["digest"]:
                # What the edit changes, recomputed: the reviewer confirms it before it is approved.
                context = _detail_context(request, action, edit_form=edit_form, edit_review=review)
                page = reverse("approvals:action_detail", args=[action.pk])
                return render_failed_post(request, "approvals/action_detail.html", context, page_url=page, status=200)
        decisions.action_request_decide(
            action=action,
            actor=request.user,
            verdict=verdict,
            arguments=arguments,
            comment=comment,
            override_reason=override_reason,
        )
    except DomainError as exc:
        if edit_form is not None and isinstance(exc, InvalidInput):
            edit_form.add_validation_errors(exc.details, exc.message)
        if request.htmx:
            response = render(
                request,
                "approvals/action_detail.html#decision_error",
                {"action": action, "error": exc.message},
                status=exc.status,
            )
            # Into the page's message area: the row or list the button sits in stays as it was.
            return reswap(retarget(response, "#notices"), "innerHTML")
        if action.tier == 0:
            # The change's page again, with the reason (and, for a regressing prompt, the override form).
            return change_page(request, action, error=exc.message, status=exc.status, comment=comment)
        messages.error(request, exc.message)
        if edit_form is not None:
            context = _detail_context(request, action, edit_form=edit_form, error=exc.message)
            page = reverse("approvals:action_detail", args=[action.pk])
            return render_failed_post(
                request, "approvals/action_detail.html", context, page_url=page, status=exc.status
            )
        return redirect("approvals:action_detail", action_id=action.pk)
    if request.htmx and request.POST.get("from") == "inbox":
        # The row swaps itself out (other inboxes hear it over the socket); a toast says what happened.
        return render(request, "approvals/_decided_toast.html", {"action": action, "verdict": verdict})
    messages.success(request, f"Action {action.pk}: {verdict} recorded.")
    return redirect(next_url(request, "/"))


def _override_reason(request: AuthedRequest) -> str:
    """The written reason to approve a prompt version that regresses on the golden set, when the box is ticked."""
    if request.POST.get("override") != "1":
        return ""
    reason = request.POST.get("override_reason", "").strip()
    if not reason:
        raise InvalidInput("an override needs a written reason", code="reason_required")
    return reason


def _edit_review(action: ActionRequest, arguments: Any) -> dict[str, Any] | None:
    """The preview and the tool's findings for the edited arguments beside the agent's, when they differ.

    None when there is nothing to confirm: the same outcome, or arguments the decision will refuse
    with field errors anyway (the guard checks them again when the decision is recorded).
    """
    tool = get_tool(action.tool)
    checked = guard_edited_call(agent=action.agent, tool_name=action.tool, arguments=arguments)
    current = validate_arguments(tool, action.arguments) if tool is not None else None
    if tool is None or isinstance(checked, GuardRefusal) or isinstance(current, GuardRefusal):
        return None
    edited = checked.args
    before = tool.preview(current) if tool.preview is not None and current is not None else {}
    after = tool.preview(edited) if tool.preview is not None else {}
    findings = [asdict(f) for f in tool.stake(edited).findings] if tool.stake is not None else []
    if before == after and not findings:
        return None
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{action.pk}:{canonical}".encode()).hexdigest()[:32]
    return {"digest": digest, "before": before, "after": after, "findings": findings}


def _edited_arguments(request: AuthedRequest, action: ActionRequest) -> tuple[Any, ArgumentsForm | None]:
    if "arguments" in request.POST:  # the raw JSON field, for power users and scripts
        try:
            return parse_json(request.POST["arguments"], path="arguments"), None
        except InputRefused as exc:
            raise InvalidInput(str(exc), code=exc.code, details=[p.as_dict() for p in exc.problems]) from exc
    tool = get_tool(action.tool)
    if tool is None:
        raise InvalidInput(f"tool {action.tool!r} no longer exists", code="unknown_tool")
    form = ArgumentsForm(tool, request.POST)
    if not form.is_valid():
        raise InvalidInput("fix the highlighted fields", code="invalid_arguments")
    return form.values(), form


@require_POST
@login_required
def action_bulk(request: AuthedRequest) -> HttpResponse:
    verdict = request.POST.get("verdict", "")
    if verdict not in (Verdict.APPROVE, Verdict.REJECT):
        messages.error(request, "Bulk decisions are approve or reject.")
        return redirect(next_url(request, "/"))
    ids = [int(i) for i in request.POST.getlist("ids") if i.isdecimal() and len(i) < 19][:200]
    comment = request.POST.get("comment", "") or request.POST.get("preset", "")
    done, failed = [], []
    for action in selectors.actions_reviewable_by(request.user).filter(pk__in=ids):
        try:
            decisions.action_request_decide(action=action, actor=request.user, verdict=verdict, comment=comment)
            done.append(action.pk)
        except DomainError as exc:
            failed.append(f"#{action.pk}: {exc.message}")
    if done:
        messages.success(request, f"{verdict} recorded for {len(done)} of {len(set(ids))} selected action(s).")
    for line in failed:
        messages.error(request, line)
    if unseen := len(set(ids)) - len(done) - len(failed):
        messages.warning(
            request, f"{unseen} of the selected action(s) are not yours to decide; nothing was done to them."
        )
    if not ids:
        messages.info(request, "Nothing selected.")
    return redirect(next_url(request, "/"))


@require_POST
@login_required
def action_claim(request: AuthedRequest, action_id: int) -> HttpResponse:
    action = _reviewable_action(request, action_id)
    try:
        if request.POST.get("release"):
            claims.action_request_release(action=action, actor=request.user)
        else:
            claims.action_request_claim(action=action, actor=request.user)
    except DomainError as exc:
        if request.htmx:
            return HttpResponse(exc.message, status=exc.status)
        messages.error(request, exc.message)
    if request.htmx:
        return HttpResponse(status=204)
    return redirect("approvals:action_detail", action_id=action.pk)


@require_POST
@login_required
def action_undo(request: AuthedRequest, action_id: int) -> HttpResponse:
    action = _reviewable_action(request, action_id)

    def undo() -> str:
        execution.action_undo(action=action, actor=request.user, comment=request.POST.get("comment", ""))
        return f"Action {action.pk} undone."

    return act_and_redirect(request, undo, to=reverse("approvals:action_detail", args=[action.pk]))


@require_POST
@login_required
def action_resolve(request: AuthedRequest, action_id: int) -> HttpResponse:
    action = _reviewable_action(request, action_id)

    def resolve() -> str:
        execution.action_resolve_in_doubt(
            action=action,
            actor=request.user,
            executed=request.POST.get("executed") == "yes",
            comment=request.POST.get("comment", ""),
        )
        return f"Action {action.pk} resolved."

    return act_and_redirect(request, resolve, to=reverse("approvals:action_detail", args=[action.pk]))


@require_GET
@login_required
def notifications(request: AuthedRequest) -> HttpResponse:
    items = list(Notification.objects.filter(user=request.user).order_by("-id")[:100])
    return render(request, "approvals/notifications.html", {"items": items})


@require_POST
@login_required
def notifications_read(request: AuthedRequest) -> HttpResponse:
    Notification.objects.filter(user=request.user, read_at__isnull=True).update(read_at=timezone.now())
    return redirect("approvals:notifications")


@require_GET
@login_required
def export_interventions(request: AuthedRequest) -> HttpResponse | StreamingHttpResponse:
    """The reviewed and spot-checked actions of the agents the user may see, as JSON Lines."""
    try:
        filters = export.parse_filters(request.GET)
    except export.InvalidFilter as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    visible = export.agents_exportable_by(request.user)
    agent_id = None
    if filters.agent:
        # An agent the user may not see answers as one that does not exist.
        agent_id = visible.filter(slug=filters.agent).values_list("pk", flat=True).first()
        if agent_id is None:
            raise Http404("No such agent among those whose actions you may see.")
    elif not visible.exists():
        raise Http404("There is no agent whose actions you may see.")
    export.export_recorded(actor=request.user, filters=filters, agent_id=agent_id)
    response = StreamingHttpResponse(export.jsonl(filters, agents=visible), content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="{filters.filename()}"'
    return response
