"""Interventions as a dataset: the reviewed and spot-checked actions as JSON Lines, for evaluation and fine-tuning.

One object per action: what the agent was given (its run's input) and proposed, how sure it said it was,
how it was routed, what a person made of it (a review decision or a spot check's grade, with the edit's
arguments before and after and their reason), the prompt version it ran with, and how its execution
ended. Every object goes through the secret scrubbing before it leaves. Rows are read in keyset batches
over the id, so an export of any size costs one query per batch and holds one batch in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from agents.models import Agent
from agents.secrets import redact
from agents.tools import get_tool
from approvals.models import ActionRequest, Grade, Verdict
from audit.services import Actor, record
from core.secrets import known_secrets, scrub_text

# Rows per query. Each batch costs one query (select_related below), whatever its size.
BATCH_SIZE = 500

REVIEW = "review"
SPOT_CHECK = "spot_check"
SOURCES = (REVIEW, SPOT_CHECK)
# Each outcome belongs to one source: a review's verdict or a spot check's grade.
OUTCOMES: dict[str, str] = {**dict.fromkeys(Verdict.values, REVIEW), **dict.fromkeys(Grade.values, SPOT_CHECK)}

# Tier 0 is a configuration change waiting for a second admin, not an agent's tool call.
_REVIEWED = Q(tier__gte=1, decision__isnull=False)
# An action both reviewed and spot-checked (not made by the sampler, which takes auto-approved
# actions only) is exported once, as its review.
_SPOT_CHECKED = Q(spot_check__grade__in=Grade.values) & ~_REVIEWED

MAX_SLUG_CHARS = 50
_SLUG = re.compile(r"[-a-zA-Z0-9_]+")
MAX_TOOL_CHARS = 100


class InvalidFilter(ValueError):
    """A filter value the export cannot read; the message says which and why."""


@dataclass(frozen=True)
class ExportFilters:
    agent: str = ""
    tool: str = ""
    # created_at >= since and created_at < until.
    since: datetime | None = None
    until: datetime | None = None
    outcome: str = ""
    source: str = ""

    def as_audit(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items() if v}

    def filename(self) -> str:
        # Slugs and tool names are plain ([a-z0-9_-]), so they are safe in the header as they are.
        parts = ["countersign-interventions", self.agent, self.tool, self.outcome or self.source]
        return "-".join(p for p in parts if p) + ".jsonl"


def parse_filters(raw: Mapping[str, str]) -> ExportFilters:
    """Read the filters from query parameters or command options; InvalidFilter naming every bad one."""
    problems: list[str] = []
    agent = (raw.get("agent") or "").strip()
    if agent and (len(agent) > MAX_SLUG_CHARS or not _SLUG.fullmatch(agent)):
        problems.append("agent: not an agent's slug")
    tool = (raw.get("tool") or "").strip()
    if tool:
        known = get_tool(tool) if len(tool) <= MAX_TOOL_CHARS else None
        if known is None or known.internal:
            problems.append(f"tool: no agent tool is named {tool[:MAX_TOOL_CHARS]!r}")
    outcome = (raw.get("outcome") or "").strip()
    if outcome and outcome not in OUTCOMES:
        problems.append(f"outcome: one of {', '.join(OUTCOMES)}")
    source = (raw.get("source") or "").strip()
    if source and source not in SOURCES:
        problems.append(f"source: one of {', '.join(SOURCES)}")
    elif source and outcome in OUTCOMES and OUTCOMES[outcome] != source:
        problems.append(f"outcome: {outcome} is a {OUTCOMES[outcome].replace('_', ' ')} outcome, not a {source}'s")
    since = _moment(raw.get("since") or "", "since", problems, end=False)
    until = _moment(raw.get("until") or "", "until", problems, end=True)
    if since is not None and until is not None and since >= until:
        problems.append("until: must be later than since")
    if problems:
        raise InvalidFilter("; ".join(problems))
    return ExportFilters(agent=agent, tool=tool, since=since, until=until, outcome=outcome, source=source)


def _moment(raw: str, name: str, problems: list[str], *, end: bool) -> datetime | None:
    """ISO 8601, UTC unless it says otherwise; a bare date as `until` takes in that whole day."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        day = None
    try:
        if day is not None:
            moment = datetime(day.year, day.month, day.day) + (timedelta(days=1) if end else timedelta())
        else:
            moment = datetime.fromisoformat(raw)
    except (ValueError, OverflowError):
        problems.append(f"{name}: an ISO 8601 date or time, such as 2026-03-01 or 2026-03-01T12:00:00Z")
        return None
    return moment if moment.tzinfo is not None else timezone.make_aware(moment, timezone.get_fixed_timezone(0))


def agents_exportable_by(user: User | AnonymousUser) -> QuerySet[Agent]:
    """Agents whose reviewed actions the user may read out: all for an auditor, else those they review or operate.

    Auditors (and admins) read every agent's actions on the audit trail already; a reviewer or
    an operator sees their agents' actions on the run and action pages. Configuring an agent
    alone shows none of its actions, so it exports none.
    """
    if not user.is_authenticated or not user.is_active:
        return Agent.objects.none()
    if user.has_perm("audit.view_auditevent"):
        return Agent.objects.all()
    return get_objects_for_user(
        user,
        ["agents.review_agent", "agents.review_escalated_agent", "agents.operate_agent"],
        klass=Agent,
        any_perm=True,
        accept_global_perms=False,
    )


