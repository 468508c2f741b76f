"""Short leases renewed by a heartbeat, so work whose worker died is picked up within seconds.

A worker that takes a run's step or an execution holds a lease of
LEASE_SECONDS and renews it every third of that from a background thread
while it works. A SIGKILLed worker stops renewing; the sweeper (every
SWEEP_INTERVAL_SECONDS) finds the lease expired and hands the work on, so the
interrupted work settles within LEASE_SECONDS + SWEEP_INTERVAL_SECONDS.

The renewal is a compare-and-set on the holder's token: a worker whose work
was handed on stops renewing, and its final write (which checks the same
token) is refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

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


@contextmanager
def heartbeat(renew: Callable[[datetime], int]) -> Iterator[None]:
    """Call `renew(new_lease_until)` every LEASE_SECONDS / 3 while the block runs.

    `renew` returns how many rows it extended; 0 means the lease was lost and
    the heartbeat stops. Inline mode (tests, the embedded default's commands)
    has no other worker to hand work to, so it needs no heartbeat.
    """
    if settings.BACKGROUND_TASKS == "inline":
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.LEASE_SECONDS / 3):
                try:
                    if not renew(lease_until()):
                        return
                except Exception:
                    # The database is away: the lease may run out, and the sweeper will act.
                    logger.warning("lease renewal failed", exc_info=True)
                    close_old_connections()
        finally:
            connections.close_all()

    thread = threading.Thread(target=beat, name="lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1.0)
