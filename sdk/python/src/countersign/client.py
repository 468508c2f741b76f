"""Clients for Countersign's approval protocol, sync and async, over its JSON API.

The protocol, for a tool the agent executes itself (a "caller's tool", declared in Countersign):

1. ``submit`` the call (tool, arguments, confidence, rationale): guard, policy and, if needed, a person;
2. ``wait`` for the decision (a long-poll that is answered the moment it commits);
3. approved: the action carries a grant bound to the SHA-256 of the canonical approved call. Check it
   (``call_digest``), ``redeem`` it right before executing (single-use, before it expires), execute
   exactly the approved arguments (a reviewer may have edited them), and ``report`` the outcome once;
4. rejected, denied or expired: an exception that carries the reason, for the agent to act on.

``execute`` does all of it around one function call; ``require_approval`` makes a decorator of it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from countersign.digest import call_digest
from countersign.errors import (
    Conflict,
    CountersignError,
    Denied,
    Expired,
    GrantMismatch,
    InvalidCall,
    NotApproved,
    NotFound,
    Rejected,
    StillPending,
    Unauthorized,
    Unavailable,
)
from countersign.models import Action, Approval

LONG_POLL = 55.0  # seconds per long-poll (the server answers within 60)
RETRIES = 4  # for requests that are safe to repeat


def _error(response: httpx.Response) -> CountersignError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    detail = str(body.get("detail") or response.reason_phrase or "error")
    code = str(body.get("error") or "error")
    kind: type[CountersignError] = {
        400: InvalidCall,
        401: Unauthorized,
        403: Unauthorized,
        404: NotFound,
        409: Conflict,
    }.get(response.status_code, Unavailable if response.status_code >= 500 else CountersignError)
    return kind(detail, code=code, status=response.status_code, body=body)


def _action(response: httpx.Response) -> Action:
    if response.status_code >= 400:
        raise _error(response)
    return Action.from_api(response.json())


def _retry_after(error: CountersignError, attempt: int) -> float:
    header = None
    if isinstance(error.body, dict):
        header = error.body.get("retry_after")
    return float(header) if header else min(8.0, 0.25 * 2**attempt)


def verdict(action: Action) -> Approval:
    """An approved call as an Approval (its grant checked against the call); otherwise the reason, raised."""
    if action.status in ("approved", "auto_approved"):
        grant = action.grant
        if grant is None:
            raise CountersignError(
                f"action {action.id} was approved without a grant: {action.tool} is executed by Countersign, "
                "not by the agent",
                code="no_grant",
            )
        if call_digest(agent=action.agent, tool=action.tool, arguments=action.arguments) != grant.digest:
            raise GrantMismatch(f"the grant of action {action.id} is not for the arguments it came with")
        return Approval(action)
    decision = action.decision or {}
    if action.status == "rejected":
        raise Rejected(
            str(decision.get("comment") or "rejected"), action=action, reviewer=str(decision.get("reviewer", ""))
        )
    if action.status == "denied":
        raise Denied(action.route_reason or "denied by policy", action=action, code="denied")
    if action.status == "expired":
        raise Expired(
            action.error or "no decision in time, or the grant was not used in time", action=action, code="expired"
        )
    if action.status == "pending":
        raise StillPending(f"action {action.id} is still waiting for a person", action=action)
    raise NotApproved(f"action {action.id} is {action.status}", action=action, code=action.status)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- the protocol's requests, the same for both clients ---


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    # Only what is safe to repeat: a lost answer to a submission or a redemption cannot tell whether it happened.
    retry: bool = True
    json: Any = None
    params: dict[str, Any] | None = None


def _submit(agent: str, tool: str, arguments: dict[str, Any], confidence: float, rationale: str) -> _Request:
    # The agent executes it: a tool Countersign would execute itself is refused (400), never run twice.
    body = {"tool": tool, "arguments": arguments, "confidence": confidence, "rationale": rationale}
    return _Request("POST", f"/api/v1/agents/{agent}/actions", retry=False, json={**body, "executed_by": "caller"})


def _get(action_id: int) -> _Request:
    return _Request("GET", f"/api/v1/actions/{action_id}")


def _wait(action_id: int, left: float) -> _Request:
    return _Request("GET", f"/api/v1/actions/{action_id}/wait", params={"seen": "pending", "timeout": round(left, 3)})


def _redeem(action: Action) -> _Request:
    body = {"grant": _token(action), "arguments": action.arguments}
    return _Request("POST", f"/api/v1/actions/{action.id}/grant/redeem", retry=False, json=body)


def _report(action: Action, result: Any, error: str) -> _Request:
    body: dict[str, Any] = {"grant": _token(action), "arguments": action.arguments}
    body |= {"error": error} if error else {"result": _jsonable(result)}
    return _Request("POST", f"/api/v1/actions/{action.id}/report", json=body)


def _left(deadline: float | None, now: float) -> float:
    """Seconds for the next long-poll: LONG_POLL, or what is left before `deadline`."""
    return LONG_POLL if deadline is None else min(LONG_POLL, deadline - now)


def _failure(response: httpx.Response | None, exc: httpx.TransportError | None) -> CountersignError | None:
    """What to retry: no answer, or a 5xx (with its Retry-After); None when the answer is the caller's to read."""
    if response is None:
        return Unavailable(f"Countersign is unreachable: {exc}", code="unreachable")
    if response.status_code < 500:
        return None
    error = _error(response)
    error.body = {**(error.body or {}), "retry_after": response.headers.get("Retry-After")}
    return error


