"""Writes for agents and runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import jsonschema
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from agents.models import (
    RUN_FINISHED,
    RUN_TRANSITIONS,
    Agent,
    AgentGroupObjectPermission,
    AgentUserObjectPermission,
    PromptVersion,
    Run,
    RunOutcome,
    RunPriority,
    RunStatus,
    Step,
    StepKind,
)
from agents.secrets import SecretUnavailable, check_secret_ref
from agents.selectors import RIGHTS_CACHE
from audit.services import Actor, record
from core import counters
from core.background import enqueue, enqueue_on_commit
from core.errors import Conflict, IllegalTransition, InvalidInput
from core.inbound import InputRefused, refuse_invalid
from core.leases import lease_until
from core.prepared import PreparedRead, insert_row, update_where
from core.transient import retry_delay
from live.push import OPS_CHANGED, PERMISSIONS_CHANGED, RUN_CHANGED, RUN_NEEDS_OPERATOR, push

# The run loop's task (runtime.tasks), named: the loop sits above this app.
ADVANCE_RUN = "agents.advance_run"

AGENT_PERMISSIONS = ("review_agent", "review_escalated_agent", "operate_agent", "configure_agent")


def run_start(
    *,
    agent: Agent,
    input: Any,
    actor: User | Actor | None,
    priority: int = RunPriority.ROUTINE,
    delegated_by: int | None = None,
) -> Run:
    """Validate the input, create a queued run and schedule its first step on commit."""
    if priority not in RunPriority.values:
        raise InvalidInput(f"priority must be one of {RunPriority.values}", code="invalid_priority")
    if not isinstance(input, dict):
        raise InvalidInput("input must be a JSON object", code="invalid_input")
    try:
        # Whoever started it (a page, the API, a delegating agent), the input crosses the boundary.
        input = refuse_invalid(input, path="input")
    except InputRefused as exc:
        raise InvalidInput(str(exc), code="invalid_input", details=[p.as_dict() for p in exc.problems]) from exc
    if agent.input_schema:
        errors = sorted(jsonschema.Draft202012Validator(agent.input_schema).iter_errors(input), key=str)
        if errors:
            details = [{"field": ".".join(str(p) for p in e.absolute_path), "message": e.message} for e in errors]
            summary = "; ".join(f"{d['field'] or '(input)'}: {d['message']}" for d in details)
            raise InvalidInput(f"input does not match {agent.slug}'s schema: {summary}", details=details)
    if agent.is_paused:
        raise Conflict(f"agent {agent.slug} is paused", code="agent_paused")
    with transaction.atomic():
        run = Run.objects.create(
            agent=agent,
            prompt_version=PromptVersion.objects.filter(agent=agent, status="active").first(),
            input=input,
            created_by=actor if isinstance(actor, User) else None,
            priority=priority,
        )
        record(
            actor=actor,
            event="run.started",
            target=run,
            agent_id=agent.pk,
            after={"input": input, "priority": priority, "parent_action": delegated_by},
        )
        counters.usage(agent.pk, runs=1)
        counters.bump(agent.pk, runs_started=1)
        run_schedule(run=run)
    return run


def run_schedule(*, run: Run, countdown: float | None = None) -> None:
    """Publish the run's next step when the current transaction commits (urgent runs first)."""
    Run.objects.filter(pk=run.pk).update(published_at=timezone.now() + timedelta(seconds=countdown or 0))
    enqueue_on_commit(ADVANCE_RUN, run.pk, countdown=countdown, urgent=run.priority >= RunPriority.URGENT)


# A publish lost with a Redis restart (it keeps nothing on disk) is redone this long after; with the
# sweep interval that keeps settling under 30 s. A copy of a message still queued is harmless (CAS).
REPUBLISH_RUNS_AFTER_SECONDS = 20


def runs_sweep() -> dict[str, int]:
    """Republish queued runs nobody picked up; put runs whose worker died back in the queue.

    A step's writes commit together at its end, so a step interrupted before
    that left nothing behind and can simply be taken again.
    """
    now = timezone.now()
    counts = {"republished": 0, "recovered": 0}
    threshold = now - timedelta(seconds=REPUBLISH_RUNS_AFTER_SECONDS)
    for run in Run.objects.filter(status=RunStatus.QUEUED, published_at__lt=threshold).only("pk", "priority")[:500]:
        # Compare-and-set on published_at: two sweepers never both republish a run.
        if Run.objects.filter(pk=run.pk, published_at__lt=threshold).update(published_at=now):
            enqueue(ADVANCE_RUN, run.pk, urgent=run.priority >= RunPriority.URGENT)
            counts["republished"] += 1
    for run in Run.objects.filter(status=RunStatus.RUNNING, lease_until__lt=now)[:500]:
        with transaction.atomic():
            # Only the attempt that stalled: not one that took the run since, nor one that renewed its lease.
            handed_on = run_transition(
                run_id=run.pk,
                from_status=RunStatus.RUNNING,
                to_status=RunStatus.QUEUED,
                attempt=run.step_token,
                lease_before=now,
            )
            if handed_on:
                record(actor=Actor.system("sweeper"), event="run.recovered", target=run, agent_id=run.agent_id)
                run_schedule(run=run)
                counts["recovered"] += 1
    return counts


