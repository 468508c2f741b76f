"""Prompt versions tested before release: the golden set, replayed against a proposed version and the active one.

The golden set of an agent is its recorded runs whose outcome a person confirmed
(approvals.prompt_release.confirmed_runs: finished, acted, and a reviewer approved or edited
one of their calls), newest first, at most GOLDEN_SET_MAX. A case is such a run's input and
its first reviewed call as it was let run (the edited arguments, if edited), with what the
run's earlier calls came to, so the replay asks the provider exactly what the run's step
asked it (runtime.loop.provider_context).

Each case is replayed twice with the agent's own provider, outside any transaction: with the
proposed version's text and with the active version's (the baseline). A version agrees on a
case when its first tool call is the confirmed one: the same tool and the same canonical
arguments. A provider failure is a disagreement, recorded with its reason.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from agents.guard import GuardRefusal, validate_arguments
from agents.models import Agent, PromptEvaluation, PromptStatus, PromptVersion, Step, StepKind
from agents.providers import FinalAnswer, Provider, ProviderError, ToolSpec, provider_for
from agents.secrets import SecretUnavailable
from agents.tools import get_tool
from approvals.models import ActionRequest
from approvals.prompt_release import CONFIRMING_VERDICTS, GOLDEN_SET_MAX, GOLDEN_SET_MIN, confirmed_runs
from audit.services import Actor, record
from core.errors import Conflict
from core.secrets import scrub_text
from core.transient import is_transient
from runtime.loop import provider_context, screened, tool_specs

logger = logging.getLogger(__name__)

__all__ = ["GOLDEN_SET_MAX", "GOLDEN_SET_MIN", "GoldenCase", "canonical_call", "golden_set", "prompt_evaluate"]

# A final answer instead of a tool call is kept this long in an evaluation's details.
ANSWER_CHARS = 300


@dataclass(frozen=True)
class GoldenCase:
    run_id: int
    action_id: int
    input: dict[str, Any]
    # What the run's calls before the confirmed one came to (its TOOL_RESULT steps), as the loop passes them.
    history: list[dict[str, Any]]
    tool: str
    arguments: Any


def golden_set(agent_id: int) -> list[GoldenCase]:
    """The agent's golden set, newest first (three queries, however many cases)."""
    runs = list(confirmed_runs(agent_id).only("id", "input")[:GOLDEN_SET_MAX])
    ids = [run.pk for run in runs]
    first: dict[int, ActionRequest] = {}
    reviewed = (
        ActionRequest.objects.filter(run_id__in=ids, decision__verdict__in=CONFIRMING_VERDICTS)
        .only("id", "run_id", "tool", "arguments")
        .order_by("id")
    )
    for action in reviewed:
        assert action.run_id is not None
        first.setdefault(action.run_id, action)
    results: dict[int, list[dict[str, Any]]] = defaultdict(list)
    steps = Step.objects.filter(run_id__in=ids, kind=StepKind.TOOL_RESULT).order_by("run_id", "seq")
    for run_id, payload in steps.values_list("run_id", "payload"):
        if isinstance(payload, dict):
            results[run_id].append(payload)
    return [
        GoldenCase(
            run_id=run.pk,
            action_id=first[run.pk].pk,
            input=run.input if isinstance(run.input, dict) else {},
            history=_before(results[run.pk], first[run.pk].pk),
            tool=first[run.pk].tool,
            arguments=first[run.pk].arguments,
        )
        for run in runs
        if run.pk in first
    ]


def _before(results: list[dict[str, Any]], action_id: int) -> list[dict[str, Any]]:
    """The results the run had when it proposed the action: those before the action's own (or a later one's)."""
    # Each call's result is fed back before the run's next step, so results come in the order of the calls.
    earlier = []
    for payload in results:
        fed_back_for = payload.get("action_id")
        if isinstance(fed_back_for, int) and fed_back_for >= action_id:
            break
        earlier.append(payload)
    return earlier


def canonical_call(tool_name: str, arguments: Any) -> str:
    """A call as one string: JSON with sorted keys, the arguments as the tool's own model reads them.

    Through the model, 40, 40.0 and "40.00" for a decimal amount are one value, as they
    are to the tool; arguments the model refuses are compared as they were sent.
    """
    value: Any = arguments
    tool = get_tool(tool_name)
    if tool is not None:
        checked = validate_arguments(tool, arguments)
        if not isinstance(checked, GuardRefusal):
            value = _plain(tool.dump(checked, mode="python"))
    return json.dumps(
        {"tool": tool_name, "arguments": value}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value.normalize())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_plain(v) for v in value), key=repr)
    return value


