"""The run loop: one step per task, never holding a transaction across the model call.

A step: check the run's hard limits, ask the provider (outside any transaction),
record the model call in the trace with its tokens and cost, then finish the run,
or hand the proposed tool call to guard and policy. Anything that stops a run
(limits, loops, open breakers) halts it with a reason an operator can act on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents import breakers, services
from agents.models import Agent, AgentDailyUsage, AgentTool, BreakerPolicy, Run, RunStatus, Step, StepKind
from agents.pricing import cost_of
from agents.providers import (
    FinalAnswer,
    ProviderError,
    ProviderResult,
    ProviderSettings,
    RunContext,
    ToolCallProposal,
    ToolSpec,
    Usage,
    provider_for,
)
from agents.secrets import SecretUnavailable, redact, resolve_secret
from agents.tools import get_tool
from approvals import routing
from audit.services import Actor, record
from core import counters
from core.inbound import sanitise
from core.leases import heartbeat, renewal_until
from core.prepared import PreparedRead, update_where
from core.secrets import register_secret, scrub_text
from core.transient import is_transient
from runtime import services as runtime_services

if TYPE_CHECKING:  # django-stubs' annotated-model type, a development dependency
    from django_stubs_ext import WithAnnotations

logger = logging.getLogger(__name__)

# Transient provider failures are retried by re-queueing the step (no worker
# sleeps); after this many in a row the run fails.
MAX_PROVIDER_RETRIES = 4


class StaleStep(Exception):
    """This worker's lease on the run was handed on; its step must not commit."""


def run_advance(*, run_id: int) -> None:
    """Take one step of a queued run."""
    # Compare-and-set: a redelivered or duplicate task finds the run no longer
    # queued and does nothing. The token fences this worker's writes (core.leases).
    token = secrets.token_hex(8)
    if not services.run_transition(
        run_id=run_id, from_status=RunStatus.QUEUED, to_status=RunStatus.RUNNING, step_token=token
    ):
        return

    try:
        with heartbeat(step_renewal(run_id, token)):
            _advance(run_id, token)
    except StaleStep:
        logger.warning("run %s: the step's lease was handed on; this attempt's writes were rolled back", run_id)
    except Exception as exc:
        if not is_transient(exc):
            raise
        # A deadlock or a lost connection rolled the step back: take it again in a moment.
        logger.warning("run %s: transient database error, step retried: %s", run_id, exc)
        services.run_retry_step(run_id=run_id, step_token=token, reason=f"{type(exc).__name__}: {exc}")


def step_renewal(run_id: int, token: str) -> Callable[[datetime], int]:
    """Extend the step's lease, but not past STEP_TIME_LIMIT_SECONDS from now (a step that takes longer is
    hung: a model server trickling its answer, a lock that never comes). On the solo pool nothing else
    would end such a step."""
    deadline = timezone.now() + timedelta(seconds=settings.STEP_TIME_LIMIT_SECONDS)
    step = {"pk": run_id, "status": RunStatus.RUNNING, "step_token": token}
    return renewal_until(deadline, lambda until: update_where(Run, where=step, values={"lease_until": until}))


@PreparedRead
def _run_to_step(run_id: int) -> QuerySet[WithAnnotations[Run, breakers.ModelQuiet]]:
    """The run with its agent, its prompt version and whether the agent's model breaker is quiet (no read of
    it before or after the call). Every step reads it: prepared (core.prepared), its SQL is compiled once."""
    return (
        Run.objects.select_related("agent", "prompt_version")
        .annotate(model_breaker_quiet=breakers.MODEL_QUIET)
        .filter(pk=run_id)
    )


def _advance(run_id: int, token: str) -> None:
    run = _run_to_step.get(run_id=run_id)
    if run.step_token != token:
        # Handed on before this attempt got here (a stall past its lease): the token it would check its
        # writes against is its successor's now, so it stops.
        raise StaleStep(run_id)
    agent = run.agent
    step_started = time.monotonic()

    limit = _limit_reached(run, agent)
    if limit:
        halt(run, limit)
        return
    seen = None  # the model breaker as this call found it, when it is not quiet (breakers.breaker_record_success)
    if not run.model_breaker_quiet:
        if not breakers.breaker_allows(agent):
            halt(run, "the agent's model circuit breaker is open")
            return
        seen = breakers.breaker_current(agent)

    history = runtime_services.tool_results(run)
    try:
        context = _context(run, agent, history)
    except SecretUnavailable as exc:
        fail(run, f"provider configuration: {exc}")
        return

    called = time.monotonic()
    try:
        # Outside any transaction: a model call can take seconds.
        result = provider_for(agent.provider).propose(context)
    except ProviderError as exc:
        _provider_failed(run, agent, exc, latency_ms=(time.monotonic() - called) * 1000)
        return
    except Exception as exc:
        if is_transient(exc):
            raise
        logger.exception("provider crashed for run %s", run_id)
        _provider_failed(
            run,
            agent,
            ProviderError("provider_crashed", f"{type(exc).__name__}: {exc}"),
            latency_ms=(time.monotonic() - called) * 1000,
        )
        return
    latency_ms = (time.monotonic() - called) * 1000
    if seen is not None:
        breakers.breaker_record_success(agent, seen=seen)
    result, repairs = screened(result)

    _take_step(run, agent, result, history, latency_ms=latency_ms, started=step_started, repairs=repairs)


