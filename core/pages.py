"""How a page answers a form post that failed: the page again, with the errors, at the page's own URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django_htmx.http import replace_url

from core.errors import DomainError
from core.requests import AuthedRequest


def render_failed_post(
    request: AuthedRequest, template: str, context: dict[str, Any], *, page_url: str, status: int = 400
) -> HttpResponse:
    """Re-render the page with its errors; the address bar shows the page, not the POST URL.

    A successful post redirects (post/redirect/get). A failed one cannot (the
    errors would be lost), so the browser is told the URL this response stands
    for: htmx takes it from HX-Replace-Url, a plain form's page from
    `data-page-url` (static/js/app.js replaces the history entry, so a reload is
    a GET of the page and does not post the form again).
    """
    response = render(request, template, {**context, "page_url": page_url}, status=status)
    if request.htmx:
        replace_url(response, page_url)
    return response


def act_and_redirect(request: HttpRequest, act: Callable[[], str], *, to: str) -> HttpResponse:
    """Run a service for a form post; its message (or the domain error's) goes to the page it redirects to."""
    try:
        messages.success(request, act())
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect(to)
