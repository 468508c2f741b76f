"""The scripted provider: deterministic rules over the run input.

An offline stand-in for an LLM so the demo and the tests run without a model
server. It is labelled as such wherever it shows.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agents.providers import FinalAnswer, Proposal, ProviderResult, RunContext, ToolCallProposal


class ScriptedProvider:
    """Deterministic rules over the run input: a stand-in for an LLM, not one."""

    HEDGES = re.compile(r"\b(maybe|not sure|unsure|unclear|i think|possibly|perhaps)\b", re.IGNORECASE)
    STRONG = re.compile(r"\b(damaged|broken|never arrived|not delivered|charged twice|defective)\b", re.IGNORECASE)

    def propose(self, context: RunContext) -> ProviderResult:
        name = context.settings.model or context.agent_slug
        script = getattr(self, f"_script_{name.replace('-', '_')}", None)
        if script is None:
            return ProviderResult(FinalAnswer(f"scripted provider has no script named {name!r}"), model="scripted")
        proposal: Proposal = script(context)
        return ProviderResult(proposal, model=f"scripted:{name}")

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

    def _script_support_coordinator(self, context: RunContext) -> Proposal:
        done = [h for h in context.history if h["tool"] == "delegate"]
        if done:
            return FinalAnswer(_summarise(done[-1], success="Handled by refund-triage"))
        worker_input = {k: v for k, v in context.input.items() if k != "urgent"}
        return ToolCallProposal(
            tool="delegate",
            arguments={"agent": "refund-triage", "input": worker_input, "urgent": bool(context.input.get("urgent"))},
            confidence=0.95,
            rationale="Refund questions go to the refund-triage worker.",
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
        result = outcome.get("result")
        return f"{success}: {result if isinstance(result, str) else json.dumps(result, default=str)}"
    if outcome["outcome"] == "rejected":
        return f"Not done; the reviewer said: {outcome.get('error')}"
    return f"Not done ({outcome['outcome']}): {outcome.get('error')}"
