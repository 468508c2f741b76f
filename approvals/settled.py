"""Waking whoever waits on an action the moment its status changes (an MCP call held by the gateway).

`approvals.transitions.action_transition`, the one writer of an action's status, sends
`pg_notify('countersign_action', '<id>')` in the transaction that moves it: PostgreSQL delivers it
at COMMIT, and not at all on a rollback. Each web process keeps one connection LISTENing
(`_Listener`, started on first use, reconnecting after a failure) and wakes the waiters of that id.

A notification can still be missed (the listener was reconnecting), and SQLite has none: a waiter
always re-reads the row after at most REREAD_SECONDS, so a miss costs latency, never an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from django.db import connection, connections

from core.transactions import NOTIFY, defer, register_flusher

logger = logging.getLogger(__name__)

CHANNEL = "countersign_action"
# A waiter reads what it waits on again at least this often, in case a notification was missed.
REREAD_SECONDS = 1.0


def notify_changed(action_id: int, agent_id: int) -> None:
    """Inside the transaction that changes the action's status: its waiters wake once it commits."""
    if connection.vendor == "postgresql":
        defer(NOTIFY, f"{action_id}:{agent_id}")  # sent with the transaction's last writes, just before COMMIT


def _send_notifications(connection: Any, items: list[str]) -> None:
    with connection.cursor() as cursor:
        # One statement for the transaction's changes; each action once, however often it moved.
        cursor.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", [CHANNEL, sorted(set(items))])


register_flusher(NOTIFY, _send_notifications)


class Watch:
    """Set when the watched action may have changed; the waiter clears it and reads the row again."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """True if woken by a change, False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            return False
        self.changed.clear()
        return True


class _Listener:
    def __init__(self) -> None:
        self.watches: dict[int, set[Watch]] = {}  # by action id
        self.agent_watches: dict[int, set[Watch]] = {}  # by agent id: any of its actions
        self.task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        wrapper = connections["default"]
        if wrapper.vendor != "postgresql":
            return
        params = {k: v for k, v in wrapper.get_connection_params().items() if k not in {"cursor_factory", "context"}}
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as listening:
                    await listening.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.5
                    self._wake_all()  # what changed while we were not listening is read again
                    async for note in listening.notifies():
                        self._wake(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("settled: lost the LISTEN connection; waiters poll until it is back", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _wake(self, payload: str) -> None:
        action, _, agent = payload.partition(":")
        if action.isascii() and action.isdigit():
            for watch in self.watches.get(int(action), ()):
                watch.changed.set()
        if agent.isascii() and agent.isdigit():
            for watch in self.agent_watches.get(int(agent), ()):
                watch.changed.set()

    def _wake_all(self) -> None:
        for table in (self.watches, self.agent_watches):
            for watches in table.values():
                for watch in watches:
                    watch.changed.set()


_listeners: dict[Any, _Listener] = {}


def _listener() -> _Listener:
    loop = asyncio.get_running_loop()
    listener = _listeners.get(loop)
    if listener is None:
        listener = _listeners[loop] = _Listener()
    listener.ensure_running()
    return listener


@contextlib.asynccontextmanager
async def _watch(table: dict[int, set[Watch]], key: int) -> AsyncIterator[Watch]:
    watch = Watch()
    table.setdefault(key, set()).add(watch)
    try:
        yield watch
    finally:
        watches = table.get(key, set())
        watches.discard(watch)
        if not watches:
            table.pop(key, None)


@contextlib.asynccontextmanager
async def watching(action_id: int) -> AsyncIterator[Watch]:
    """Watch one action: registered before the caller first reads it, so no change falls in between."""
    async with _watch(_listener().watches, action_id) as watch:
        yield watch


@contextlib.asynccontextmanager
async def watching_agent(agent_id: int) -> AsyncIterator[Watch]:
    """Watch every action of one agent (a stream of its decisions)."""
    async with _watch(_listener().agent_watches, agent_id) as watch:
        yield watch
