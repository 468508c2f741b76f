"""LLM providers: given the run so far, propose a tool call or a final answer.

`scripted` is an offline, deterministic stand-in for an LLM so the demo and the
tests run without a model server. It is labelled as such everywhere it shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolCallProposal:
    tool: str
    arguments: dict[str, Any]
    confidence: float
    rationale: str


@dataclass(frozen=True)
class FinalAnswer:
    text: str


Proposal = ToolCallProposal | FinalAnswer


@dataclass(frozen=True)
class RunContext:
    agent_slug: str
    script: str
    system_prompt: str
    input: dict[str, Any]
    # What each earlier tool call came to: {"tool", "arguments", "outcome", "result" | "error"}
    history: list[dict[str, Any]] = field(default_factory=list)


class Provider(Protocol):
    def propose(self, context: RunContext) -> Proposal: ...


class ScriptedProvider:
    """Deterministic rules over the run input: a stand-in for an LLM, not one."""

    HEDGES = re.compile(r"\b(maybe|not sure|unsure|unclear|i think|possibly|perhaps)\b", re.IGNORECASE)
    STRONG = re.compile(r"\b(damaged|broken|never arrived|not delivered|charged twice|defective)\b", re.IGNORECASE)

    def propose(self, context: RunContext) -> Proposal:
        script = getattr(self, f"_script_{context.script.replace('-', '_')}", None)
        if script is None:
            return FinalAnswer(f"scripted provider has no script named {context.script!r}")
        proposal: Proposal = script(context)
        return proposal

    def _script_refund_triage(self, context: RunContext) -> Proposal:
        done = [h for h in context.history if h["tool"] == "issue_refund"]
        if done:
            return FinalAnswer(_summarise(done[-1], success="Refund issued"))
        ticket = str(context.input.get("ticket", ""))
        confidence = 0.9
        if self.STRONG.search(ticket):
            confidence += 0.06
        if self.HEDGES.search(ticket):
            confidence -= 0.35
        confidence = round(min(max(confidence, 0.05), 0.99), 2)
        reason = ticket.strip()[:200] or "customer request"
        return ToolCallProposal(
            tool="issue_refund",
            arguments={
                "order_id": context.input.get("order_id"),
                "amount": context.input.get("amount"),
                "reason": reason,
            },
            confidence=confidence,
            rationale=(
                "The ticket asks for a refund of the stated amount on the stated order"
                + (" and describes a clear fault." if self.STRONG.search(ticket) else ".")
                + (" The customer is unsure, so confidence is lowered." if self.HEDGES.search(ticket) else "")
            ),
        )

    def _script_crm_cleanup(self, context: RunContext) -> Proposal:
        done = [h for h in context.history if h["tool"] == "delete_contacts"]
        if done:
            return FinalAnswer(_summarise(done[-1], success="Contacts deleted"))
        ids = context.input.get("contact_ids", [])
        return ToolCallProposal(
            tool="delete_contacts",
            arguments={"ids": ids},
            confidence=0.9,
            rationale=f"The request asks to remove {len(ids)} contact(s): {context.input.get('request', '')[:120]}",
        )


def _summarise(outcome: dict[str, Any], *, success: str) -> str:
    if outcome["outcome"] == "executed":
        return f"{success}: {outcome.get('result')}"
    if outcome["outcome"] == "rejected":
        return f"Not done; the reviewer said: {outcome.get('error')}"
    return f"Not done ({outcome['outcome']}): {outcome.get('error')}"


_providers: dict[str, Provider] = {"scripted": ScriptedProvider()}


def register_provider(name: str, provider: Provider) -> None:
    _providers[name] = provider


def provider_for(name: str) -> Provider:
    try:
        return _providers[name]
    except KeyError:
        raise LookupError(f"no provider named {name!r}") from None
