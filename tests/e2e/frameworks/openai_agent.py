"""An agent built with the OpenAI Agents SDK, its model the SDK's own ScriptedModel (offline, no key): it calls
send_invoice twice; Countersign decides each call. Run as its own process (the SDK's package is named `agents`,
as Countersign's app is). Prints what ran and what the model was told, as JSON."""

from __future__ import annotations

import asyncio
import json
import os

from agents import Agent, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from countersign import AsyncCountersign
from countersign.adapters.openai_agents import CountersignApprovals

ran: list[dict[str, object]] = []


async def send_invoice(customer: str, amount: float) -> dict[str, object]:
    """Send an invoice to a customer."""
    ran.append({"customer": customer, "amount": amount})
    return {"invoice": f"INV-{len(ran)}", "amount": amount}


async def main() -> None:
    set_tracing_disabled(True)
    model = ScriptedModel(
        [
            [function_call("send_invoice", {"customer": "ACME", "amount": 120}, call_id="call-1")],
            [function_call("send_invoice", {"customer": "Initech", "amount": 40}, call_id="call-2")],
            [assistant_message("Done.")],
        ]
    )
    client = AsyncCountersign(os.environ["COUNTERSIGN_URL"], os.environ["COUNTERSIGN_TOKEN"], agent="refund-triage")
    approvals = CountersignApprovals(client, confidence=0.6)
    agent = Agent(name="billing", model=model, tools=[approvals.tool(send_invoice)])
    result = await approvals.run(agent, "Bill ACME and Initech")
    await client.aclose()
    # What the model was given back for each call: the tool outputs in the last input it received.
    told = [
        item.get("output")
        for item in model.calls[-1].input
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]
    print(json.dumps({"ran": ran, "told": told, "final": result.final_output}))


asyncio.run(main())
