"""An agent built with LangGraph, its model langchain-core's GenericFakeChatModel (offline): a model node
proposes send_invoice twice, an action node asks Countersign with interrupt() and runs what the resume value
allows. Prints what ran and what the graph recorded, as JSON."""

from __future__ import annotations

import json
import operator
import os
from typing import Annotated, Any, TypedDict

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from countersign import Countersign, NotApproved
from countersign.adapters.langgraph import CountersignResumer, countersign_call

CALLS = [{"customer": "ACME", "amount": 120}, {"customer": "Initech", "amount": 40}]
chat = GenericFakeChatModel(
    messages=iter(
        [
            AIMessage(content="", tool_calls=[{"name": "send_invoice", "args": c, "id": f"call-{i}"}])
            for i, c in enumerate(CALLS)
        ]
        + [AIMessage(content="Done.")]
    )
)
client = Countersign(os.environ["COUNTERSIGN_URL"], os.environ["COUNTERSIGN_TOKEN"], agent="refund-triage")
ran: list[dict[str, Any]] = []


class State(TypedDict, total=False):
    call: dict[str, Any] | None
    told: Annotated[list[str], operator.add]
    final: str


def send_invoice(customer: str, amount: float) -> dict[str, Any]:
    ran.append({"customer": customer, "amount": amount})
    return {"invoice": f"INV-{len(ran)}", "amount": amount}


def think(state: State) -> State:
    message = chat.invoke("next")
    if message.tool_calls:
        return {"call": message.tool_calls[0]}
    return {"call": None, "final": str(message.content)}


def act(state: State) -> State:
    call = state["call"]
    assert call is not None
    try:
        result = countersign_call(client, call["name"], call["args"], send_invoice, confidence=0.6)
    except NotApproved as refusal:
        return {"told": [f"not approved: {refusal.reason}"]}
    return {"told": [json.dumps(result)]}


graph = StateGraph(State)
graph.add_node("think", think)
graph.add_node("act", act)
graph.add_edge(START, "think")
graph.add_conditional_edges("think", lambda s: "act" if s.get("call") else END)
graph.add_edge("act", "think")
app = graph.compile(checkpointer=InMemorySaver())

output = CountersignResumer(client).run(app, {"told": []}, {"configurable": {"thread_id": "billing-1"}})
client.close()
print(json.dumps({"ran": ran, "told": output["told"], "final": output.get("final")}))
