"""What agents shows live: the notice of a halted run on its operators' pages, and an open run page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.template.loader import render_to_string

from agents.models import Run
from agents.selectors import run_page
from live.groups import operator_group, run_group
from live.push import RUN_CHANGED, RUN_NEEDS_OPERATOR
from live.relay import Frame, html, renders


@renders(RUN_NEEDS_OPERATOR)
def run_needs_operator(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    runs = Run.objects.select_related("agent").filter(pk__in=[int(p["run_id"]) for p in payloads]).order_by("id")
    for run in runs:
        yield operator_group(run.agent_id), html(render_to_string("agents/_run_notice.html", {"run": run}))


@renders(RUN_CHANGED)
def run_changed(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    """The live part of a run page, to the sockets of that page (approvals.pushes.audience checks who may)."""
    ids = sorted({int(p["run_id"]) for p in payloads})
    for run in Run.objects.select_related("agent", "created_by").filter(pk__in=ids).order_by("id"):
        yield run_group(run.pk), html(render_to_string("agents/_run_live.html", {**run_page(run), "oob": True}))
