"""Where background tasks run: a Celery worker, a thread of the web process, or inline.

Every caller goes through `enqueue_on_commit`, so a task is only ever published
for a change that committed (a task published inside the transaction could run
before the commit, or for a change that is then rolled back).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from celery import current_app
from django.conf import settings
from django.db import close_old_connections, transaction

logger = logging.getLogger(__name__)

# The event loop of the embedded ASGI server, recorded by config.asgi on the
# first request. Work runs in threads spawned from that loop, so channel-layer
# sends made by a task hop back onto it: the in-memory layer is not thread-safe.
_server_loop: asyncio.AbstractEventLoop | None = None
_pending: set[concurrent.futures.Future[None]] = set()


def remember_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _server_loop
    _server_loop = loop
    if settings.BACKGROUND_TASKS == "embedded":
        # No beat process in the embedded default: run the periodic jobs here.
        for name, every in settings.PERIODIC_JOBS.items():
            _pending.add(asyncio.run_coroutine_threadsafe(_every(name, every), loop))


async def _every(task_name: str, seconds: float) -> None:

    task = current_app.tasks[task_name]
    while True:
        await asyncio.sleep(seconds)
        await _run_embedded(task, (), 0.0)


# Celery on Redis: 0 is served first. Urgent work overtakes routine work.
PRIORITY_URGENT = 0
PRIORITY_ROUTINE = 5


def enqueue(task: Any, *args: Any, countdown: float | None = None, urgent: bool = False) -> None:
    """Run `task(*args)` in the background according to settings.BACKGROUND_TASKS.

    `task` is a Celery task or its registered name (for a task of an app above the caller).
    """
    if isinstance(task, str):
        task = current_app.tasks[task]
    mode = settings.BACKGROUND_TASKS
    if mode == "celery":
        task.apply_async(args=args, countdown=countdown, priority=PRIORITY_URGENT if urgent else PRIORITY_ROUTINE)
    elif mode == "embedded" and _server_loop is not None and _server_loop.is_running():
        future = asyncio.run_coroutine_threadsafe(_run_embedded(task, args, countdown or 0.0), _server_loop)
        _pending.add(future)
        future.add_done_callback(_pending.discard)
    else:
        # Inline: tests, and management commands of the embedded default. A
        # countdown is not waited for: the retry runs at once.
        task(*args)


def enqueue_on_commit(task: Any, *args: Any, countdown: float | None = None, urgent: bool = False) -> None:
    # Robust outside tests: a broker hiccup must not turn a committed decision
    # into a 500; the sweeper republishes what was committed but never started.
    robust = settings.BACKGROUND_TASKS != "inline"
    transaction.on_commit(lambda: enqueue(task, *args, countdown=countdown, urgent=urgent), robust=robust)


async def _run_embedded(task: Callable[..., Any], args: tuple[Any, ...], countdown: float) -> None:
    if countdown > 0:
        await asyncio.sleep(countdown)

    def call() -> None:
        close_old_connections()
        try:
            task(*args)
        except Exception:
            logger.exception("embedded background task %s failed", getattr(task, "name", task))
        finally:
            close_old_connections()

    await sync_to_async(call, thread_sensitive=False)()