def screened(result: ProviderResult) -> tuple[ProviderResult, list[str]]:
    """What the model returned, through the input boundary: repaired where needed, secrets scrubbed.

    A model's output cannot be refused back to a client, so it is sanitised and
    the repairs go into the trace; the run goes on with the repaired values.
    """
    repairs: list[str] = []

    def clean(value: Any, path: str) -> Any:
        cleaned = sanitise(value, path=path)
        repairs.extend(cleaned.repairs)
        return cleaned.value

    proposal = result.proposal
    if isinstance(proposal, FinalAnswer):
        proposal = FinalAnswer(text=str(clean(proposal.text, "answer")))
    else:
        confidence = proposal.confidence
        if not isinstance(confidence, int | float) or not math.isfinite(confidence):
            repairs.append("confidence: not a finite number; taken as 0")
            confidence = 0.0
        proposal = ToolCallProposal(
            tool=str(clean(proposal.tool, "tool")),
            arguments=clean(proposal.arguments, "arguments"),
            confidence=float(confidence),
            rationale=str(clean(proposal.rationale, "rationale")),
            call_id=str(clean(proposal.call_id, "call_id")),
        )
    usage = Usage(
        prompt_tokens=max(0, min(int(result.usage.prompt_tokens), 10**9)),
        completion_tokens=max(0, min(int(result.usage.completion_tokens), 10**9)),
    )
    screened = ProviderResult(
        proposal=proposal,
        usage=usage,
        model=str(clean(result.model, "model"))[:200],
        request=clean(result.request, "request"),
        response=clean(result.response, "response"),
    )
    return screened, repairs


@PreparedRead
def _lock_own_run(run_id: int, token: str) -> QuerySet[Run, tuple[int]]:
    return (
        Run.objects.select_for_update().filter(pk=run_id, status=RunStatus.RUNNING, step_token=token).values_list("pk")
    )


def _own_step(run: Run) -> None:
    """Lock the run row, and refuse if this worker's lease was handed on (the first lock of a step's commit)."""
    if not _lock_own_run(run_id=run.pk, token=run.step_token):
        raise StaleStep(run.pk)


def _take_step(
    run: Run,
    agent: Agent,
    result: ProviderResult,
    history: list[dict[str, Any]],
    *,
    latency_ms: float,
    started: float,
    repairs: list[str],
) -> None:
    """Record the model call, then finish the run or route its tool call (one transaction)."""
    with transaction.atomic():
        _own_step(run)
        _record_model_call(run, agent, result, latency_ms=latency_ms, repairs=repairs)
        proposal = result.proposal
        if isinstance(proposal, FinalAnswer):
            services.step_append(run=run, kind=StepKind.FINAL, payload={"text": proposal.text})
            _account_time(run, started)
            came_to = runtime_services.run_outcome(run)
            services.run_transition(
                run_id=run.pk,
                from_status=RunStatus.RUNNING,
                to_status=RunStatus.SUCCEEDED,
                result=proposal.text,
                outcome=came_to,
            )
            record(
                actor=Actor.agent(agent),
                event="run.succeeded",
                target=run,
                agent_id=agent.pk,
                after={"result": proposal.text, "outcome": came_to.value},
            )
            runtime_services.run_finished(
                run=run, outcome=runtime_services.FED_BACK.get(came_to, "failed"), result=proposal.text
            )
            return
        assert isinstance(proposal, ToolCallProposal)
        services.step_append(
            run=run,
            kind=StepKind.PROPOSAL,
            payload={
                "call_id": proposal.call_id,
                "tool": proposal.tool,
                "arguments": proposal.arguments,
                "confidence": proposal.confidence,
                "rationale": proposal.rationale,
            },
        )
        outcome = routing.route_tool_call(
            agent=agent,
            run=run,
            tool=proposal.tool,
            arguments=proposal.arguments,
            confidence=proposal.confidence,
            rationale=proposal.rationale,
            call_id=proposal.call_id,
            untrusted=(run.input, [h.get("result") for h in history]),
        )
        _account_time(run, started)
        refusal = outcome.refusal
        if refusal is not None and refusal.code == "breaker_open" and agent.on_breaker_open == BreakerPolicy.HALT:
            _stop(run, refusal.message, to_status=RunStatus.HALTED)
            return
        if outcome.action is None or outcome.fed_back:
            loop = _repeated_failure(run, agent)
            if loop:
                _stop(run, loop, to_status=RunStatus.HALTED)
                return
            # Refused or denied: the reason is in the trace as the tool's result.
            services.run_transition(run_id=run.pk, from_status=RunStatus.RUNNING, to_status=RunStatus.QUEUED)
            services.run_schedule(run=run)
        else:
            # Waiting for a person or for the execution: the task ends here.
            services.run_transition(run_id=run.pk, from_status=RunStatus.RUNNING, to_status=RunStatus.WAITING)