def prompt_evaluate(*, version: PromptVersion, actor: User | Actor) -> PromptEvaluation | None:
    """Replay the golden set against a proposed version and the active one; store and audit the agreement.

    None (nothing stored) while the agent has fewer than GOLDEN_SET_MIN confirmed runs.
    The model calls happen before the write transaction opens: they can take seconds each.
    """
    version = PromptVersion.objects.select_related("agent").get(pk=version.pk)
    if version.status != PromptStatus.PROPOSED:
        raise Conflict(f"only a proposed version is evaluated; v{version.number} is {version.status}")
    agent = version.agent
    cases = golden_set(agent.pk)
    if len(cases) < GOLDEN_SET_MIN:
        return None
    baseline = PromptVersion.objects.filter(agent=agent, status=PromptStatus.ACTIVE).first()
    provider = _provider(agent)
    tools = tool_specs(agent)
    details: list[dict[str, Any]] = []
    for case in cases:
        expected = canonical_call(case.tool, case.arguments)
        candidate = _first_call(provider, agent, version.text, case, tools)
        incumbent = _first_call(provider, agent, baseline.text, case, tools) if baseline is not None else None
        details.append(
            {
                "run_id": case.run_id,
                "action_id": case.action_id,
                "expected": {"tool": case.tool, "arguments": case.arguments},
                "candidate": candidate,
                "baseline": incumbent,
                "agreed": _agrees(candidate, expected),
                "baseline_agreed": incumbent is not None and _agrees(incumbent, expected),
            }
        )
    with transaction.atomic():
        evaluation = PromptEvaluation.objects.create(
            version=version,
            baseline=baseline,
            cases=len(details),
            agreed=sum(d["agreed"] for d in details),
            baseline_agreed=sum(d["baseline_agreed"] for d in details),
            details=details,
            created_by=actor if isinstance(actor, User) else None,
        )
        record(
            actor=actor,
            event="prompt.evaluated",
            target=version,
            agent_id=agent.pk,
            after={
                "evaluation": evaluation.pk,
                "version": version.number,
                "cases": evaluation.cases,
                "agreed": evaluation.agreed,
                "baseline": baseline.number if baseline is not None else None,
                "baseline_agreed": evaluation.baseline_agreed,
                "errors": sum("error" in d["candidate"] for d in details),
            },
        )
    return evaluation


def _agrees(call: dict[str, Any], expected: str) -> bool:
    return "tool" in call and canonical_call(call["tool"], call["arguments"]) == expected


def _provider(agent: Agent) -> Provider | None:
    try:
        return provider_for(agent.provider)
    except LookupError:
        return None


def _first_call(
    provider: Provider | None, agent: Agent, system_prompt: str, case: GoldenCase, tools: list[ToolSpec]
) -> dict[str, Any]:
    """The provider's first proposal for the case: {"tool", "arguments"}, {"answer"} or {"error", "message"}."""
    if provider is None:
        return {"error": "no_provider", "message": f"no provider named {agent.provider!r}"}
    try:
        context = provider_context(
            agent, system_prompt=system_prompt, run_input=case.input, history=case.history, tools=tools
        )
        result = provider.propose(context)
    except SecretUnavailable as exc:
        return {"error": "provider_configuration", "message": scrub_text(str(exc))}
    except ProviderError as exc:
        return {"error": exc.code, "message": scrub_text(exc.message)}
    except Exception as exc:
        # As in the run loop: a transient database error is retried by the task; anything
        # else the provider raised is its failure on this case, not the evaluation's.
        if is_transient(exc):
            raise
        logger.exception("provider crashed replaying run %s", case.run_id)
        return {"error": "provider_crashed", "message": scrub_text(f"{type(exc).__name__}: {exc}")}
    result, _ = screened(result)  # the input boundary, as for a run's step
    proposal = result.proposal
    if isinstance(proposal, FinalAnswer):
        return {"answer": proposal.text[:ANSWER_CHARS]}
    return {"tool": proposal.tool, "arguments": proposal.arguments}
