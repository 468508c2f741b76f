"""Hot counters: one row per agent and hour, so counting for one agent never waits on another's."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection, transaction

from core.counters import AGENT_HOUR, hour_of
from ops.stats import _flush_counters
from tests.conftest import held_open, needs_postgres

pytestmark = [needs_postgres, pytest.mark.django_db(transaction=True)]


def _count(agent_id: int) -> tuple[str, dict, dict]:
    return (AGENT_HOUR, {"agent_id": agent_id, "hour": hour_of()}, {"actions_routed": 1})


@pytest.mark.parametrize("same_agent", [False, True])
def test_a_transaction_holding_one_agents_counters_blocks_only_that_agent(refund_agent, crm_agent, same_agent):
    # Both rows exist first, so neither side is an insert racing an insert.
    for agent in (refund_agent, crm_agent):
        with transaction.atomic():
            _flush_counters(connection, [_count(agent.pk)])
    # The holder's row stays locked until its COMMIT.
    other = refund_agent if same_agent else crm_agent
    with held_open(lambda: _flush_counters(connection, [_count(refund_agent.pk)])), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '1s'")
        if same_agent:
            with pytest.raises(OperationalError, match="lock timeout"):
                _flush_counters(connection, [_count(other.pk)])
        else:
            _flush_counters(connection, [_count(other.pk)])  # not blocked by the other agent's open row