def interventions(filters: ExportFilters, *, agents: QuerySet[Agent] | None = None) -> QuerySet[ActionRequest]:
    """The exported actions, unordered; `agents` limits them to those (None: every agent, for the command)."""
    qs = ActionRequest.objects.all()
    if agents is not None:
        qs = qs.filter(agent__in=agents)
    if filters.source == REVIEW or OUTCOMES.get(filters.outcome) == REVIEW:
        qs = qs.filter(_REVIEWED)
    elif filters.source == SPOT_CHECK or OUTCOMES.get(filters.outcome) == SPOT_CHECK:
        qs = qs.filter(_SPOT_CHECKED)
    else:
        qs = qs.filter(_REVIEWED | _SPOT_CHECKED)
    if filters.outcome in Verdict.values:
        qs = qs.filter(decision__verdict=filters.outcome)
    elif filters.outcome in Grade.values:
        qs = qs.filter(spot_check__grade=filters.outcome)
    if filters.agent:
        qs = qs.filter(agent__slug=filters.agent)
    if filters.tool:
        qs = qs.filter(tool=filters.tool)
    if filters.since is not None:
        qs = qs.filter(created_at__gte=filters.since)
    if filters.until is not None:
        qs = qs.filter(created_at__lt=filters.until)
    return qs.select_related("agent", "run__prompt_version", "decision__reviewer", "spot_check__graded_by")


def intervention_rows(
    filters: ExportFilters, *, agents: QuerySet[Agent] | None = None, batch_size: int | None = None
) -> Iterator[dict[str, Any]]:
    """Each exported action as a dict, in id order, read in keyset batches (one query per batch)."""
    size = batch_size or BATCH_SIZE
    qs = interventions(filters, agents=agents).order_by("pk")
    after = 0
    while True:
        batch = list(qs.filter(pk__gt=after)[:size])
        for action in batch:
            yield _row(action)
        if len(batch) < size:
            return
        after = batch[-1].pk


def jsonl(
    filters: ExportFilters, *, agents: QuerySet[Agent] | None = None, batch_size: int | None = None
) -> Iterator[str]:
    """The export's lines, each object scrubbed of secrets."""
    secrets = known_secrets()
    for row in intervention_rows(filters, agents=agents, batch_size=batch_size):
        # redact masks secret-looking keys and every known secret value; scrubbing the
        # line afterwards catches a secret that sits in a key, which redact leaves as it is.
        line = json.dumps(redact(row, secrets=secrets), ensure_ascii=False, sort_keys=False)
        yield scrub_text(line) + "\n"


def export_recorded(*, actor: AbstractBaseUser | Actor, filters: ExportFilters, agent_id: int | None) -> None:
    """Put the export on the audit trail: reading the interventions out is itself on the trail."""
    with transaction.atomic():
        record(actor=actor, event="interventions.exported", agent_id=agent_id, after={"filters": filters.as_audit()})


def _one(action: ActionRequest, name: str) -> Any:
    # A reverse one-to-one fetched by select_related: None when there is none, without a query.
    try:
        return getattr(action, name)
    except ObjectDoesNotExist:
        return None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _row(action: ActionRequest) -> dict[str, Any]:
    run = action.run
    decision = _one(action, "decision") if action.tier >= 1 else None
    spot = _one(action, "spot_check") if decision is None else None
    if decision is not None:
        edited = decision.verdict == Verdict.EDIT
        judged: dict[str, Any] = {
            "source": REVIEW,
            "outcome": decision.verdict,
            "arguments_before": decision.arguments_before if edited else None,
            "arguments_after": decision.arguments_after if edited else None,
            "reason": decision.comment,
            "reviewer": decision.reviewer.get_username(),
            "decided_at": _iso(decision.created_at),
            "weight": 1.0,
        }
    else:
        # The query took only reviewed or graded actions: without a decision, there is a spot check.
        assert spot is not None
        judged = {
            "source": SPOT_CHECK,
            "outcome": spot.grade,
            "arguments_before": None,
            "arguments_after": None,
            "reason": spot.comment,
            "reviewer": spot.graded_by.get_username() if spot.graded_by else None,
            "decided_at": _iso(spot.graded_at),
            # A spot check stands for 1 / rate auto-approved actions (approvals.models.SpotCheck).
            "weight": spot.weight,
        }
    return {
        "id": action.pk,
        "agent": action.agent.slug,
        "tool": action.tool,
        "created_at": _iso(action.created_at),
        "input": run.input if run is not None else None,
        "proposed_arguments": action.proposed_arguments,
        "confidence": action.confidence,
        "rationale": action.rationale,
        "route": action.route,
        "route_reason": action.route_reason,
        **judged,
        "prompt_version": run.prompt_version.number if run is not None and run.prompt_version else None,
        "execution": {"status": action.status, "result": action.result, "error": action.error or None},
    }
