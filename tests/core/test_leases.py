"""The lease keeper: one thread per process renews every held lease until its work lets go of it."""

from __future__ import annotations

import os
import threading
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


class Rounds:
    """Counts a keeper's finished rounds (its connection back in the pool by then) and wakes whoever waits."""

    def __init__(self, keeper: _Keeper, monkeypatch: Any) -> None:
        self._done = 0
        self._changed = threading.Condition()
        original = keeper._round

        def counted() -> None:
            try:
                original()
            finally:
                with self._changed:
                    self._done += 1
                    self._changed.notify_all()

        monkeypatch.setattr(keeper, "_round", counted)  # an instance attribute: the keeper's loop calls it

    def settle(self) -> None:
        """Wait until a round that started after this call has ended: one in progress (and a renewal it was
        making) is over, and the keeper holds no connection past it."""
        with self._changed:
            seen = self._done
            assert self._changed.wait_for(lambda: self._done >= seen + 2, timeout=20)


@pytest.fixture
def keeper(monkeypatch: Any) -> Any:
    """A keeper of the test's own. After the test, whatever it still holds is dropped and its last round
    waited for; its thread then idles."""
    fresh = _Keeper()
    fresh.rounds = Rounds(fresh, monkeypatch)  # type: ignore[attr-defined]
    yield fresh
    for key in list(fresh._held):
        fresh.drop(key)
    fresh.rounds.settle()  # type: ignore[attr-defined]


class Renewals:
    """A renewal that records each call (how far ahead of its own moment it was asked to extend the lease,
    and what it answered) and wakes whoever waits for a count of them: no test here sleeps or polls."""

    def __init__(self, renew: Callable[[datetime], int] = lambda until: 1) -> None:
        self._renew = renew
        self._changed = threading.Condition()
        self.ahead: list[timedelta] = []
        self.answers: list[int | Exception] = []

    def __call__(self, until: datetime) -> int:
        try:
            answer = self._renew(until)
        except Exception as error:
            self._record(until, error)
            raise
        self._record(until, answer)
        return answer

    def _record(self, until: datetime, answer: int | Exception) -> None:
        with self._changed:
            self.ahead.append(until - timezone.now())
            self.answers.append(answer)
            self._changed.notify_all()

    def __len__(self) -> int:
        return len(self.answers)

    def reach(self, count: int, answer: Callable[[int | Exception], bool] = lambda _: True) -> bool:
        """Wait until `count` calls answered as `answer` says (20 s at most: a slow machine waits longer,
        nothing passes by timing out)."""
        with self._changed:
            return self._changed.wait_for(lambda: sum(map(answer, self.answers)) >= count, timeout=20)


def settled(keeper: Any) -> None:
    keeper.rounds.settle()


def test_a_held_lease_is_renewed_until_it_is_dropped(quick: None, keeper: _Keeper) -> None:
    renewals = Renewals()
    key = keeper.hold(renewals)
    assert renewals.reach(3)
    # Each renewal asks for a whole lease (0.15 s) from the moment it runs.
    ahead = list(renewals.ahead)
    assert all(timedelta(seconds=0.075) < each <= timedelta(seconds=0.15) for each in ahead), ahead
    keeper.drop(key)
    settled(keeper)
    after = len(renewals)
    settled(keeper)
    assert len(renewals) == after


def test_a_lost_lease_is_not_renewed_again_and_the_others_are(quick: None, keeper: _Keeper) -> None:
    lost = Renewals(lambda until: 0)  # the compare-and-set found the work handed on
    kept = Renewals()
    keeper.hold(lost)
    keeper.hold(kept)
    assert kept.reach(3)
    assert len(lost) == 1


def test_a_failing_renewal_keeps_the_keeper_and_the_other_leases(quick: None, keeper: _Keeper) -> None:
    def away(until: datetime) -> int:
        raise OperationalError("the database is away")

    failed = Renewals(away)
    kept = Renewals()
    keeper.hold(failed)
    keeper.hold(kept)
    # Both go on being tried: the database may come back before the lease runs out.
    assert kept.reach(3) and failed.reach(3)


def test_one_thread_renews_every_lease_of_the_process(
    quick: None, keeper: _Keeper, settings: Any, monkeypatch: Any
) -> None:
    settings.BACKGROUND_TASKS = "celery"  # inline mode holds no lease
    monkeypatch.setattr(leases, "_keeper", keeper)

    def keepers() -> int:
        return sum(thread.name == "lease-keeper" for thread in threading.enumerate())

    before = keepers()
    ended = [Renewals() for _ in range(20)]
    for renewals in ended:  # one step after another, as a worker takes them
        with heartbeat(renewals):
            pass
    together = [Renewals(), Renewals()]
    with heartbeat(together[0]), heartbeat(together[1]):  # and several at once (the embedded mode's threads)
        assert together[0].reach(2) and together[1].reach(2)
        assert keepers() == before + 1
    settled(keeper)
    assert all(len(renewals) <= 1 for renewals in ended)  # a block that ended is renewed at most once, racing it


def test_a_forked_child_starts_without_its_parents_leases(quick: None, monkeypatch: Any) -> None:
    rounds = Rounds(leases._keeper, monkeypatch)
    key = leases._keeper.hold(Renewals())
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
        rounds.settle()


@pytest.mark.django_db(transaction=True)
def test_a_renewal_stuck_on_a_lock_gives_up_and_the_other_leases_are_renewed(quick: None, keeper: _Keeper) -> None:
    """A renewal waiting on a row another transaction holds (a step's commit, say) is ended after half a
    period; the keeper goes on to the other leases, and tries the stuck one again next round."""
    run = RunFactory()
    locked = Renewals(lambda until: Run.objects.filter(pk=run.pk).update(lease_until=until))
    kept = Renewals()
    with transaction.atomic():
        Run.objects.select_for_update().get(pk=run.pk)  # held until this block ends
        keeper.hold(locked)
        keeper.hold(kept)
        assert kept.reach(3) and locked.reach(3)
        assert 1 not in locked.answers  # each attempt gave up on the lock
    # The lock gone, the renewal goes through.
    assert locked.reach(1, lambda answer: answer == 1)
    settled(keeper)  # that renewal's own transaction committed with its round
    assert Run.objects.get(pk=run.pk).lease_until is not None