def run_transition(
    *,
    run_id: int,
    from_status: str,
    to_status: str,
    attempt: str | None = None,
    lease_before: datetime | None = None,
    **fields: Any,
) -> bool:
    """Compare-and-set a run's status; False if the run was not in `from_status`.

    Two deliveries of one task race here: only the UPDATE that still sees the
    expected status changes the row, so only one of them goes on. `attempt` (a step's token) and
    `lease_before` narrow it to that step attempt, and to its lease having run out: whoever hands a
    stalled step on must not take the run from an attempt that took it since, or renewed its lease.
    """
    if to_status not in RUN_TRANSITIONS[from_status]:
        raise IllegalTransition(f"run cannot go from {from_status} to {to_status}")
    if to_status == RunStatus.RUNNING:
        fields.setdefault("started_at", timezone.now())
        # A short lease, renewed by the step's heartbeat (core.leases).
        fields.setdefault("lease_until", lease_until())
    elif from_status == RunStatus.RUNNING:
        fields.setdefault("lease_until", None)
    if to_status in RUN_FINISHED:
        fields.setdefault("finished_at", timezone.now())
    if to_status == RunStatus.SUCCEEDED:
        # Only the loop knows what a finished run came to (runtime.services.run_outcome): it must say.
        if "outcome" not in fields:
            raise ValueError("a run that succeeds must say what it came to (outcome)")
        outcome = RunOutcome(fields["outcome"])
    elif to_status in RUN_FINISHED | {RunStatus.HALTED}:
        outcome = fields.setdefault("outcome", RunOutcome(to_status))
    else:
        outcome = fields.setdefault("outcome", "")
    match: dict[str, Any] = {"pk": run_id, "status": from_status}
    if attempt is not None:
        match["step_token"] = attempt
    if lease_before is not None:
        match["lease_until__lt"] = lease_before
    # Every step of every run sends it: its statement is built once per shape (core.prepared).
    changed = update_where(Run, where=match, values={"status": to_status, **fields}) == 1
    if changed:
        # The open run page shows its status and trace live (rendered after commit: all the step wrote).
        push(RUN_CHANGED, run_id=run_id)
    if changed and outcome:
        _count_run_end(run_id, RunOutcome(outcome), succeeded=to_status == RunStatus.SUCCEEDED)
    return changed


def run_retry_step(*, run_id: int, step_token: str, reason: str) -> bool:
    """Queue a step again in a moment after a transient error rolled it back; False if it was handed on."""
    with transaction.atomic():
        run = Run.objects.filter(pk=run_id, status=RunStatus.RUNNING, step_token=step_token).first()
        if run is None or not run_transition(
            run_id=run_id, from_status=RunStatus.RUNNING, to_status=RunStatus.QUEUED, attempt=step_token
        ):
            return False
        record(
            actor=Actor.system("runtime"),
            event="run.step_retried",
            target=run,
            agent_id=run.agent_id,
            after={"reason": reason},
        )
        run_schedule(run=run, countdown=retry_delay(0))
    return True


@PreparedRead
def _run_times(run_id: int) -> QuerySet[Run, tuple[int, datetime, datetime | None]]:
    return Run.objects.filter(pk=run_id).values_list("agent_id", "created_at", "finished_at")


def _count_run_end(run_id: int, outcome: RunOutcome, *, succeeded: bool) -> None:
    """One count per outcome (ops' `runs_<outcome>` counters), and the duration of a run that finished its work."""
    run = _run_times.first(run_id=run_id)
    if run is None:
        return
    agent_id, created_at, finished_at = run
    counters.bump(agent_id, **{f"runs_{outcome.value}": 1})
    if succeeded and finished_at:
        counters.observe(agent_id, "run_duration", (finished_at - created_at).total_seconds())


