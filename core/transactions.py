"""Work that must happen last in a transaction, in one documented lock order.

The lock order (docs/architecture.md, "Locks"):

1. domain rows, in the order the service's compare-and-set touches them;
   then the push intents (`OUTBOX`: new outbox rows, which lock nothing shared)
   and the wake-ups of whoever waits on a changed row (`NOTIFY`: pg_notify,
   whose queue lock PostgreSQL takes only inside COMMIT);
2. counters (`COUNTERS`: the dashboard aggregates), sorted by key;
3. the audit append (`AUDIT`: one global lock), last, held from the read of
   the chain's head to COMMIT.

Services do not have to write in that order: `defer(kind, item)` buffers the
counter and audit writes of the current transaction, and the database backend
(`core.backends.*`) runs the flushers in `FLUSH_ORDER` just before COMMIT. An
item deferred inside a savepoint that rolls back is dropped with it, as
Django does with on_commit callbacks.

Flushers run after Django has left the atomic block but before COMMIT, so
they use `connection.cursor()` directly, not the ORM's atomic helpers. On
PostgreSQL they and the COMMIT go out in one pipeline (psycopg's pipeline mode):
none of them but the audit append needs an answer before the next is sent, so a
transaction's last writes cost about two round trips, not one per statement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)

OUTBOX = "outbox"
NOTIFY = "notify"
COUNTERS = "counters"
AUDIT = "audit"
FLUSH_ORDER = (OUTBOX, NOTIFY, COUNTERS, AUDIT)

# A flusher may return what to do once COMMIT succeeded (the audit anchors it).
Flusher = Callable[[Any, list[Any]], Callable[[], None] | None]
_flushers: dict[str, Flusher] = {}


def register_flusher(kind: str, flusher: Flusher) -> None:
    """`flusher(connection, items)` writes the buffered items of `kind` before COMMIT."""
    if kind not in FLUSH_ORDER:
        raise ValueError(f"unknown deferred kind {kind!r}; add it to FLUSH_ORDER in its lock-order place")
    _flushers[kind] = flusher


def defer(kind: str, item: Any, *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Buffer `item` for the current transaction; written just before it commits."""
    connection: Any = connections[using]
    if not connection.in_atomic_block:
        raise RuntimeError(f"defer({kind!r}) needs a transaction: the write belongs to a change")
    connection.deferred_writes.append((set(connection.savepoint_ids), kind, item))
    if _only_test_blocks(connection):
        # Directly inside a test's own transaction (which never commits): write now.
        _run(flush_deferred(connection))


def flush_deferred(connection: Any) -> list[Callable[[], None]]:
    """Write every buffered item, kind by kind in FLUSH_ORDER; return what to run after COMMIT."""
    pending, connection.deferred_writes = connection.deferred_writes, []
    after: list[Callable[[], None]] = []
    for kind in FLUSH_ORDER:
        items = [item for _, k, item in pending if k == kind]
        if items:
            then = _flushers[kind](connection, items)
            if then is not None:
                after.append(then)
    return after


def time_limit(seconds: float, *, locks: bool = False, using: str = DEFAULT_DB_ALIAS) -> None:
    """On PostgreSQL, end the current transaction's statements that run past `seconds` (and, with `locks`,
    its waits for a lock): the statement fails, and the transaction rolls back. Elsewhere, nothing."""
    connection: Any = connections[using]
    if connection.vendor != "postgresql":
        return
    limit = f"{max(1, int(seconds * 1000))}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [limit])
        if locks:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [limit])


def _run(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.exception("after-commit step of a deferred write failed")


def _only_test_blocks(connection: Any) -> bool:
    # Django's TestCase wraps each test in atomic blocks it marks `_from_testcase`;
    # they never commit, so the app's outermost block ends at their level.
    blocks = connection.atomic_blocks
    return bool(blocks) and all(getattr(block, "_from_testcase", False) for block in blocks)


class DeferredWritesMixin:
    """Database wrapper behaviour: run deferred writes before COMMIT, drop them on rollback."""

    deferred_writes: list[tuple[set[str], str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deferred_writes = []

    def _commit(self) -> None:
        after: list[Callable[[], None]] = []
        if self.deferred_writes:
            try:
                with self._pipelined():
                    after = flush_deferred(self)
                    super()._commit()  # type: ignore[misc]
            except BaseException:
                # Nothing of the transaction may commit without its audit rows.
                super()._rollback()  # type: ignore[misc]
                raise
        else:
            super()._commit()  # type: ignore[misc]
        _run(after)

    def _pipelined(self) -> AbstractContextManager[Any]:
        """Where the driver can, the deferred writes and COMMIT are sent without waiting on each answer."""
        return nullcontext()

    def _rollback(self) -> None:
        self.deferred_writes = []
        super()._rollback()  # type: ignore[misc]

    def savepoint_commit(self, sid: str) -> None:
        super().savepoint_commit(sid)  # type: ignore[misc]
        if self.deferred_writes and _only_test_blocks(self):
            _run(flush_deferred(self))

    def savepoint_rollback(self, sid: str) -> None:
        super().savepoint_rollback(sid)  # type: ignore[misc]
        self.deferred_writes = [entry for entry in self.deferred_writes if sid not in entry[0]]

    def _close(self) -> None:
        self.deferred_writes = []
        super()._close()  # type: ignore[misc]