def _context(run: Run, agent: Agent, history: list[dict[str, Any]]) -> RunContext:
    return provider_context(
        agent,
        # The version the run started with, even if a newer one went live since.
        system_prompt=run.prompt_version.text if run.prompt_version else agent.system_prompt,
        run_input=run.input,
        history=history,
    )


def provider_context(
    agent: Agent,
    *,
    system_prompt: str,
    run_input: dict[str, Any],
    history: list[dict[str, Any]],
    tools: list[ToolSpec] | None = None,
) -> RunContext:
    """What the provider is asked at a step: a run's step here, a golden-set replay in runtime.golden.

    `tools` are the agent's enabled tools (`tool_specs`), looked up when not given.
    Raises SecretUnavailable when the agent's API key cannot be read.
    """
    return RunContext(
        agent_slug=agent.slug,
        system_prompt=system_prompt,
        input=run_input,
        settings=ProviderSettings(
            model=agent.model,
            base_url=agent.base_url,
            api_key=_known_secret(resolve_secret(agent.api_key_ref)),
            timeout=agent.request_timeout,
        ),
        tools=tool_specs(agent) if tools is None else tools,
        history=history,
    )


def _known_secret(value: str) -> str:
    # Whatever the model echoes of its key is scrubbed from everything stored, shown and logged.
    register_secret(value)
    return value


@PreparedRead
def _enabled_tools(agent_id: int) -> QuerySet[AgentTool, tuple[str]]:
    return AgentTool.objects.filter(agent_id=agent_id, enabled=True).order_by("tool").values_list("tool")


def tool_specs(agent: Agent) -> list[ToolSpec]:
    specs = []
    for (name,) in _enabled_tools(agent_id=agent.pk):
        tool = get_tool(name)
        if tool is not None and not tool.caller_executes:  # an agent running elsewhere executes those
            specs.append(ToolSpec(name=tool.name, description=tool.description, parameters=tool.json_schema()))
    return specs


def _limit_reached(run: Run, agent: Agent) -> str | None:
    """The hard limit this run has hit, if any (checked before each model call)."""
    if run.step_count >= agent.max_steps:
        return f"step limit reached ({agent.max_steps} steps)"
    if run.running_seconds >= agent.run_timeout_seconds:
        return f"time limit reached ({agent.run_timeout_seconds} s of running time)"
    tokens = run.tokens_used - run.tokens_at_resume
    cost = run.cost - run.cost_at_resume
    if agent.max_tokens_per_run is not None and tokens >= agent.max_tokens_per_run:
        return f"token budget per run reached ({tokens} of {agent.max_tokens_per_run})"
    if agent.max_cost_per_run is not None and cost >= agent.max_cost_per_run:
        return f"cost budget per run reached ({cost:.4f} of {agent.max_cost_per_run})"
    if agent.max_tokens_per_day is not None or agent.max_cost_per_day is not None:
        today = AgentDailyUsage.objects.filter(agent=agent, day=timezone.now().date()).first()
        if today is not None:
            if agent.max_tokens_per_day is not None and today.tokens >= agent.max_tokens_per_day:
                return f"daily token budget reached ({today.tokens} of {agent.max_tokens_per_day})"
            if agent.max_cost_per_day is not None and today.cost >= agent.max_cost_per_day:
                return f"daily cost budget reached ({today.cost:.4f} of {agent.max_cost_per_day})"
    return None


