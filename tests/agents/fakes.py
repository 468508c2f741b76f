"""Providers for tests: replay fixed proposals, with token usage and scripted failures.

These stand in for a model server only where a test is about the runtime's
own logic; the OpenAI-compatible provider is tested against a real HTTP server.
"""

from __future__ import annotations

from agents.providers import FinalAnswer, ProviderError, ProviderResult, Usage, register_provider


class Sequence:
    def __init__(self, proposals, *, usage=(0, 0), model="sequence", failures=()):
        self.proposals = list(proposals)
        self.usage = Usage(*usage)
        self.model = model
        self.failures = list(failures)  # ProviderErrors raised on the first calls
        self.calls = 0

    def propose(self, context):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        turn = len(context.history)
        if turn < len(self.proposals):
            return ProviderResult(self.proposals[turn], usage=self.usage, model=self.model)
        outcomes = [h["outcome"] for h in context.history]
        return ProviderResult(FinalAnswer(f"done after {turn} results: {outcomes}"), usage=self.usage, model=self.model)


def use_provider(agent, provider, name):
    register_provider(name, provider)
    type(agent).objects.filter(pk=agent.pk).update(provider=name)
    agent.refresh_from_db()
    return provider


__all__ = ["ProviderError", "Sequence", "use_provider"]
