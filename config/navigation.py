"""The top navigation and where each role lands: only the pages a person can act on, with pending counts.

Composition root: it reads the rights every app defines. Rights per agent are guardian
object permissions (`agents.selectors.agent_perms_held`, one query); the badges come
from the maintained queue counts and a bounded count of open spot checks (one query
each), so the header costs a constant number of queries on every page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET

from agents.selectors import agent_perms_held
from approvals.selectors import SPOT_CHECK_COUNT_CAP, config_queue_count, open_spot_check_count, queue_counts


@dataclass(frozen=True)
class Section:
    label: str
    url: str
    # Pending items waiting for this person there; None where nothing waits.
    badge: int | None = None
    # The badge is a floor: counting stopped there (shown as "1000+").
    more: bool = False


def sections_for(user: Any) -> list[Section]:
    """The sections `user` can act on, in the order of the header."""
    if not user.is_authenticated:
        return []
    held = agent_perms_held(user)
    reviews = bool(held & {"review_agent", "review_escalated_agent"})
    operates = "operate_agent" in held
    configures = "configure_agent" in held
    audits = user.has_perm("audit.view_auditevent")
    sections = []
    if reviews:
        sections.append(Section("Inbox", reverse("approvals:inbox"), sum(q["pending"] for q in queue_counts(user))))
    if "review_agent" in held:
        # Spot checks are of auto-approved actions, which stay at the first tier.
        open_checks = open_spot_check_count(user)
        sections.append(
            Section("Spot checks", reverse("approvals:spot_checks"), open_checks, open_checks >= SPOT_CHECK_COUNT_CAP)
        )
    if reviews or operates or configures:
        sections.append(Section("Agents & runs", reverse("agents:agent_list")))
    if configures:
        sections.append(Section("Changes", reverse("approvals:changes"), config_queue_count(user)))
    if operates or configures:
        sections.append(Section("Operations", reverse("ops:exceptions")))
    if audits:
        sections.append(Section("Audit", reverse("audit:log")))
    if audits or user.has_perm("accounts.manage_access"):
        sections.append(Section("Access", reverse("accounts:access")))
    return sections


# Where each kind of work is, in the order a person with several rights lands: deciding first.
LANDING = ("Inbox", "Operations", "Audit", "Agents & runs", "Changes", "Access")


def navigation(request: HttpRequest) -> dict[str, Any]:
    """Template context: the header's sections (computed once per request, and only when a page asks)."""
    cached: list[Section] | None = None

    def sections() -> list[Section]:
        nonlocal cached
        if cached is None:
            cached = sections_for(request.user)
        return cached

    return {"nav_sections": sections, "undo_seconds": settings.DECISION_UNDO_SECONDS}


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    """After login, and from the brand link: the page where this person's work is."""
    by_label = {section.label: section.url for section in sections_for(request.user)}
    for label in LANDING:
        if label in by_label:
            return redirect(by_label[label])
    return redirect("agents:agent_list")
