"""What the adapters share: running a tool function, sync or async, under an approval's grant."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

from countersign.client import AsyncCountersign
from countersign.models import Approval


async def carry_out(client: AsyncCountersign, approval: Approval, fn: Callable[..., Any]) -> Any:
    """Redeem the grant, run `fn(**approved arguments)` (a sync one in a thread), report the outcome."""

    async def run(**arguments: Any) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(**arguments)
        return await asyncio.to_thread(fn, **arguments)

    return await client.carry_out(approval, run)


def edited_note(approval: Approval) -> str:
    """What the model is told when a person changed its call before it ran."""
    if not approval.edited:
        return ""
    arguments = json.dumps(approval.arguments, ensure_ascii=False, sort_keys=True)
    return f" (a reviewer edited this call before it ran; it ran with {arguments})"
