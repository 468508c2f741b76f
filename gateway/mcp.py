"""Countersign as an MCP server, one endpoint per agent: `/mcp/agents/<slug>/`, streamable HTTP.

The caller is the holder of an API token with the operate right on that agent (`Authorization:
Bearer`); anyone else gets 401, and another agent's endpoint answers 404. The endpoint offers the
agent's enabled tools. Every tools/call takes the path of a hosted run's call: the input boundary,
guard, policy, injection screening, breakers, budgets, audit and the live inbox
(`gateway.services.gateway_call_open` → `approvals.routing.route_tool_call`); the execution runs in a
worker, exactly once. The call is held while that happens; one that waits for a person longer than
GATEWAY_HOLD_SECONDS is answered "pending, call again", and an identical call joins it.

The protocol is the official MCP Python SDK's (`mcp`): its low-level server, stateless, so that any
web process can answer any request (the state is in the database, not in a session).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import mcp_types as types
from channels.db import database_sync_to_async
from django.conf import settings
from django.core import signing
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import ValidationError

from agents.tools import Impact, Tool
from approvals.settled import REREAD_SECONDS, watching
from core.inbound import MAX_BODY_BYTES, InputRefused, Problem, refuse_invalid, refuse_text
from gateway import answers
from gateway.models import GatewayTask
from gateway.selectors import (
    UNAUTHORIZED,
    Caller,
    action_of,
    call_state,
    caller_for,
    offered_tools,
    task_for,
    task_state,
    tasks_page,
)
from gateway.services import (
    Opened,
    TaskFinished,
    TooManyTasks,
    gateway_call_answered,
    gateway_call_open,
    gateway_task_cancel,
)

logger = logging.getLogger(__name__)

PATH = re.compile(r"^/mcp/agents/(?P<slug>[-a-zA-Z0-9_]{1,50})/?$")
CALLER = "countersign.caller"  # the ASGI scope key the endpoint hands the handlers the caller under
CONFIDENCE_KEY = "countersign/confidence"
RATIONALE_KEY = "countersign/rationale"

T = TypeVar("T")


async def _off_loop(work: Callable[..., T], /, **kwargs: Any) -> T:
    # Not the thread every sync view shares (thread_sensitive): a held call polls while views run.
    return await database_sync_to_async(work, thread_sensitive=False)(**kwargs)


def _caller(ctx: Any) -> Caller:
    caller: Caller = ctx.request.scope[CALLER]
    return caller


def _describe(tool: Tool) -> types.Tool:
    return types.Tool(
        name=tool.name,
        description=tool.description,
        input_schema=tool.json_schema(),
        annotations=types.ToolAnnotations(
            read_only_hint=tool.impact == Impact.READ,
            destructive_hint=tool.impact == Impact.DESTRUCTIVE,
            # An effect outside Countersign's database reaches the world beyond it.
            open_world_hint=not tool.transactional,
        ),
        # Any call may wait for a person: a client with MCP Tasks may take it as a task.
        execution=types.ToolExecution(task_support="optional"),
    )


async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    caller = _caller(ctx)
    offered = await _off_loop(offered_tools, agent=caller.agent)
    return types.ListToolsResult(tools=[_describe(tool) for tool, _ in offered])


def _stated(meta: dict[str, Any]) -> tuple[float, str]:
    """The confidence and rationale a client may state in the call's `_meta`; InputRefused if malformed."""
    confidence = meta.get(CONFIDENCE_KEY, 1.0)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not math.isfinite(confidence):
        raise InputRefused([Problem(f"_meta.{CONFIDENCE_KEY}", "must be a number from 0 to 1")])
    if not 0 <= confidence <= 1:
        raise InputRefused([Problem(f"_meta.{CONFIDENCE_KEY}", "must be a number from 0 to 1")])
    rationale = meta.get(RATIONALE_KEY, "")
    if not isinstance(rationale, str) or len(rationale) > 10_000:
        raise InputRefused([Problem(f"_meta.{RATIONALE_KEY}", "must be a text of at most 10,000 characters")])
    rationale = refuse_text(rationale, path=f"_meta.{RATIONALE_KEY}")
    if CONFIDENCE_KEY not in meta:
        # Routed on the tool's mode, limits, risk flags and screening alone.
        rationale = f"{rationale} (MCP call; no confidence stated)".strip()
    return float(confidence), rationale


async def _open(
    caller: Caller, params: types.CallToolRequestParams, *, as_task: bool = False
) -> Opened | types.CallToolResult:
    """Route the call (or join the identical open one); a refusal is answered as a tool error."""
    try:
        # The name is looked up in the database: a NUL in it is refused here, not by PostgreSQL.
        name = refuse_text(params.name, path="name")
        arguments = refuse_invalid(params.arguments or {}, path="arguments")
        confidence, rationale = _stated(dict(params.meta or {}))
    except InputRefused as exc:
        return answers.invalid(str(exc))
    opened = await _off_loop(
        gateway_call_open,
        agent=caller.agent,
        actor=caller.user,
        tool=name,
        arguments=arguments,
        confidence=confidence,
        rationale=rationale,
        as_task=as_task,
        task_ttl=params.task.ttl if params.task is not None else None,
    )
    if opened.refusal is not None:
        return answers.refused(opened.refusal)
    return opened


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    opened = await _open(_caller(ctx), params)
    if isinstance(opened, types.CallToolResult):
        return opened
    assert opened.call is not None and opened.call.action_id is not None
    return await _answer(ctx, opened.call.pk, opened.call.action_id)


