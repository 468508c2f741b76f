"""What agents shows live: the notice of a halted run, on its operators' open pages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.template.loader import render_to_string

from agents.models import Run
from live.groups import operator_group
from live.push import RUN_NEEDS_OPERATOR
from live.relay import Frame, html, renders


@renders(RUN_NEEDS_OPERATOR)
def run_needs_operator(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    runs = Run.objects.select_related("agent").filter(pk__in=[int(p["run_id"]) for p in payloads]).order_by("id")
    for run in runs:
        yield operator_group(run.agent_id), html(render_to_string("agents/_run_notice.html", {"run": run}))