def step_insert(step: Step) -> None:
    """Add `step` to its run's trace as the next entry: its seq is numbered in the INSERT itself.

    Only one writer per run at a time (the run's status guarantees it; the unique (run, seq) refuses a second).
    """
    insert_row(step, numbered=("seq", "run"))  # every step adds several: their INSERT is built once (core.prepared)


def step_append(*, run: Run, kind: StepKind, payload: dict[str, Any]) -> Step:
    """Add a trace entry."""
    step = Step(run=run, kind=kind, payload=payload)
    step_insert(step)
    return step


def run_feed_back(*, run: Run, payload: dict[str, Any]) -> None:
    """Record what a tool call came to and hand the waiting run back to the loop."""
    step_append(run=run, kind=StepKind.TOOL_RESULT, payload=payload)
    if run_transition(run_id=run.pk, from_status=RunStatus.WAITING, to_status=RunStatus.QUEUED):
        run_schedule(run=run)


def notify_operators(*, run: Run) -> None:
    """Tell the run's operators it needs them: a notice on their open pages, and their lists refresh."""
    push(RUN_NEEDS_OPERATOR, run_id=run.pk)
    push(OPS_CHANGED, agent_id=run.agent_id)


def run_resume(*, run: Run, actor: User) -> Run:
    """An operator resumes a halted run; it gets a fresh allowance of steps, time, tokens and cost."""
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.status != RunStatus.HALTED:
            raise IllegalTransition(f"only a halted run can be resumed; this one is {locked.status}")
        reason = locked.halt_reason
        run_transition(
            run_id=locked.pk,
            from_status=RunStatus.HALTED,
            to_status=RunStatus.QUEUED,
            halt_reason="",
            step_count=0,
            running_seconds=0.0,
            tokens_at_resume=locked.tokens_used,
            cost_at_resume=locked.cost,
        )
        record(
            actor=actor, event="run.resumed", target=locked, agent_id=locked.agent_id, before={"halt_reason": reason}
        )
        run_schedule(run=locked)
    locked.refresh_from_db()
    return locked


def agent_permission_grant(
    *, agent: Agent, perm: str, to: AbstractBaseUser | Group, actor: Actor | AbstractBaseUser | None
) -> bool:
    """Give a user or group one of the per-agent permissions. False if they already held it."""
    return _change_permission(agent=agent, perm=perm, holder=to, actor=actor, grant=True)


def agent_permission_revoke(
    *, agent: Agent, perm: str, to: AbstractBaseUser | Group, actor: Actor | AbstractBaseUser | None
) -> bool:
    """Take a per-agent permission away from a user or group. False if they did not hold it."""
    return _change_permission(agent=agent, perm=perm, holder=to, actor=actor, grant=False)


def _change_permission(
    *, agent: Agent, perm: str, holder: AbstractBaseUser | Group, actor: Actor | AbstractBaseUser | None, grant: bool
) -> bool:

    if perm not in AGENT_PERMISSIONS:
        raise InvalidInput(f"unknown agent permission {perm!r}")
    with transaction.atomic():
        if isinstance(holder, Group):
            holds = AgentGroupObjectPermission.objects.filter(
                group=holder, content_object=agent, permission__codename=perm
            ).exists()
        else:
            holds = AgentUserObjectPermission.objects.filter(
                user_id=holder.pk, content_object=agent, permission__codename=perm
            ).exists()
        if holds == grant:
            return False  # nothing changes, so nothing to record
        (assign_perm if grant else remove_perm)(f"agents.{perm}", holder, agent)
        who = {"perm": perm, _holder_key(holder): str(holder)}
        record(
            actor=actor,
            event="permission.granted" if grant else "permission.revoked",
            target=agent,
            agent_id=agent.pk,
            before=None if grant else who,
            after=who if grant else None,
        )
        _notify_permissions_changed(holder)
    if hasattr(holder, RIGHTS_CACHE):
        delattr(holder, RIGHTS_CACHE)  # the rights this object kept for its request are no longer its rights
    return True


def _holder_key(holder: AbstractBaseUser | Group) -> str:
    return "group" if isinstance(holder, Group) else "user"


def _notify_permissions_changed(holder: AbstractBaseUser | Group) -> None:
    user_ids = list(holder.user_set.values_list("pk", flat=True)) if isinstance(holder, Group) else [int(holder.pk)]
    push(PERMISSIONS_CHANGED, user_ids=user_ids)


AGENT_CONFIG_FIELDS = (
    "name",
    "description",
    "provider",
    "model",
    "base_url",
    "api_key_ref",
    "request_timeout",
    "input_schema",
    "review_threshold",
    "max_steps",
    "run_timeout_seconds",
    "max_tokens_per_run",
    "max_cost_per_run",
    "max_tokens_per_day",
    "max_cost_per_day",
    "loop_limit",
    "breaker_threshold",
    "breaker_cooldown_seconds",
    "on_breaker_open",
    "prompt_regression_margin",
    "is_paused",
)


