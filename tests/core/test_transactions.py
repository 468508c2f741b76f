"""The writes deferred to COMMIT (core.transactions): sent to PostgreSQL in one pipeline, all or nothing."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection, transaction

from audit.models import AuditEvent
from audit.selectors import verify_chain
from audit.services import record
from core import counters
from ops.models import AgentHourStat
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db(transaction=True)

NO_SUCH_AGENT = 2**31 - 1


@pytest.mark.parametrize(
    "failing",
    [
        # A flushed statement fails: a counter may not go below zero (a CHECK constraint).
        lambda agent_id: counters.bump(agent_id, runs_started=-1),
        # COMMIT itself fails: the counter row names no agent (a foreign key checked at COMMIT).
        lambda agent_id: counters.bump(NO_SUCH_AGENT, runs_started=1),
    ],
    ids=["at-a-flushed-statement", "at-commit"],
)
def test_a_deferred_write_that_fails_takes_the_whole_transaction_with_it(failing):
    agent = AgentFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Group.objects.create(name="written in the transaction")
        record(actor=None, event="test.event")
        failing(agent.pk)
    assert not Group.objects.filter(name="written in the transaction").exists()
    assert not AuditEvent.objects.filter(event="test.event").exists()
    assert not AgentHourStat.objects.exists()
    # The connection left the pipeline and the failed transaction behind: the next one works.
    with transaction.atomic():
        Group.objects.create(name="the next transaction")
        record(actor=None, event="test.next")
        counters.bump(agent.pk, runs_started=1)
    assert Group.objects.filter(name="the next transaction").exists()
    assert AgentHourStat.objects.get(agent=agent).runs_started == 1
    assert verify_chain().ok


def test_deferred_writes_of_every_kind_land_with_their_commit_in_order():
    agent = AgentFactory()
    for n in range(3):
        with transaction.atomic():
            record(actor=None, event=f"test.{n}")
            counters.bump(agent.pk, runs_started=1)
            counters.bump(agent.pk, runs_done=n)
    events = list(AuditEvent.objects.filter(event__startswith="test.").order_by("seq").values_list("event", flat=True))
    assert events == ["test.0", "test.1", "test.2"]
    stat = AgentHourStat.objects.get(agent=agent)
    assert (stat.runs_started, stat.runs_done) == (3, 0 + 1 + 2)
    assert verify_chain().ok
    assert connection.connection is None or connection.connection.pgconn.pipeline_status == 0
