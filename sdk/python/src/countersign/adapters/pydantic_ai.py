"""PydanticAI: Countersign decides its approval-required (deferred) tools.

Register the tool with ``requires_approval=True`` and wrap its body with ``CountersignDeferred.tool``;
give the agent ``output_type=[YourOutput, DeferredToolRequests]``. ``CountersignDeferred.run`` answers each
deferred approval from Countersign and resumes: approved is ``True``, edited is
``ToolApproved(override_args=...)``, rejected, denied or expired is ``ToolDenied(reason)``. The tool's body
runs under the grant, with the approved arguments.

    gate = CountersignDeferred(AsyncCountersign(url, token, agent="billing-bot"))

    @agent.tool(requires_approval=True)
    @gate.tool
    async def send_invoice(ctx: RunContext, customer: str, amount: float) -> str: ...

    result = await gate.run(agent, "Bill ACME for March")
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults, RunContext, ToolApproved, ToolDenied
from pydantic_ai.agent import AgentRunResult

from countersign.adapters._calls import carry_out
from countersign.client import AsyncCountersign
from countersign.errors import NotApproved
from countersign.models import Approval

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class CountersignDeferred:
    def __init__(self, client: AsyncCountersign, *, confidence: float = 1.0, timeout: float | None = None) -> None:
        self.client = client
        self.confidence = confidence
        self.timeout = timeout
        self._approved: dict[str, Approval] = {}  # by tool call id, until the tool runs

    def tool(self, fn: F) -> F:
        """The tool's body runs under Countersign's grant (it takes the RunContext first, as PydanticAI tools do)."""

        @functools.wraps(fn)
        async def governed(ctx: RunContext[Any], **arguments: Any) -> Any:
            approval = self._approved.pop(ctx.tool_call_id or "", None)
            if approval is None:
                raise RuntimeError("not run: Countersign has no approval for this call")
            return await carry_out(self.client, approval, functools.partial(fn, ctx))

        return governed  # type: ignore[return-value]

    async def run(self, agent: Agent[Any, Any], prompt: str, **kwargs: Any) -> AgentRunResult[Any]:
        """agent.run, with every deferred approval decided by Countersign, until the output is not deferred."""
        result = await agent.run(prompt, **kwargs)
        while isinstance(result.output, DeferredToolRequests):
            answers: dict[str, bool | ToolApproved | ToolDenied] = {}
            for call in result.output.approvals:
                arguments = call.args_as_dict()
                try:
                    approval = await self.client.ask(
                        call.tool_name, arguments, confidence=self.confidence, timeout=self.timeout
                    )
                except NotApproved as refusal:
                    answers[call.tool_call_id] = ToolDenied(f"Not approved by Countersign: {refusal.reason}")
                    continue
                self._approved[call.tool_call_id] = approval
                answers[call.tool_call_id] = ToolApproved(override_args=approval.arguments) if approval.edited else True
            result = await agent.run(
                message_history=result.all_messages(),
                deferred_tool_results=DeferredToolResults(approvals=answers),
                **{k: v for k, v in kwargs.items() if k != "message_history"},
            )
        return result
