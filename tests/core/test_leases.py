"""The lease keeper: one thread per process renews every held lease until its work lets go of it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import OperationalError, transaction
from django.utils import timezone

from agents.models import Run
from core import leases
from core.leases import _Keeper, heartbeat
from tests.factories import RunFactory

# Each renewal runs in a transaction of its own, on the keeper thread's connection.
pytestmark = pytest.mark.django_db


@pytest.fixture
def quick(settings: Any) -> None:
    settings.LEASE_SECONDS = 0.15  # a round every 0.05 s


@pytest.fixture
def keeper() -> Any:
    """A keeper of the test's own; whatever it still holds is dropped after the test (its thread idles)."""
    fresh = _Keeper()
    yield fresh
    for key in list(fresh._held):
        fresh.drop(key)


def waits_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll until `predicate` holds. A slow machine only waits longer: nothing here passes by timing out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def counting(result: int = 1) -> tuple[list[timedelta], Callable[[datetime], int]]:
    """A renewal that records how far ahead of its own moment it was asked to extend the lease."""
    calls: list[timedelta] = []

    def renew(until: datetime) -> int:
        calls.append(until - timezone.now())
        return result

    return calls, renew


def settled(keeper: _Keeper) -> None:
    """Wait until a round that started after this call has ended (one in progress may still renew)."""
    seen = keeper.rounds
    assert waits_for(lambda: keeper.rounds >= seen + 2)


def test_a_held_lease_is_renewed_until_it_is_dropped(quick: None, keeper: _Keeper) -> None:
    calls, renew = counting()
    key = keeper.hold(renew)
    assert waits_for(lambda: len(calls) >= 3)
    # Each renewal asks for a whole lease (0.15 s) from the moment it runs.
    assert all(timedelta(seconds=0.075) < ahead <= timedelta(seconds=0.15) for ahead in calls), calls
    keeper.drop(key)
    settled(keeper)
    after = len(calls)
    settled(keeper)
    assert len(calls) == after


def test_a_lost_lease_is_not_renewed_again_and_the_others_are(quick: None, keeper: _Keeper) -> None:
    lost, renew_lost = counting(result=0)  # the compare-and-set found the work handed on
    kept, renew_kept = counting()
    keeper.hold(renew_lost)
    keeper.hold(renew_kept)
    assert waits_for(lambda: len(kept) >= 3)
    assert len(lost) == 1


def test_a_failing_renewal_keeps_the_keeper_and_the_other_leases(quick: None, keeper: _Keeper) -> None:
    failed = []

    def renew_failing(until: datetime) -> int:
        failed.append(until)
        raise OperationalError("the database is away")

    kept, renew_kept = counting()
    keeper.hold(renew_failing)
    keeper.hold(renew_kept)
    # Both go on being tried: the database may come back before the lease runs out.
    assert waits_for(lambda: len(kept) >= 3 and len(failed) >= 3)


def test_one_thread_renews_every_lease_of_the_process(
    quick: None, keeper: _Keeper, settings: Any, monkeypatch: Any
) -> None:
    settings.BACKGROUND_TASKS = "celery"  # inline mode holds no lease
    monkeypatch.setattr(leases, "_keeper", keeper)
    calls: dict[int, int] = {}

    def renewal(n: int) -> Callable[[datetime], int]:
        def renew(until: datetime) -> int:
            calls[n] = calls.get(n, 0) + 1
            return 1

        return renew

    def keepers() -> int:
        return sum(thread.name == "lease-keeper" for thread in threading.enumerate())

    before = keepers()
    for n in range(20):  # one step after another, as a worker takes them
        with heartbeat(renewal(n)):
            pass
    with heartbeat(renewal(100)), heartbeat(renewal(101)):  # and several at once (the embedded mode's threads)
        assert waits_for(lambda: calls.get(100, 0) >= 2 and calls.get(101, 0) >= 2)
        assert keepers() == before + 1
    settled(keeper)
    assert all(calls.get(n, 0) <= 1 for n in range(20))  # a block that ended is renewed at most once, racing it


def test_a_forked_child_starts_without_its_parents_leases(quick: None) -> None:
    _, renew = counting()
    key = leases._keeper.hold(renew)
    try:
        assert leases._keeper._held
        pid = os.fork()
        if pid == 0:  # the child: a fresh keeper, no thread and no lease of the parent's
            fresh = not leases._keeper._held and leases._keeper._thread is None
            os._exit(0 if fresh else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert key in leases._keeper._held  # the parent's own lease is untouched
    finally:
        leases._keeper.drop(key)


@pytest.mark.django_db(transaction=True)
def test_a_renewal_stuck_on_a_lock_gives_up_and_the_other_leases_are_renewed(quick: None, keeper: _Keeper) -> None:
    """A renewal waiting on a row another transaction holds (a step's commit, say) is ended after half a
    period; the keeper goes on to the other leases, and tries the stuck one again next round."""
    run = RunFactory()
    tried = []

    def renew_locked(until: datetime) -> int:
        tried.append(until)
        return Run.objects.filter(pk=run.pk).update(lease_until=until)

    kept, renew_kept = counting()
    with transaction.atomic():
        Run.objects.select_for_update().get(pk=run.pk)  # held until this block ends
        keeper.hold(renew_locked)
        keeper.hold(renew_kept)
        assert waits_for(lambda: len(kept) >= 3 and len(tried) >= 3)
    # The lock gone, the renewal goes through.
    assert waits_for(lambda: Run.objects.get(pk=run.pk).lease_until is not None)
