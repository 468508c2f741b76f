"""`require_approval`: a function that runs only once Countersign approved the call, with the approved arguments."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from countersign.client import AsyncCountersign, Countersign

F = TypeVar("F", bound=Callable[..., Any])
Confidence = float | Callable[[dict[str, Any]], float]


def require_approval(
    client: Countersign | AsyncCountersign,
    *,
    tool: str | None = None,
    confidence: Confidence = 1.0,
    rationale: str | Callable[[dict[str, Any]], str] = "",
    timeout: float | None = None,
) -> Callable[[F], F]:
    """Guard a tool function with Countersign.

    Each call is submitted as `tool` (default: the function's name) with its arguments by name, and
    runs only if approved: with the approved arguments (a reviewer's edit included), under a single-use
    grant, its return value or exception reported back. A rejection, a denial or an expiry raises
    `NotApproved` (Rejected, Denied, Expired) carrying the reason. `confidence` and `rationale` may be
    functions of the arguments. An async function needs an AsyncCountersign, a plain one a Countersign.
    """

    def wrap(fn: F) -> F:
        name = tool or fn.__name__
        signature = inspect.signature(fn)

        def arguments_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return dict(bound.arguments)

        def said(arguments: dict[str, Any]) -> tuple[float, str]:
            stated = confidence(arguments) if callable(confidence) else confidence
            why = rationale(arguments) if callable(rationale) else rationale
            return float(stated), why

        if inspect.iscoroutinefunction(fn):
            if not isinstance(client, AsyncCountersign):
                raise TypeError(f"{fn.__name__} is async: guard it with an AsyncCountersign")

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                arguments = arguments_of(args, kwargs)
                stated, why = said(arguments)
                return await client.execute(name, arguments, fn, confidence=stated, rationale=why, timeout=timeout)

            return cast(F, guarded_async)
        if not isinstance(client, Countersign):
            raise TypeError(f"{fn.__name__} is not async: guard it with a Countersign")

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            arguments = arguments_of(args, kwargs)
            stated, why = said(arguments)
            return client.execute(name, arguments, fn, confidence=stated, rationale=why, timeout=timeout)

        return cast(F, guarded)

    return wrap
