"""The OpenAI Agents SDK: Countersign decides its tool approvals.

A tool made with ``CountersignApprovals.tool`` asks for approval (``needs_approval``), so a run stops with
an interruption for each call to it. ``CountersignApprovals.run`` answers each interruption from
Countersign (submit, wait for the person) and resumes: an approval (``RunState.approve``) lets the tool
run, under the grant and with the approved arguments, a reviewer's edit included (the model is told of
the edit in the result); a rejection, denial or expiry is ``RunState.reject`` with the reason as the
message the model sees.

    approvals = CountersignApprovals(AsyncCountersign(url, token, agent="billing-bot"))
    agent = Agent(name="billing", tools=[approvals.tool(send_invoice)])
    result = await approvals.run(agent, "Bill ACME for March")
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from openai.types.responses import ResponseFunctionToolCall

from agents import Agent, FunctionTool, Runner, RunResult, function_tool
from agents.tool_context import ToolContext
from countersign.adapters._calls import carry_out, edited_note
from countersign.client import AsyncCountersign
from countersign.errors import NotApproved
from countersign.models import Approval

Confidence = float | Callable[[str, dict[str, Any]], float]


class CountersignApprovals:
    def __init__(self, client: AsyncCountersign, *, confidence: Confidence = 1.0, timeout: float | None = None):
        self.client = client
        self.confidence = confidence
        self.timeout = timeout
        self._approved: dict[str, Approval] = {}  # by the model's call id, until the tool runs

    def tool(self, fn: Callable[..., Any], *, name: str | None = None) -> FunctionTool:
        """`fn` as a function tool (its schema from its signature) that runs only as Countersign approved it."""
        plain = function_tool(fn, name_override=name) if name else function_tool(fn)

        async def invoke(ctx: ToolContext[Any], _arguments: str) -> str:
            approval = self._approved.pop(ctx.tool_call_id, None)
            if approval is None:  # approved outside Countersign (always_approve, a resumed state)
                return "not run: Countersign has no approval for this call"
            result = await carry_out(self.client, approval, fn)
            return json.dumps(result, ensure_ascii=False, default=str) + edited_note(approval)

        return FunctionTool(
            name=plain.name,
            description=plain.description,
            params_json_schema=plain.params_json_schema,
            on_invoke_tool=invoke,
            strict_json_schema=plain.strict_json_schema,
            needs_approval=True,
        )

    async def run(self, agent: Agent[Any], input: Any, **kwargs: Any) -> RunResult:
        """Runner.run, with every tool approval it stops for decided by Countersign, until the run ends."""
        result = await Runner.run(agent, input, **kwargs)
        while result.interruptions:
            state = result.to_state()
            for item in result.interruptions:
                call = item.raw_item
                if not isinstance(call, ResponseFunctionToolCall):
                    raise TypeError(
                        f"{item.tool_name} waits for an approval Countersign does not give (not a function)"
                    )
                tool = item.tool_name or call.name
                arguments = json.loads(call.arguments or "{}")
                stated = self.confidence(tool, arguments) if callable(self.confidence) else self.confidence
                try:
                    approval = await self.client.ask(tool, arguments, confidence=stated, timeout=self.timeout)
                except NotApproved as refusal:
                    state.reject(item, rejection_message=f"Not approved by Countersign: {refusal.reason}")
                else:
                    self._approved[call.call_id] = approval
                    state.approve(item)
            result = await Runner.run(agent, state, **kwargs)
        return result