def _repeated_failure(run: Run, agent: Agent) -> str | None:
    """The same call failing `loop_limit` times in a row is a loop, not persistence."""
    recent = list(
        Step.objects.filter(run=run, kind=StepKind.TOOL_RESULT)
        .order_by("-seq")
        .values_list("payload", flat=True)[: agent.loop_limit]
    )
    if len(recent) < agent.loop_limit:
        return None
    if any(p.get("outcome") == "executed" for p in recent):
        return None
    fingerprints = {_fingerprint(p) for p in recent}
    if len(fingerprints) == 1:
        return f"loop detected: the same failing call to {recent[0].get('tool')!r} {agent.loop_limit} times in a row"
    return None


def _fingerprint(payload: dict[str, Any]) -> str:
    body = json.dumps([payload.get("tool"), payload.get("arguments")], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _record_model_call(
    run: Run, agent: Agent, result: ProviderResult, *, latency_ms: float, repairs: list[str]
) -> None:
    model = result.model or agent.model
    cost = cost_of(model, result.usage.prompt_tokens, result.usage.completion_tokens, configured_model=agent.model)
    step = Step(
        run=run,
        kind=StepKind.LLM_CALL,
        payload={
            "provider": agent.provider,
            "model": model,
            "prompt_version": run.prompt_version.number if run.prompt_version else None,
            "request": redact(result.request),
            "response": redact(result.response),
            # What the input boundary repaired in the model's output, if anything.
            **({"repairs": repairs} if repairs else {}),
        },
        latency_ms=round(latency_ms, 3),
        tokens_in=result.usage.prompt_tokens,
        tokens_out=result.usage.completion_tokens,
        cost=cost,
    )
    services.step_insert(step)
    tokens = result.usage.total_tokens
    update_where(Run, where={"pk": run.pk}, add={"step_count": 1, "tokens_used": tokens, "cost": cost})
    counters.usage(agent.pk, tokens=tokens, cost=cost)
    counters.bump(agent.pk, tokens=tokens, cost=cost)


def _account_time(run: Run, started: float) -> None:
    update_where(Run, where={"pk": run.pk}, add={"running_seconds": time.monotonic() - started})


def _provider_failed(run: Run, agent: Agent, exc: ProviderError, *, latency_ms: float) -> None:
    tripped = breakers.breaker_record_failure(agent, f"{exc.code}: {exc.message}")
    message = scrub_text(exc.message)
    with transaction.atomic():
        _own_step(run)
        services.step_insert(
            Step(
                run=run,
                kind=StepKind.LLM_CALL,
                payload={"provider": agent.provider, "model": agent.model, "error": exc.code, "message": message},
                latency_ms=round(latency_ms, 3),
            )
        )
        failures = _consecutive_provider_failures(run)
        if tripped:
            _stop(run, f"the agent's model circuit breaker opened ({exc.code}: {message})", to_status=RunStatus.HALTED)
        elif exc.transient and failures <= MAX_PROVIDER_RETRIES:
            # Back off with jitter, or as long as the server asked; re-queue
            # instead of sleeping so no worker is held.
            delay = exc.retry_after if exc.retry_after is not None else min(60.0, 2.0**failures)
            delay = min(delay, 300.0) * random.uniform(1.0, 1.25)  # noqa: S311  (jitter, not crypto)
            services.run_transition(run_id=run.pk, from_status=RunStatus.RUNNING, to_status=RunStatus.QUEUED)
            services.run_schedule(run=run, countdown=delay)
        else:
            _stop(run, f"provider error: {exc.code}: {message}", to_status=RunStatus.FAILED)


def _consecutive_provider_failures(run: Run) -> int:
    count = 0
    for payload in (
        Step.objects.filter(run=run, kind=StepKind.LLM_CALL).order_by("-seq").values_list("payload", flat=True)[:20]
    ):
        if "error" not in payload:
            break
        count += 1
    return count


def halt(run: Run, reason: str) -> None:
    with transaction.atomic():
        _own_step(run)
        _stop(run, reason, to_status=RunStatus.HALTED)


def fail(run: Run, reason: str) -> None:
    with transaction.atomic():
        _own_step(run)
        _stop(run, reason, to_status=RunStatus.FAILED)


def _stop(run: Run, reason: str, *, to_status: str) -> None:
    """End the step with a reason: halted (an operator may resume it) or failed (final, the coordinator is told)."""
    services.step_append(run=run, kind=StepKind.HALT, payload={"reason": reason})
    services.run_transition(run_id=run.pk, from_status=RunStatus.RUNNING, to_status=to_status, halt_reason=reason)
    event = "run.halted" if to_status == RunStatus.HALTED else "run.failed"
    record(actor=Actor.system(), event=event, target=run, agent_id=run.agent_id, after={"reason": reason})
    if to_status == RunStatus.HALTED:
        services.notify_operators(run=run)
    else:
        runtime_services.run_finished(run=run, outcome="failed", result=reason)
