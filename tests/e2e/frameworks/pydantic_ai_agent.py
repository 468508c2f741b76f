"""An agent built with PydanticAI, its model a FunctionModel (PydanticAI's offline test model): it calls
send_invoice twice, an approval-required tool; Countersign decides each call. Prints what ran and what the
model was told, as JSON."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from pydantic_ai import Agent, DeferredToolRequests, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from countersign import AsyncCountersign
from countersign.adapters.pydantic_ai import CountersignDeferred

CALLS = [("ACME", 120), ("Initech", 40)]
ran: list[dict[str, Any]] = []
told: list[str] = []


def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returned = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
    if len(returned) < len(CALLS):
        customer, amount = CALLS[len(returned)]
        args = {"customer": customer, "amount": amount}
        return ModelResponse(parts=[ToolCallPart("send_invoice", args, tool_call_id=f"call-{len(returned) + 1}")])
    told.extend(str(p.content) for p in returned)
    return ModelResponse(parts=[TextPart("Done.")])


async def main() -> None:
    client = AsyncCountersign(os.environ["COUNTERSIGN_URL"], os.environ["COUNTERSIGN_TOKEN"], agent="refund-triage")
    gate = CountersignDeferred(client, confidence=0.6)
    agent = Agent(FunctionModel(model), output_type=[str, DeferredToolRequests])

    @agent.tool(requires_approval=True)
    @gate.tool
    async def send_invoice(ctx: RunContext[None], customer: str, amount: float) -> dict[str, Any]:
        """Send an invoice to a customer."""
        ran.append({"customer": customer, "amount": amount})
        return {"invoice": f"INV-{len(ran)}", "amount": amount}

    result = await gate.run(agent, "Bill ACME and Initech")
    await client.aclose()
    print(json.dumps({"ran": ran, "told": told, "final": result.output}))


asyncio.run(main())
