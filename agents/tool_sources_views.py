"""Admins' pages for tool sources (upstream MCP servers, HTTP tools) and for making agents in the browser."""

from __future__ import annotations

import difflib
import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents import services, upstream
from agents.models import ProviderName, SourceKind, ToolSource, UpstreamState, UpstreamTool
from agents.tools import Impact
from core.errors import DomainError
from core.inbound import InputRefused, parse_json
from core.pages import act_and_redirect, render_failed_post
from core.requests import AuthedRequest


def _admin(request: AuthedRequest, perm: str = "agents.add_toolsource") -> None:
    if not request.user.has_perm(perm):
        raise Http404  # an outsider gets no hint that the page exists


def _json_field(request: AuthedRequest, name: str, default: Any) -> Any:
    raw = request.POST.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_json(raw, path=name)
    except InputRefused as exc:
        raise DomainError(str(exc), code=exc.code) from exc


def _diff(tool: UpstreamTool) -> str:
    """The approved definition against the current one, as a unified diff (a suspended tool's change)."""
    if tool.approved_definition is None or tool.state != UpstreamState.SUSPENDED:
        return ""
    before = json.dumps(tool.approved_definition, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    after = json.dumps(tool.definition(), indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    return "\n".join(difflib.unified_diff(before, after, "approved", "now", lineterm=""))


def _page(request: AuthedRequest, *, status: int = 200, error: str = "", form: Any = None) -> HttpResponse:
    sources = list(ToolSource.objects.prefetch_related("tools").order_by("slug"))
    rows = [
        (source, [(tool, _diff(tool)) for tool in sorted(source.tools.all(), key=lambda t: t.name)])
        for source in sources
    ]
    context = {
        "rows": rows,
        "commands": settings.UPSTREAM_STDIO_COMMANDS,
        "impacts": Impact.values,
        "methods": upstream.HTTP_METHODS,
        "error": error,
        "form": form or {},
    }
    if status == 200:
        return render(request, "agents/tool_sources.html", context)
    return render_failed_post(
        request, "agents/tool_sources.html", context, page_url=reverse("agents:tool_sources"), status=status
    )


@require_GET
@login_required
def tool_sources(request: AuthedRequest) -> HttpResponse:
    _admin(request)
    return _page(request)


@require_POST
@login_required
def tool_source_add(request: AuthedRequest) -> HttpResponse:
    _admin(request)
    form = request.POST
    try:
        kind = form.get("kind", "")
        if kind == SourceKind.HTTP:
            tool = upstream.http_tool_create(
                actor=request.user,
                slug=form.get("slug", "").strip(),
                description=form.get("description", ""),
                method=form.get("method", ""),
                url=form.get("url", "").strip(),
                input_schema=_json_field(request, "input_schema", {}),
                impact=form.get("impact", ""),
                headers=_json_field(request, "headers", {}),
                magnitude_pointer=form.get("magnitude_pointer", "").strip(),
                timeout=float(form.get("timeout") or 10),
                retries=int(form.get("retries") or 0),
                idempotency_header=form.get("idempotency_header", "Idempotency-Key").strip(),
            )
            messages.success(request, f"HTTP tool {tool.name} added, disabled until you approve it below.")
            return redirect("agents:tool_sources")
        source = upstream.source_create(
            actor=request.user,
            slug=form.get("slug", "").strip(),
            kind=kind,
            command=form.get("command", ""),
            args=[line.strip() for line in form.get("args", "").splitlines() if line.strip()],
            env=_json_field(request, "env", {}),
            url=form.get("url", "").strip(),
            headers=_json_field(request, "headers", {}),
        )
    except (DomainError, ValueError) as exc:
        message = exc.message if isinstance(exc, DomainError) else f"not a number: {exc}"
        return _page(request, status=400, error=message, form=form)
    report = upstream.source_sync(source=source, actor=request.user)
    _report(request, source, report)
    return redirect("agents:tool_sources")


def _report(request: AuthedRequest, source: ToolSource, report: upstream.SyncReport) -> None:
    if report.error:
        messages.error(request, f"{source.slug}: could not list its tools: {report.error}")
        return
    parts = [
        f"{len(report.discovered)} new (disabled until approved)" if report.discovered else "",
        f"{len(report.suspended)} suspended: their definition changed" if report.suspended else "",
        f"{len(report.gone)} no longer offered" if report.gone else "",
    ]
    messages.success(request, f"{source.slug} listed: " + (", ".join(p for p in parts if p) or "no change") + ".")


@require_POST
@login_required
def tool_source_sync(request: AuthedRequest, slug: str) -> HttpResponse:
    _admin(request)
    source = get_object_or_404(ToolSource, slug=slug)
    try:
        _report(request, source, upstream.source_sync(source=source, actor=request.user))
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("agents:tool_sources")


@require_POST
@login_required
def upstream_tool_approve(request: AuthedRequest, name: str) -> HttpResponse:
    _admin(request)
    tool = get_object_or_404(UpstreamTool, name=name)
    impact = request.POST.get("impact") or None

    def approve() -> str:
        upstream.upstream_tool_approve(
            tool=tool, actor=request.user, definition_hash_seen=request.POST.get("definition_hash", ""), impact=impact
        )
        return f"{tool.name} approved: agents can now be given it on their configuration page."

    return act_and_redirect(request, approve, to=reverse("agents:tool_sources"))


@require_http_methods(["GET", "POST"])
@login_required
def agent_new(request: AuthedRequest) -> HttpResponse:
    """Make an agent; its tools, thresholds and limits are then set on its configuration page (four eyes there)."""
    _admin(request, "agents.add_agent")
    context = {"providers": ProviderName.choices, "form": request.POST if request.method == "POST" else {}}
    if request.method == "GET":
        return render(request, "agents/agent_new.html", context)
    form = request.POST
    try:
        agent = services.agent_create_for(
            actor=request.user,
            slug=form.get("slug", "").strip(),
            name=form.get("name", "").strip(),
            description=form.get("description", ""),
            provider=form.get("provider", ""),
            model=form.get("model", "").strip(),
            base_url=form.get("base_url", "").strip(),
            api_key_ref=form.get("api_key_ref", "").strip(),
            system_prompt=form.get("system_prompt", ""),
            input_schema=_json_field(request, "input_schema", {}),
            review_threshold=float(form.get("review_threshold") or 0.8),
            max_steps=int(form.get("max_steps") or 8),
        )
    except (DomainError, ValueError) as exc:
        context["error"] = exc.message if isinstance(exc, DomainError) else f"not a number: {exc}"
        return render_failed_post(
            request, "agents/agent_new.html", context, page_url=reverse("agents:agent_new"), status=400
        )
    messages.success(request, f"{agent.slug} made. Give it tools and limits here; every tool starts disabled.")
    return redirect("agents:configure", slug=agent.slug)