def agent_settings(agent: Agent) -> dict[str, Any]:
    """An agent's configuration as JSON values (decimals as strings): what audit rows and diffs hold."""
    values = {name: getattr(agent, name) for name in AGENT_CONFIG_FIELDS}
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in values.items()}


def agent_create(*, slug: str, actor: Actor | AbstractBaseUser | None, system_prompt: str = "", **config: Any) -> Agent:
    """Create an agent (configuration as keyword arguments) with its first, active prompt version."""

    unknown = set(config) - set(AGENT_CONFIG_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown agent settings: {', '.join(sorted(unknown))}")
    agent = Agent(slug=slug, system_prompt=system_prompt, **config)
    validate_agent(agent)
    with transaction.atomic():
        agent.save()
        PromptVersion.objects.create(
            agent=agent,
            number=1,
            text=system_prompt,
            status="active",
            note="initial",
            created_by=actor if isinstance(actor, User) else None,
            activated_at=timezone.now(),
        )
        record(
            actor=actor,
            event="agent.created",
            target=agent,
            agent_id=agent.pk,
            after={**agent_settings(agent), "prompt_version": 1},
        )
    return agent


def agent_create_for(*, actor: User, slug: str, **config: Any) -> Agent:
    """An admin makes an agent in the browser or over the API, and may configure and operate it at once."""
    if Agent.objects.filter(slug=slug).exists():
        raise Conflict(f"an agent named {slug!r} exists", code="exists")
    with transaction.atomic():
        agent = agent_create(slug=slug, actor=actor, **config)
        for perm in ("configure_agent", "operate_agent"):
            agent_permission_grant(agent=agent, perm=perm, to=actor, actor=actor)
    return agent


def agent_update(*, agent: Agent, actor: Actor | AbstractBaseUser | None, **changes: Any) -> Agent:
    """Change an agent's configuration; the audit event holds before and after of what changed."""
    unknown = set(changes) - set(AGENT_CONFIG_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown agent settings: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        before = agent_settings(locked)
        for name, value in changes.items():
            setattr(locked, name, value)
        validate_agent(locked)
        after = agent_settings(locked)
        changed = [k for k in AGENT_CONFIG_FIELDS if before[k] != after[k]]
        if not changed:
            return locked
        locked.save(update_fields=[*changed, "updated_at"])
        record(
            actor=actor,
            event="agent.updated",
            target=locked,
            agent_id=locked.pk,
            before={k: before[k] for k in changed},
            after={k: after[k] for k in changed},
        )
    return locked


def validate_agent(agent: Agent) -> None:
    try:
        agent.full_clean(validate_unique=agent._state.adding)
        if agent.input_schema:
            jsonschema.Draft202012Validator.check_schema(agent.input_schema)
    except ValidationError as exc:
        raise InvalidInput(_first_errors(exc), details=exc.message_dict) from exc
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"input_schema is not a valid JSON Schema: {exc.message}") from exc
    try:
        check_secret_ref(agent.api_key_ref)
    except SecretUnavailable as exc:
        raise InvalidInput(f"api_key_ref: {exc}", details={"api_key_ref": [str(exc)]}) from exc


def _first_errors(exc: ValidationError) -> str:
    return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())


# What a purged step keeps: no text a person or a model wrote.
PURGE_KEEPS = frozenset({"provider", "model", "prompt_version", "error", "tool", "confidence"})


def traces_purge(*, older_than_days: int | None = None) -> int:
    """Remove prompt and response text from trace steps past the retention period.

    Token counts, latency and cost stay (dashboards need them). The audit log is
    not touched: it holds decisions, not conversations.
    """
    days = settings.TRACE_RETENTION_DAYS if older_than_days is None else older_than_days
    if days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    purged = 0
    stale = Step.objects.filter(created_at__lt=cutoff, kind__in=[StepKind.LLM_CALL, StepKind.PROPOSAL]).exclude(
        payload__has_key="purged"
    )
    batch: list[Step] = []
    for step in stale.only("pk", "payload").iterator(chunk_size=500):
        step.payload = {**{k: v for k, v in step.payload.items() if k in PURGE_KEEPS}, "purged": True}
        batch.append(step)
        if len(batch) == 500:
            purged += Step.objects.bulk_update(batch, ["payload"])
            batch = []
    if batch:
        purged += Step.objects.bulk_update(batch, ["payload"])
    return purged
