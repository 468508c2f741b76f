"""Confirmed runs for golden-set tests, and a provider whose behaviour follows its system prompt.

The scripted provider reads only the run's input, never the system prompt, so a changed
prompt cannot change what it proposes. `PromptSensitive` is the scripted refund rules
(the real ScriptedProvider underneath) steered by phrases in the prompt; it is registered
only by these tests, under PROVIDER.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agents.models import Agent, Run, RunOutcome
from agents.providers import FinalAnswer, ProviderError, ProviderResult, RunContext, ToolCallProposal
from agents.providers.scripted import ScriptedProvider
from agents.services import run_start
from approvals.decisions import action_request_decide
from approvals.models import ActionRequest
from tests.agents.fakes import use_provider
from tests.conftest import refund_input, user

PROVIDER = "prompt-sensitive"
# Review above 100 (the refund agent's auto limit); each order's total covers it (ORD-1001..1007).
AMOUNT = 120
ORDERS = [f"ORD-{n}" for n in range(1001, 1008)]

HALVES = "Refund half of what is asked."
ASKS = "Ask for the receipt first."
FAILS = "FAIL: the model server answers 429."
CRASHES = "CRASH: the provider raises."


class PromptSensitive:
    def __init__(self) -> None:
        self.prompts: list[str] = []

    def propose(self, context: RunContext) -> ProviderResult:
        prompt = context.system_prompt
        self.prompts.append(prompt)
        if FAILS in prompt:
            raise ProviderError("rate_limited", "429 Too Many Requests", transient=True)
        if CRASHES in prompt:
            raise RuntimeError("the model server sent garbage")
        proposal = ScriptedProvider().propose(context).proposal
        if isinstance(proposal, ToolCallProposal) and ASKS in prompt:
            return ProviderResult(FinalAnswer("Please send the receipt."), model=PROVIDER)
        if isinstance(proposal, ToolCallProposal) and HALVES in prompt:
            proposal = replace(proposal, arguments={**proposal.arguments, "amount": proposal.arguments["amount"] / 2})
        return ProviderResult(proposal, model=PROVIDER)


def use_prompt_sensitive(agent: Agent) -> PromptSensitive:
    provider = use_provider(agent, PromptSensitive(), PROVIDER)
    assert isinstance(provider, PromptSensitive)
    return provider


def confirmed_run(agent: Agent, commit: Any, *, order: str, edit: dict[str, Any] | None = None) -> Run:
    """A run that went to review, was approved (or edited and approved) by the reviewer, executed and finished."""
    with commit():
        run = run_start(agent=agent, input=refund_input(amount=AMOUNT, order=order), actor=None)
    action = ActionRequest.objects.get(run=run)
    with commit():
        if edit is None:
            action_request_decide(action=action, actor=user("reviewer"), verdict="approve")
        else:
            arguments = {**action.arguments, **edit}
            action_request_decide(action=action, actor=user("reviewer"), verdict="edit", arguments=arguments)
    run.refresh_from_db()
    assert run.outcome == (RunOutcome.DONE if edit is None else RunOutcome.DONE_WITH_EDITS), run.outcome
    return run


def golden_runs(agent: Agent, commit: Any, count: int = 5) -> list[Run]:
    """`count` confirmed runs: the first edited to half the amount, the rest approved as proposed."""
    runs = [confirmed_run(agent, commit, order=ORDERS[0], edit={"amount": AMOUNT // 2})]
    runs += [confirmed_run(agent, commit, order=order) for order in ORDERS[1:count]]
    return runs