def _failed_run(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:10000]


class Countersign:
    """A synchronous client for one agent.

    >>> client = Countersign("https://countersign.example", token="…", agent="billing-bot")
    >>> client.execute("send_invoice", {"customer": "ACME", "amount": 120}, send_invoice, confidence=0.8)
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        agent: str,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.agent = agent
        self._http = http or httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, read=LONG_POLL + 15),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Countersign:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the protocol's steps ---

    def submit(self, tool: str, arguments: dict[str, Any], *, confidence: float = 1.0, rationale: str = "") -> Action:
        """Propose the call. Not retried: a lost answer cannot tell whether it was recorded."""
        return _action(self._send(_submit(self.agent, tool, arguments, confidence, rationale)))

    def get(self, action_id: int) -> Action:
        return _action(self._send(_get(action_id)))

    def wait(self, action: Action | int, *, timeout: float | None = None) -> Action:
        """The action once it is decided (or as it is when `timeout` seconds have passed)."""
        current = action if isinstance(action, Action) else self.get(action)
        deadline = None if timeout is None else time.monotonic() + timeout
        while current.status == "pending" and (left := _left(deadline, time.monotonic())) > 0:
            current = _action(self._send(_wait(current.id, left)))
        return current

    def redeem(self, action: Action) -> Action:
        """Claim the grant, right before executing: once, before it expires, with the approved arguments."""
        return _action(self._send(_redeem(action)))

    def report(self, action: Action, *, result: Any = None, error: str = "") -> Action:
        """What came of the call, once. Retried when the answer is lost; the retry finds it reported."""
        try:
            return _action(self._send(_report(action, result, error)))
        except Conflict as exc:
            if exc.code == "already_reported":
                return self.get(action.id)  # an earlier attempt whose answer was lost
            raise

    # --- all of it ---

    def ask(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        confidence: float = 1.0,
        rationale: str = "",
        timeout: float | None = None,
    ) -> Approval:
        """Submit and wait: the approval (with the arguments to use), or the reason it may not run, raised."""
        action = self.submit(tool, arguments, confidence=confidence, rationale=rationale)
        return verdict(self.wait(action, timeout=timeout))

    def execute(
        self,
        tool: str,
        arguments: dict[str, Any],
        run: Callable[..., Any],
        *,
        confidence: float = 1.0,
        rationale: str = "",
        timeout: float | None = None,
    ) -> Any:
        """Ask, then run `run(**approved arguments)` under the grant and report what it returned or raised."""
        approval = self.ask(tool, arguments, confidence=confidence, rationale=rationale, timeout=timeout)
        return self.carry_out(approval, run)

    def carry_out(self, approval: Approval, run: Callable[..., Any]) -> Any:
        """Redeem the approval's grant, run `run(**its arguments)`, report the outcome; return what it returned."""
        action = self.redeem(approval.action)
        try:
            result = run(**approval.arguments)
        except Exception as exc:
            self.report(action, error=_failed_run(exc))
            raise
        self.report(action, result=result)
        return result

    def _send(self, request: _Request) -> httpx.Response:
        for attempt in range(RETRIES + 1):
            response, exc = None, None
            try:
                response = self._http.request(request.method, request.path, json=request.json, params=request.params)
            except httpx.TransportError as lost:
                exc = lost
            error = _failure(response, exc)
            if error is None:
                assert response is not None
                return response
            if not request.retry or attempt == RETRIES:
                raise error
            time.sleep(_retry_after(error, attempt))
        raise AssertionError("unreachable")


