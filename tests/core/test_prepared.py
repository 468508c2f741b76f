"""A prepared read returns what its queryset returns, compiles once, and refuses what it cannot bind safely.

The read checked against the ORM is the one every routed call and every execution makes (agents.breakers)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import Q, QuerySet
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.breakers import TOOL_QUIET, tool_settings
from agents.models import AgentTool, BreakerState, CircuitBreaker
from core.prepared import PreparedRead
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db

FIELDS = [f.attname for f in AgentTool._meta.concrete_fields]


def _orm(agent_id: int, tool: str) -> AgentTool | None:
    return AgentTool.objects.filter(agent_id=agent_id, tool=tool).annotate(breaker_quiet=TOOL_QUIET).first()


def _row(tool: AgentTool | None) -> dict[str, Any] | None:
    return None if tool is None else {**{f: getattr(tool, f) for f in FIELDS}, "quiet": tool.breaker_quiet}


TOOLS = ["issue_refund", "delete_contacts", "send_invoice", "lookup_order"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(TOOLS),
            st.booleans(),  # enabled
            st.sampled_from(["none", *BreakerState.values]),  # its breaker, if any
            st.integers(0, 3),  # consecutive failures
            st.one_of(st.none(), st.decimals(0, 10_000, places=2)),  # max magnitude
        ),
        max_size=4,
        unique_by=lambda row: row[0],
    ),
    asked=st.sampled_from([*TOOLS, "no-such-tool", "issue_refund ", "ISSUE_REFUND", "ä'\"; --"]),
    other_agent=st.booleans(),
)
def test_a_prepared_read_returns_what_the_orm_returns(rows: list[Any], asked: str, other_agent: bool) -> None:
    agent, other = AgentFactory(), AgentFactory()
    for tool, enabled, breaker, failures, limit in rows:
        AgentTool.objects.create(agent=agent, tool=tool, enabled=enabled, max_magnitude=limit)
        if breaker != "none":
            CircuitBreaker.objects.create(agent=agent, tool=tool, state=breaker, consecutive_failures=failures)
    agent_id = other.pk if other_agent else agent.pk
    assert _row(tool_settings.first(agent_id=agent_id, tool=asked)) == _row(_orm(agent_id, asked))


def test_it_compiles_once_and_sends_one_statement_per_call() -> None:
    built: list[tuple[int, str]] = []

    @PreparedRead
    def read(agent_id: int, tool: str) -> QuerySet[AgentTool]:
        built.append((agent_id, tool))
        return AgentTool.objects.filter(agent_id=agent_id, tool=tool)

    agent = AgentFactory()
    AgentTool.objects.create(agent=agent, tool="issue_refund")
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert [t.tool for t in read(agent_id=agent.pk, tool="issue_refund")] == ["issue_refund"]
        assert read(agent_id=agent.pk, tool="send_invoice") == []
    assert len(built) == 1 and built[0][0] != agent.pk  # built once, from stand-ins
    assert len(queries) == 4


def _of(agent_id: int, tool: str) -> QuerySet[AgentTool]:
    return AgentTool.objects.filter(agent_id=agent_id, tool=tool)


@pytest.mark.parametrize(
    ("build", "why"),
    [
        # The value is changed on its way to the SQL (wrapped in %...%): it cannot be bound as it is.
        (lambda agent_id, tool: AgentTool.objects.filter(agent_id=agent_id, tool__contains=tool), "tool must reach"),
        # The value reaches the SQL twice.
        (lambda agent_id, tool: AgentTool.objects.filter(Q(tool=tool) | Q(tool__gt=tool), agent_id=agent_id), "tool"),
        # The value never reaches the SQL.
        (lambda agent_id, tool: AgentTool.objects.filter(agent_id=agent_id), "tool must reach"),
        # Rows that raw() would load otherwise.
        (lambda agent_id, tool: _of(agent_id, tool).select_related("agent"), "raw"),
        (lambda agent_id, tool: _of(agent_id, tool).values("tool"), "model rows"),
        (lambda agent_id, tool: _of(agent_id, tool).prefetch_related("agent"), "model rows"),
    ],
)
def test_what_cannot_be_bound_safely_is_refused_at_the_first_call(build: Any, why: str) -> None:
    read = PreparedRead(build)
    with pytest.raises(ImproperlyConfigured, match=why):
        read(agent_id=1, tool="issue_refund")


def test_a_call_must_bind_the_names_and_types_it_was_prepared_for() -> None:
    read = PreparedRead(lambda agent_id, tool: AgentTool.objects.filter(agent_id=agent_id, tool=tool))
    assert read(agent_id=1, tool="issue_refund") == []
    with pytest.raises(TypeError):
        read(agent_id="1", tool="issue_refund")
    with pytest.raises(TypeError):
        read(agent_id=1)
    with pytest.raises(TypeError):
        PreparedRead(lambda amount: AgentTool.objects.filter(max_magnitude=amount))(amount=1.5)
