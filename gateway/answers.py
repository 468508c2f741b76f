"""What an MCP client is told about its call: the tool's result, the reason it did not run, or "still waiting".

A refusal, a rejection, a denial or an expiry is a tool error the agent can read and act on
(`isError`, with the reason), not a protocol error: the call was understood and answered.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import mcp_types as types
from pydantic import BaseModel

from agents.guard import GuardRefusal
from approvals.models import ActionRequest, ActionStatus, Verdict
from gateway.models import GatewayTask

# States after which the action will not change by itself: the answer is final. Each with the status an
# MCP task wrapping the call shows (a tool error, `isError`, is a failed task).
TASK_STATUS: dict[str, str] = {
    ActionStatus.EXECUTED: "completed",
    ActionStatus.COMPENSATED: "completed",
    ActionStatus.FAILED: "failed",
    ActionStatus.REJECTED: "failed",
    ActionStatus.DENIED: "failed",
    ActionStatus.EXPIRED: "failed",
    ActionStatus.CANCELLED: "cancelled",
}
FINAL = frozenset(TASK_STATUS)


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


def _state(action: ActionRequest) -> str:
    """Where an action short of FINAL stands, as a phrase: "is waiting for a reviewer (…)"."""
    if action.status == ActionStatus.IN_DOUBT:
        return "was interrupted while running; a person is checking whether it took effect"
    if action.status == ActionStatus.PENDING:
        due = f" (decision due by {action.due_at:%Y-%m-%d %H:%M} UTC)" if action.due_at else ""
        return f"is waiting for a reviewer{due}"
    return "is approved and running"


def waiting(action: ActionRequest) -> types.CallToolResult:
    """Not an error: the call is queued, and calling again with the same arguments joins it."""
    return _text(
        f"Pending: request #{action.pk} for {action.tool} {_state(action)}. Call {action.tool} again with the same "
        "arguments to get its result; an identical call joins this request instead of opening another.",
        error=False,
        action=action,
    )


# MCP Tasks (2025-11-25): what a task-augmented call is told, and what tasks/get and tasks/result answer.
RELATED_TASK = "io.modelcontextprotocol/related-task"
IMMEDIATE_RESPONSE = "io.modelcontextprotocol/model-immediate-response"


def task_status(task: GatewayTask) -> str:
    action = task.call.action
    assert action is not None
    if task.cancelled_at is not None:
        return "cancelled"
    return TASK_STATUS.get(action.status, "working")


def task(task: GatewayTask, *, poll_ms: int) -> types.Task:
    """The task as tasks/get, tasks/list and tasks/cancel show it."""
    action = task.call.action
    assert action is not None
    status = task_status(task)
    if status == "working":
        message = f"Request #{action.pk} for {action.tool} {_state(action)}."
    elif task.cancelled_at is not None:
        message = "Cancelled by request." + (
            ""
            if action.status == ActionStatus.CANCELLED
            else f" The request goes on without this task: {action.status}."
        )
    elif status == "completed":
        message = f"Request #{action.pk} for {action.tool} ran."
    else:
        message = first_text(final(action))
    changes = [task.created_at, action.decided_at, action.executed_at, task.cancelled_at]
    return types.Task(
        task_id=task.task_id,
        status=status,  # type: ignore[arg-type]  # one of TaskStatus, by TASK_STATUS
        status_message=message,
        created_at=task.created_at.isoformat(),
        last_updated_at=max(moment for moment in changes if moment is not None).isoformat(),
        ttl=(task.expires_at - task.created_at) // timedelta(milliseconds=1),
        poll_interval=None if status != "working" else poll_ms,
    )


def task_created(created: GatewayTask, *, poll_ms: int) -> dict[str, Any]:
    """The CreateTaskResult a task-augmented tools/call is answered with at once, as sent on the wire.

    A task begins `working` (the spec's rule), even when the request it joined or opened is already
    answered (denied by policy, say): tasks/get shows that at once.
    """
    action = created.call.action
    assert action is not None
    said = task(created, poll_ms=poll_ms)
    if said.status != "working":
        said.status = "working"
        said.status_message = f"Request #{action.pk} for {action.tool} has its answer: fetch it with tasks/result."
        said.poll_interval = poll_ms
    return wire(types.CreateTaskResult(task=said, _meta={IMMEDIATE_RESPONSE: said.status_message}))


def wire(model: BaseModel) -> dict[str, Any]:
    """A task result as the 2025-11-25 wire has it (no 2026-era `resultType`); the SDK does not shape these."""
    dumped = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    dumped.pop("resultType", None)
    return dumped


def task_result(task: GatewayTask) -> types.CallToolResult:
    """tasks/result for a task in a terminal status: exactly what the call itself would have answered."""
    action = task.call.action
    assert action is not None
    if task.cancelled_at is not None and action.status != ActionStatus.CANCELLED:
        answer = _text(
            f"Cancelled by request; request #{action.pk} goes on without this task ({action.status}).",
            error=True,
            action=action,
        )
    else:
        answer = final(action)
    answer.meta = {**(answer.meta or {}), RELATED_TASK: {"taskId": task.task_id}}
    return answer


def first_text(answer: types.CallToolResult) -> str:
    block = answer.content[0] if answer.content else None
    return block.text if isinstance(block, types.TextContent) else ""
