"""The audit viewer (for auditors and admins): filter, read each change as a diff, export, see whether the chain holds.

It lives with the access pages, above the agents whose slugs it filters by; the chain itself is `audit`."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime, time
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.access import require_global_perm
from agents.models import Agent
from audit.models import CHAIN_FIELDS, AuditCheckpoint, AuditEvent
from audit.selectors import AuditFilters, audit_events, diff
from audit.services import record
from core.requests import AuthedRequest

PAGE_SIZE = 50
# Every stored field of an event, in chain order: what an export must carry to be verified elsewhere.
EXPORT_FIELDS = CHAIN_FIELDS


def _filters(request: AuthedRequest) -> AuditFilters:
    agent_id = None
    slug = request.GET.get("agent", "")
    if slug:
        agent_id = Agent.objects.filter(slug=slug).values_list("pk", flat=True).first() or -1
    return AuditFilters(
        actor=request.GET.get("actor", "")[:150],
        agent_id=agent_id,
        event=request.GET.get("event", "")[:64],
        since=_day(request.GET.get("since", ""), end=False),
        until=_day(request.GET.get("until", ""), end=True),
    )


def _date_errors(request: AuthedRequest) -> dict[str, str]:
    # A date the filter cannot read is said, not dropped: dropped, it would show
    # (or export) every event as if they matched.
    return {
        name: "Enter a date as YYYY-MM-DD."
        for name in ("since", "until")
        if request.GET.get(name, "") and _day(request.GET[name], end=False) is None
    }


def _day(raw: str, *, end: bool) -> datetime | None:
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").date()
    except ValueError:
        return None
    moment = datetime.combine(day, time.max if end else time.min)
    return timezone.make_aware(moment, timezone.get_fixed_timezone(0))


@require_GET
@login_required
def audit_log(request: AuthedRequest) -> HttpResponse:
    require_global_perm(request, "audit.view_auditevent")
    errors = _date_errors(request)
    qs = audit_events(_filters(request)) if not errors else AuditEvent.objects.none()
    before = request.GET.get("before", "")
    if before.isdecimal() and len(before) < 19:
        qs = qs.filter(seq__lt=int(before))
    rows = list(qs[: PAGE_SIZE + 1])
    page = rows[:PAGE_SIZE]
    query = request.GET.copy()
    query.pop("before", None)
    head = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    context: dict[str, Any] = {
        "events": [{"event": e, "diff": diff(e.before, e.after)} for e in page],
        "next_before": page[-1].seq if len(rows) > PAGE_SIZE else None,
        "query": query.urlencode(),
        "params": request.GET,
        "event_types": sorted(set(AuditEvent.objects.values_list("event", flat=True).distinct()[:200])),
        "head": head,
        "checkpoint": AuditCheckpoint.objects.order_by("-id").first(),
        "errors": errors,
    }
    return render(request, "audit/log.html", context, status=400 if errors else 200)


@require_GET
@login_required
def audit_export(request: AuthedRequest, fmt: str) -> HttpResponse | StreamingHttpResponse:
    require_global_perm(request, "audit.view_auditevent")
    errors = _date_errors(request)
    if errors:
        return HttpResponse(
            "; ".join(f"{name}: {message}" for name, message in errors.items()),
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    filters = _filters(request)
    with transaction.atomic():
        # Reading the trail out is itself on the trail.
        record(actor=request.user, event="audit.exported", after={"format": fmt, "filters": request.GET.dict()})
    rows = audit_events(filters).order_by("seq").iterator(chunk_size=2000)
    if fmt == "csv":
        response = StreamingHttpResponse(_csv(rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="countersign-audit.csv"'
    else:
        response = StreamingHttpResponse(_jsonl(rows), content_type="application/x-ndjson")
        response["Content-Disposition"] = 'attachment; filename="countersign-audit.jsonl"'
    return response


def _as_dict(event: AuditEvent) -> dict[str, Any]:
    row = {name: getattr(event, name) for name in EXPORT_FIELDS}
    row["created_at"] = event.created_at.isoformat()
    return row


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv(rows: Iterator[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for event in rows:
        row = _as_dict(event)
        row["before"] = json.dumps(row["before"], sort_keys=True)
        row["after"] = json.dumps(row["after"], sort_keys=True)
        yield writer.writerow([row[name] for name in EXPORT_FIELDS])


def _jsonl(rows: Iterator[AuditEvent]) -> Iterator[str]:
    for event in rows:
        yield json.dumps(_as_dict(event), sort_keys=True) + "\n"
