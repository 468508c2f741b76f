"""The run loop: one step per task, never holding a transaction across the model call."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from agents import services, tasks
from agents.models import Run, RunStatus, Step, StepKind
from agents.providers import FinalAnswer, RunContext, provider_for
from audit.services import Actor, record
from config.background import enqueue_on_commit

logger = logging.getLogger(__name__)


def run_advance(*, run_id: int) -> None:
    """Take one step of a queued run: ask the provider, then finish, route a tool call, or halt."""
    # Compare-and-set: a redelivered or duplicate task finds the run no longer
    # queued and does nothing.
    if not services.run_transition(run_id=run_id, from_status=RunStatus.QUEUED, to_status=RunStatus.RUNNING):
        return
    run = Run.objects.select_related("agent").get(pk=run_id)
    agent = run.agent
    if run.step_count >= agent.max_steps:
        _halt(run, f"step limit reached ({agent.max_steps} steps)")
        return
    context = RunContext(
        agent_slug=agent.slug,
        script=agent.model or agent.slug,
        system_prompt=agent.system_prompt,
        input=run.input,
        history=_history(run),
    )
    try:
        # Outside any transaction: a model call can take seconds.
        proposal = provider_for(agent.provider).propose(context)
    except Exception as exc:
        logger.exception("provider failed for run %s", run_id)
        _fail(run, f"provider error: {type(exc).__name__}: {exc}")
        return

    from approvals import services as approval_services

    with transaction.atomic():
        Run.objects.filter(pk=run.pk).update(step_count=run.step_count + 1)
        if isinstance(proposal, FinalAnswer):
            services.step_append(run=run, kind=StepKind.FINAL, payload={"text": proposal.text})
            services.run_transition(
                run_id=run.pk, from_status=RunStatus.RUNNING, to_status=RunStatus.SUCCEEDED, result=proposal.text
            )
            record(
                actor=Actor.agent(agent),
                event="run.succeeded",
                target=run,
                agent_id=agent.pk,
                after={"result": proposal.text},
            )
            return
        services.step_append(
            run=run,
            kind=StepKind.PROPOSAL,
            payload={
                "tool": proposal.tool,
                "arguments": proposal.arguments,
                "confidence": proposal.confidence,
                "rationale": proposal.rationale,
                "provider": agent.provider,
                "model": agent.model,
            },
        )
        outcome = approval_services.route_tool_call(
            agent=agent,
            run=run,
            tool=proposal.tool,
            arguments=proposal.arguments,
            confidence=proposal.confidence,
            rationale=proposal.rationale,
        )
        if outcome.action is None or outcome.fed_back:
            # Refused or denied: the reason is already in the trace as the
            # tool's result; the next step sees it.
            services.run_transition(run_id=run.pk, from_status=RunStatus.RUNNING, to_status=RunStatus.QUEUED)
            enqueue_on_commit(tasks.advance_run, run.pk)
        else:
            # Waiting for a person or for the execution: the task ends here.
            services.run_transition(run_id=run.pk, from_status=RunStatus.RUNNING, to_status=RunStatus.WAITING)


def _history(run: Run) -> list[dict[str, Any]]:
    return [
        step.payload for step in Step.objects.filter(run=run, kind=StepKind.TOOL_RESULT).only("payload").order_by("seq")
    ]


def _halt(run: Run, reason: str) -> None:
    with transaction.atomic():
        services.step_append(run=run, kind=StepKind.HALT, payload={"reason": reason})
        services.run_transition(
            run_id=run.pk, from_status=RunStatus.RUNNING, to_status=RunStatus.HALTED, halt_reason=reason
        )
        record(actor=Actor.system(), event="run.halted", target=run, agent_id=run.agent_id, after={"reason": reason})


def _fail(run: Run, reason: str) -> None:
    with transaction.atomic():
        services.step_append(run=run, kind=StepKind.HALT, payload={"reason": reason})
        services.run_transition(
            run_id=run.pk, from_status=RunStatus.RUNNING, to_status=RunStatus.FAILED, halt_reason=reason
        )
        record(actor=Actor.system(), event="run.failed", target=run, agent_id=run.agent_id, after={"reason": reason})
