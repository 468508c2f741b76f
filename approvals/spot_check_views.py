"""The spot-check queue: auto-approved actions sampled for grading after the fact, and the grade posts."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from agents.selectors import agents_with_perm
from approvals import selectors, spot_checks
from core.errors import DomainError
from core.pages import render_failed_post
from core.redirects import next_url
from core.requests import AuthedRequest

PAGE_SIZE = 50
PAGE = "approvals/spot_checks.html"


def _before(raw: str) -> int | None:
    return int(raw) if raw.isdecimal() and len(raw) < 19 else None


def _list_context(request: AuthedRequest, params: QueryDict) -> dict[str, Any]:
    filters = selectors.SpotCheckFilters(
        agent=params.get("agent", "")[:50],
        tool=params.get("tool", "")[:100],
        graded=params.get("graded") == "1",
    )
    checks = selectors.spot_checks_for(
        request.user, filters=filters, before=_before(params.get("before", "")), limit=PAGE_SIZE + 1
    )
    page = checks[:PAGE_SIZE]
    query = params.copy()
    query.pop("before", None)
    return {
        "checks": page,
        "filters": filters,
        "next_before": page[-1].pk if len(checks) > PAGE_SIZE else None,
        "query": query.urlencode(),
    }


def _agents(request: AuthedRequest) -> list[str]:
    return list(agents_with_perm(request.user, "review_agent").order_by("slug").values_list("slug", flat=True))


@require_GET
@login_required
def spot_check_list(request: AuthedRequest) -> HttpResponse:
    context = _list_context(request, request.GET)
    if request.htmx:
        return render(request, f"{PAGE}#rows", context)
    return render(request, PAGE, {**context, "agents": _agents(request)})


@require_POST
@login_required
def spot_check_grade(request: AuthedRequest, spot_check_id: int) -> HttpResponse:
    # Anyone who may not review the agent gets a 404, as for its actions.
    check = get_object_or_404(selectors.spot_checks_reviewable_by(request.user), pk=spot_check_id)
    back = next_url(request, reverse("approvals:spot_checks"))
    try:
        graded = spot_checks.spot_check_grade(
            spot_check_id=check.pk,
            actor=request.user,
            grade=request.POST.get("grade", ""),
            comment=request.POST.get("comment", ""),
        )
    except DomainError as exc:
        if request.htmx:
            response = render(request, f"{PAGE}#grade_error", {"error": exc.message}, status=exc.status)
            # Into the page's message area: the row stays, with what the reviewer typed.
            return reswap(retarget(response, "#notices"), "innerHTML")
        # Without JavaScript: the list the reviewer came from, with the error, at that list's URL.
        context = _list_context(request, QueryDict(urlsplit(back).query))
        context.update(agents=_agents(request), error=exc.message)
        return render_failed_post(request, PAGE, context, page_url=back, status=exc.status)
    if request.htmx:
        return render(request, f"{PAGE}#graded", {"check": graded})
    messages.success(request, f"Spot check of {graded.tool} #{graded.action_id}: {graded.get_grade_display()}.")
    return redirect(back)
