"""LangGraph: a node asks with ``interrupt``; Countersign's decision is the value the graph resumes with.

Inside a node, ``countersign_call(client, tool, arguments, fn)`` interrupts the graph with the call;
``CountersignResumer.run`` (the driver) answers each such interrupt from Countersign and resumes the graph
with ``Command(resume=...)``, mapping the decision to the resume value:

- approved: ``{"verdict": "approve", "action": id, "arguments": ...}``
- edited:   ``{"verdict": "edit", "action": id, "arguments": <the edited ones>}``
- rejected, denied or expired: ``{"verdict": "reject", "reason": ...}``

On resume the node runs ``fn`` under the grant with the resume value's arguments, or gets ``Rejected``
(``NotApproved``) carrying the reason, for the graph to route on. A graph with interrupts needs a
checkpointer, as LangGraph requires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.types import Command, interrupt

from countersign.client import Countersign, verdict
from countersign.errors import NotApproved
from countersign.models import Approval

KEY = "countersign"


def countersign_call(
    client: Countersign,
    tool: str,
    arguments: dict[str, Any],
    fn: Callable[..., Any],
    *,
    confidence: float = 1.0,
    rationale: str = "",
) -> Any:
    """In a node: pause the graph for Countersign's decision, then run `fn` as approved (or raise the reason)."""
    decision = interrupt(
        {KEY: {"tool": tool, "arguments": arguments, "confidence": confidence, "rationale": rationale}}
    )
    if decision.get("verdict") == "reject":
        raise NotApproved(str(decision.get("reason", "not approved")), action=None, code="rejected")
    # The action as it is now: the grant, checked against the approved call, is the authority, not the payload.
    approval: Approval = verdict(client.get(int(decision["action"])))
    return client.carry_out(approval, fn)


class CountersignResumer:
    def __init__(self, client: Countersign, *, timeout: float | None = None) -> None:
        self.client = client
        self.timeout = timeout

    def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        """The resume value for one interrupt's call."""
        try:
            approval = self.client.ask(
                request["tool"],
                request["arguments"],
                confidence=float(request.get("confidence", 1.0)),
                rationale=str(request.get("rationale", "")),
                timeout=self.timeout,
            )
        except NotApproved as refusal:
            return {"verdict": "reject", "reason": refusal.reason}
        return {
            "verdict": "edit" if approval.edited else "approve",
            "action": approval.action.id,
            "arguments": approval.arguments,
        }

    def run(self, graph: Any, input: Any, config: dict[str, Any]) -> Any:
        """graph.invoke, resumed with Countersign's decision for every interrupt it stops at, until it ends."""
        output = graph.invoke(input, config)
        while isinstance(output, dict) and output.get("__interrupt__"):
            resume = {}
            for pending in output["__interrupt__"]:
                value = pending.value
                if not (isinstance(value, dict) and KEY in value):
                    return output  # someone else's interrupt: theirs to answer
                resume[pending.id] = self.decide(value[KEY])
            output = graph.invoke(Command(resume=resume), config)
        return output
