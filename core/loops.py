"""An event loop kept in a thread of its own, for sync code that awaits the same async resources again and again.

Async clients keep their connections per event loop (the channel layer's Redis connections, an MCP
session): `async_to_sync` from a plain thread makes a new loop, thread and connections every call. A
KeptLoop makes one the first time and runs every later coroutine on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class KeptLoop:
    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._loop is not None and not self._loop.is_closed()

    def run(self, function: Callable[..., Coroutine[Any, Any, T]], *args: Any, timeout: float) -> T:
        """`function(*args)` to completion on the kept loop; the coroutine is made only there."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True).start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(function(*args), loop).result(timeout=timeout)