class AsyncCountersign:
    """The asynchronous client: the same steps as Countersign, awaited."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        agent: str,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.agent = agent
        self._http = http or httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, read=LONG_POLL + 15),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCountersign:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def submit(
        self, tool: str, arguments: dict[str, Any], *, confidence: float = 1.0, rationale: str = ""
    ) -> Action:
        return _action(await self._send(_submit(self.agent, tool, arguments, confidence, rationale)))

    async def get(self, action_id: int) -> Action:
        return _action(await self._send(_get(action_id)))

    async def wait(self, action: Action | int, *, timeout: float | None = None) -> Action:
        current = action if isinstance(action, Action) else await self.get(action)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while current.status == "pending" and (left := _left(deadline, loop.time())) > 0:
            current = _action(await self._send(_wait(current.id, left)))
        return current

    async def redeem(self, action: Action) -> Action:
        return _action(await self._send(_redeem(action)))

    async def report(self, action: Action, *, result: Any = None, error: str = "") -> Action:
        try:
            return _action(await self._send(_report(action, result, error)))
        except Conflict as exc:
            if exc.code == "already_reported":
                return await self.get(action.id)
            raise

    async def ask(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        confidence: float = 1.0,
        rationale: str = "",
        timeout: float | None = None,
    ) -> Approval:
        action = await self.submit(tool, arguments, confidence=confidence, rationale=rationale)
        return verdict(await self.wait(action, timeout=timeout))

    async def execute(
        self,
        tool: str,
        arguments: dict[str, Any],
        run: Callable[..., Awaitable[Any]],
        *,
        confidence: float = 1.0,
        rationale: str = "",
        timeout: float | None = None,
    ) -> Any:
        approval = await self.ask(tool, arguments, confidence=confidence, rationale=rationale, timeout=timeout)
        return await self.carry_out(approval, run)

    async def carry_out(self, approval: Approval, run: Callable[..., Awaitable[Any]]) -> Any:
        action = await self.redeem(approval.action)
        try:
            result = await run(**approval.arguments)
        except Exception as exc:
            await self.report(action, error=_failed_run(exc))
            raise
        await self.report(action, result=result)
        return result

    async def _send(self, request: _Request) -> httpx.Response:
        for attempt in range(RETRIES + 1):
            response, exc = None, None
            try:
                response = await self._http.request(
                    request.method, request.path, json=request.json, params=request.params
                )
            except httpx.TransportError as lost:
                exc = lost
            error = _failure(response, exc)
            if error is None:
                assert response is not None
                return response
            if not request.retry or attempt == RETRIES:
                raise error
            await asyncio.sleep(_retry_after(error, attempt))
        raise AssertionError("unreachable")


def _token(action: Action) -> str:
    if action.grant is None:
        raise CountersignError(f"action {action.id} has no grant", code="no_grant")
    return action.grant.token
