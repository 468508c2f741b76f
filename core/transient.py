"""Which errors are transient: retry them (same idempotency key) or answer 503, never a final state.

Transient means the same work, tried again in a moment, can succeed: a
deadlock, a serialization failure, a connection lost while PostgreSQL
restarts, SQLite's "database is locked". Everything else is final.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import django.db

logger = logging.getLogger(__name__)

try:
    import psycopg
    from psycopg import errors as pg_errors

    _PG_TRANSIENT: tuple[type[BaseException], ...] = (
        pg_errors.DeadlockDetected,
        pg_errors.SerializationFailure,
        pg_errors.LockNotAvailable,
        pg_errors.AdminShutdown,
        pg_errors.CrashShutdown,
        pg_errors.CannotConnectNow,
        pg_errors.ConnectionException,
        psycopg.OperationalError,
        psycopg.InterfaceError,
    )
    _PG_FINAL: tuple[type[BaseException], ...] = (pg_errors.QueryCanceled,)
except ImportError:  # pragma: no cover  (the embedded default needs no psycopg)
    _PG_TRANSIENT = ()
    _PG_FINAL = ()

RETRY_AFTER_SECONDS = 2


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is a database error worth trying again."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _PG_FINAL and isinstance(current, _PG_FINAL):
            # A statement timeout is the tool's own time limit, not a hiccup.
            return False
        if _PG_TRANSIENT and isinstance(current, _PG_TRANSIENT):
            return True
        if isinstance(current, django.db.InterfaceError):
            return True
        if isinstance(current, django.db.OperationalError) and current.__cause__ is None:
            # SQLite raises its own OperationalError, with no psycopg cause.
            return "locked" in str(current) or "busy" in str(current)
        current = current.__cause__ or current.__context__
    return False


def retry_delay(attempt: int) -> float:
    """Seconds before retry number `attempt` (0-based): 0.5, 1, 2, ... capped at 30, with jitter."""
    return min(30.0, 0.5 * 2**attempt) * random.uniform(1.0, 1.5)  # noqa: S311  (jitter, not crypto)


@contextmanager
def retry_on_transient(task: Any) -> Iterator[None]:
    """Inside a bound Celery task: a transient database error re-publishes the task in a moment.

    Tasks are safe to run twice (compare-and-set on status), so a retry of
    work whose transaction rolled back is the same work again.
    """
    try:
        yield
    except Exception as exc:
        if not is_transient(exc) or task.request.called_directly:
            raise
        logger.warning("task %s: transient database error, retrying: %s", task.name, exc)
        raise task.retry(exc=exc, countdown=retry_delay(task.request.retries)) from exc
