"""What an MCP client is told about its call: the tool's result, the reason it did not run, or "still waiting".

A refusal, a rejection, a denial or an expiry is a tool error the agent can read and act on
(`isError`, with the reason), not a protocol error: the call was understood and answered.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types

from agents.guard import GuardRefusal
from approvals.models import ActionRequest, ActionStatus, Verdict

# States after which the action will not change by itself: the answer is final.
FINAL = frozenset(
    {
        ActionStatus.EXECUTED,
        ActionStatus.FAILED,
        ActionStatus.REJECTED,
        ActionStatus.DENIED,
        ActionStatus.EXPIRED,
        ActionStatus.CANCELLED,
        ActionStatus.COMPENSATED,
    }
)


def _text(text: str, *, error: bool, action: ActionRequest | None = None, **meta: Any) -> types.CallToolResult:
    stamp = {"countersign/action": action.pk, "countersign/status": action.status, **meta} if action else meta
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], is_error=error, _meta=stamp or None
    )


def invalid(message: str) -> types.CallToolResult:
    """The call's arguments or `_meta` broke the input boundary's limits: nothing was written."""
    return _text(f"Refused (invalid_request): {message}", error=True)


def refused(refusal: GuardRefusal) -> types.CallToolResult:
    detail = "; ".join(f"{d.get('field', '')}: {d.get('message', '')}" for d in refusal.details or [])
    return _text(f"Refused ({refusal.code}): {refusal.message}" + (f" ({detail})" if detail else ""), error=True)


def final(action: ActionRequest) -> types.CallToolResult:
    """The answer for an action in a FINAL state."""
    decision = getattr(action, "decision", None)
    who = decision.reviewer.get_username() if decision is not None else ""
    if action.status in (ActionStatus.EXECUTED, ActionStatus.COMPENSATED):
        result = action.result if isinstance(action.result, dict) else {"result": action.result}
        lines = [json.dumps(result, ensure_ascii=False, sort_keys=True)]
        edited = decision is not None and decision.verdict == Verdict.EDIT
        if edited:
            lines.insert(
                0,
                f"A reviewer ({who}) edited the arguments before it ran; it ran with "
                f"{json.dumps(action.arguments, ensure_ascii=False, sort_keys=True)}.",
            )
        if action.status == ActionStatus.COMPENSATED:
            lines.append("It was undone afterwards.")
        answer = _text("\n".join(lines), error=False, action=action, **{"countersign/edited": edited})
        answer.structured_content = result
        return answer
    if action.status == ActionStatus.REJECTED:
        reason = decision.comment if decision is not None else ""
        return _text(f"Rejected by {who or 'a reviewer'}: {reason}", error=True, action=action)
    if action.status == ActionStatus.DENIED:
        return _text(f"Denied by policy: {action.route_reason}", error=True, action=action)
    if action.status == ActionStatus.EXPIRED:
        return _text(f"Nobody decided in time; the request expired. {action.error}".strip(), error=True, action=action)
    if action.status == ActionStatus.CANCELLED:
        return _text(f"Cancelled. {action.error}".strip(), error=True, action=action)
    return _text(f"The tool failed: {action.error}", error=True, action=action)


def waiting(action: ActionRequest) -> types.CallToolResult:
    """Not an error: the call is queued, and calling again with the same arguments joins it."""
    if action.status == ActionStatus.IN_DOUBT:
        state = "was interrupted while running; a person is checking whether it took effect"
    elif action.status == ActionStatus.PENDING:
        due = f" (decision due by {action.due_at:%Y-%m-%d %H:%M} UTC)" if action.due_at else ""
        state = f"is waiting for a reviewer{due}"
    else:
        state = "is approved and running"
    return _text(
        f"Pending: request #{action.pk} for {action.tool} {state}. Call {action.tool} again with the same "
        "arguments to get its result; an identical call joins this request instead of opening another.",
        error=False,
        action=action,
    )
