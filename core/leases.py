"""Short leases renewed by a heartbeat, so work whose worker died is picked up within seconds.

A worker that takes a run's step or an execution holds a lease of
LEASE_SECONDS, which the process's lease keeper (one thread) renews every
third of that while it works. A SIGKILLed worker stops renewing; the sweeper (every
SWEEP_INTERVAL_SECONDS) finds the lease expired and hands the work on, so the
interrupted work settles within LEASE_SECONDS + SWEEP_INTERVAL_SECONDS.

The renewal is a compare-and-set on the holder's token: a worker whose work
was handed on stops renewing, and its final write (which checks the same
token) is refused.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from core.transactions import time_limit

logger = logging.getLogger(__name__)


def lease_until() -> datetime:
    return timezone.now() + timedelta(seconds=settings.LEASE_SECONDS)


def renewal_until(deadline: datetime, extend: Callable[[datetime], int]) -> Callable[[datetime], int]:
    """A heartbeat's `renew` that extends the lease with `extend(until)`, never past `deadline`, and stops there.

    Work that outlives its deadline is taken as hung: its lease runs out, the sweeper hands the work on,
    and the hung attempt's late writes are refused by its token or attempt number.
    """

    def renew(until: datetime) -> int:
        if timezone.now() >= deadline:
            return 0
        return extend(min(until, deadline))

    return renew


class _Keeper:
    """The one thread per process that renews every lease its work holds.

    A thread per step cost a start and a join (two hand-offs between threads, each waiting for a core on a
    busy machine) for every step and execution. The keeper starts a round every LEASE_SECONDS / 3 (or as
    soon as a longer round before it ends) and renews what is held then. Each renewal gives up after half
    a period (`_bounded`: a row lock it waits on, a statement that hangs), so one stuck renewal holds the
    others back by that much, not for good; a renewal that fails is tried again the next round. It starts
    with the first lease its process holds.
    """

    def __init__(self) -> None:
        self._keys = itertools.count()
        self.forked()

    def forked(self) -> None:
        """A fresh start: the parent's thread, its leases and the state of its lock stay with the parent."""
        self._guard = threading.Lock()
        self._held: dict[int, Callable[[datetime], int]] = {}
        self._thread: threading.Thread | None = None

    def hold(self, renew: Callable[[datetime], int]) -> int:
        with self._guard:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
            key = next(self._keys)
            self._held[key] = renew
            return key

    def drop(self, key: int) -> None:
        with self._guard:
            self._held.pop(key, None)

    def _run(self) -> None:
        due = time.monotonic()
        while True:
            due += settings.LEASE_SECONDS / 3  # at a fixed rate: a round's own length does not push the next
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic())
            try:
                self._round()
            except Exception:  # never let the keeper die: every lease of the process depends on it
                logger.exception("lease keeper: a renewal round failed")

    def _round(self) -> None:
        with self._guard:
            keys = list(self._held)
        if not keys:
            return
        try:
            for key in keys:
                with self._guard:
                    renew = self._held.get(key)  # dropped meanwhile: its work is over
                if renew is None:
                    continue
                try:
                    if not _bounded(renew):
                        self.drop(key)  # lost, or past its deadline: no more renewals
                except Exception:
                    # The database is away: the lease may run out, and the sweeper will act.
                    logger.warning("lease renewal failed", exc_info=True)
                    close_old_connections()
        finally:
            connections.close_all()  # the keeper's connection goes back to the pool until the next round


def _bounded(renew: Callable[[datetime], int]) -> int:
    """`renew(lease_until())` in a transaction of its own that PostgreSQL ends after half a keeper period
    (a lock it waits on, a statement that runs on): the round goes on to the next lease."""
    with transaction.atomic():
        time_limit(settings.LEASE_SECONDS / 6, locks=True)
        return renew(lease_until())


_keeper = _Keeper()
os.register_at_fork(after_in_child=_keeper.forked)  # a prefork pool child starts its own keeper


@contextmanager
def heartbeat(renew: Callable[[datetime], int]) -> Iterator[None]:
    """Have `renew(new_lease_until)` called every LEASE_SECONDS / 3 while the block runs (by the process's
    lease keeper, _Keeper).

    `renew` returns how many rows it extended; 0 means the lease was lost and
    its renewals stop. Inline mode (tests, the embedded default's commands)
    has no other worker to hand work to, so it needs no heartbeat.
    """
    if settings.BACKGROUND_TASKS == "inline":
        yield
        return
    key = _keeper.hold(renew)
    try:
        yield
    finally:
        _keeper.drop(key)