async def _answer(ctx: Any, call_id: int, action_id: int) -> types.CallToolResult:
    """Wait for the call's action to settle, up to the hold, reporting progress; then answer."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    hold = settings.GATEWAY_HOLD_SECONDS
    every = settings.GATEWAY_PROGRESS_SECONDS
    next_note = start + every
    # Woken by the commit that changes the action (approvals.settled); watched before the first read,
    # so no change falls in between, and read again at least every REREAD_SECONDS in case a
    # notification was missed.
    async with watching(action_id) as watch:
        action = action_of(await _off_loop(call_state, call_id=call_id))
        while True:
            if action.status in answers.FINAL:
                await _off_loop(gateway_call_answered, call_id=call_id)
                return answers.final(action)
            now = loop.time()
            if now - start >= hold:
                return answers.waiting(action)
            if now >= next_note:
                await ctx.session.report_progress(
                    round(now - start, 1), None, f"request #{action.pk} for {action.tool}: {action.status}"
                )
                next_note = now + every
            await watch.wait(max(0.0, min(REREAD_SECONDS, start + hold - now, next_note - now)))
            action = action_of(await _off_loop(call_state, call_id=call_id))


# MCP Tasks (protocol revision 2025-11-25). A task-augmented tools/call is routed like any call and
# answered at once with a task (gateway.models.GatewayTask): the requestor's handle on the call, its
# status the action's (answers.TASK_STATUS), and tasks/result the answer the call itself would have had.
# A task is bound to its requestor (the token's user) at its agent's endpoint: nobody else finds it.
TASKS_VERSION = "2025-11-25"
TASKS_CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
TASKS_PAGE = 100
CURSOR_SALT = "gateway.mcp.tasks-list"
# A server-defined JSON-RPC error (-32000 to -32099): the request is valid, a limit refuses it.
LIMIT_REACHED = -32000
# tasks/result wakes on the commit that changes its action (approvals.settled); this re-read is the net
# under a missed notification, so a long wait costs a query every half minute, not every second.
TASK_REREAD_SECONDS = 30.0


class TaskMiddleware:
    """What mcp 2.3 leaves out of Tasks: the capability in `initialize`, and the task-augmented tools/call.

    The SDK defines the 2025-11-25 task types but dispatches none of them, and it checks that a
    tools/call handler returns a CallToolResult. A task-augmented call is answered with a
    CreateTaskResult instead, so it is answered here, ahead of the SDK's handler, with the envelope
    this middleware owns. tasks/* are ordinary request handlers (`McpEndpoint`).
    """

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "initialize":
            result = await call_next(ctx)
            if isinstance(result, dict) and result.get("protocolVersion") == TASKS_VERSION:
                result["capabilities"] = {**result.get("capabilities", {}), "tasks": TASKS_CAPABILITY}
            return result
        # A request (a notification has no id, and nobody to answer); `"task": {}` asks for a task too.
        # At other revisions the `task` field is not a task: the call is served as any other.
        asks_task = ctx.request_id is not None and (ctx.params or {}).get("task") is not None
        if ctx.method == "tools/call" and ctx.protocol_version == TASKS_VERSION and asks_task:
            return await _call_tool_as_task(ctx)
        return await call_next(ctx)


async def _call_tool_as_task(ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
    try:
        params = types.CallToolRequestParams.model_validate(ctx.params, by_name=False)
    except ValidationError:
        raise MCPError(code=INVALID_PARAMS, message="Invalid request parameters") from None
    try:
        opened = await _open(_caller(ctx), params, as_task=True)
    except TooManyTasks as exc:
        raise MCPError(code=LIMIT_REACHED, message=str(exc)) from None
    if isinstance(opened, types.CallToolResult):
        # Not accepted as a task, and nothing was written: the refusal is the error's message.
        raise MCPError(code=INVALID_PARAMS, message=answers.first_text(opened))
    assert opened.task is not None
    created = await _off_loop(task_state, task_id=opened.task.pk)
    return answers.task_created(created, poll_ms=settings.GATEWAY_TASK_POLL_MS)


# What `gateway.services` issues (secrets.token_urlsafe(24)); anything else is no task of ours, unread.
TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


async def _task(caller: Caller, task_id: str) -> GatewayTask:
    task = None
    if TASK_ID.fullmatch(task_id):
        task = await _off_loop(task_for, agent=caller.agent, owner=caller.user, task_id=task_id)
    if task is None:
        raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found (or expired)")
    return task


async def get_task(ctx: Any, params: types.GetTaskRequestParams) -> dict[str, Any]:
    task = await _task(_caller(ctx), params.task_id)
    return answers.wire(answers.task(task, poll_ms=settings.GATEWAY_TASK_POLL_MS))


async def get_task_result(ctx: Any, params: types.GetTaskPayloadRequestParams) -> dict[str, Any]:
    """Blocks until the task reaches a terminal status (the spec's rule), then answers as the call would have."""
    caller = _caller(ctx)
    task = await _task(caller, params.task_id)
    assert task.call.action_id is not None
    async with watching(task.call.action_id) as watch:
        task = await _task(caller, params.task_id)  # read again once watched: no change falls in between
        while answers.task_status(task) == "working":
            await watch.wait(TASK_REREAD_SECONDS)
            task = await _task(caller, params.task_id)
    if task.call.action is not None and task.call.action.status in answers.FINAL:
        # The answer was given: an identical call from now on is a new request. (A cancelled task whose
        # action still runs leaves its call open, so an identical call joins it instead of running twice.)
        await _off_loop(gateway_call_answered, call_id=task.call_id)
    return answers.wire(answers.task_result(task))


async def list_tasks(ctx: Any, params: types.PaginatedRequestParams) -> dict[str, Any]:
    before = None
    if params.cursor is not None:
        try:
            before = int(signing.loads(params.cursor, salt=CURSOR_SALT))
        except (signing.BadSignature, TypeError, ValueError):
            raise MCPError(code=INVALID_PARAMS, message="Invalid cursor") from None
    caller = _caller(ctx)
    found = await _off_loop(tasks_page, agent=caller.agent, owner=caller.user, before=before, limit=TASKS_PAGE + 1)
    page = found[:TASKS_PAGE]
    return answers.wire(
        types.ListTasksResult(
            tasks=[answers.task(task, poll_ms=settings.GATEWAY_TASK_POLL_MS) for task in page],
            next_cursor=signing.dumps(page[-1].pk, salt=CURSOR_SALT) if len(found) > TASKS_PAGE else None,
        )
    )


async def cancel_task(ctx: Any, params: types.CancelTaskRequestParams) -> dict[str, Any]:
    caller = _caller(ctx)
    task = await _task(caller, params.task_id)
    try:
        await _off_loop(gateway_task_cancel, task=task, actor=caller.user)
    except TaskFinished as exc:
        raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
    task = await _task(caller, params.task_id)
    return answers.wire(answers.task(task, poll_ms=settings.GATEWAY_TASK_POLL_MS))


class McpEndpoint:
    """ASGI app for `/mcp/agents/<slug>/`: who calls, which agent, then the SDK's transport."""

    def __init__(self) -> None:
        self.server: Server[Any] = Server(
            "countersign",
            instructions="Tool calls are governed: some wait for a person. A result that says 'Pending' "
            "names the request; call the same tool with the same arguments again to get its result. "
            "A client with MCP Tasks may take any call as a task instead, and fetch its result later.",
            on_list_tools=list_tools,
            on_call_tool=call_tool,
        )
        self.server.add_request_handler("tasks/get", types.GetTaskRequestParams, get_task)
        self.server.add_request_handler("tasks/result", types.GetTaskPayloadRequestParams, get_task_result)
        self.server.add_request_handler("tasks/list", types.PaginatedRequestParams, list_tasks)
        self.server.add_request_handler("tasks/cancel", types.CancelTaskRequestParams, cancel_task)
        self.server.middleware.append(TaskMiddleware())
        self.manager = StreamableHTTPSessionManager(
            app=self.server, stateless=True, max_request_body_size=MAX_BODY_BYTES
        )
        self._running: asyncio.Future[None] | None = None

    async def _started(self) -> None:
        # The manager's task group lives as long as the process's event loop (daphne has no lifespan).
        if self._running is None:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._running = ready

            async def keep() -> None:
                async with self.manager.run():
                    ready.set_result(None)
                    await asyncio.Event().wait()

            self._keeper = asyncio.get_running_loop().create_task(keep())
        await self._running

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        match = PATH.match(scope["path"])
        if match is None:
            await _refuse(send, 404, "not_found", "No such MCP endpoint: /mcp/agents/<agent slug>/")
            return
        token = _bearer(scope)
        if token is None:
            await _refuse(send, 401, "unauthorized", "An API token is required: Authorization: Bearer <token>")
            return
        caller = await _off_loop(caller_for, token=token, slug=match["slug"])
        if caller == UNAUTHORIZED:
            await _refuse(send, 401, "unauthorized", "The token is unknown, revoked, or its user is inactive.")
            return
        if not isinstance(caller, Caller):
            await _refuse(send, 404, "not_found", "No such agent, or not one this token may operate.")
            return
        await self._started()
        await self.manager.handle_request({**scope, CALLER: caller}, receive, send)


def _bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


async def _refuse(send: Any, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="countersign"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
