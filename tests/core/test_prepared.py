"""A prepared read returns what its queryset returns, compiles once, and refuses what it cannot bind safely.

The reads checked against the ORM are those every routed call, execution (agents.breakers) and agent step
(runtime.loop) makes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import connection
from django.db.models import F, Q, QuerySet
from django.db.models.signals import post_save, pre_save
from django.test.utils import CaptureQueriesContext
from guardian.core import ObjectPermissionChecker
from guardian.shortcuts import assign_perm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.breakers import MODEL, MODEL_QUIET, TOOL_QUIET, tool_settings
from agents.models import AgentTool, BreakerState, CircuitBreaker, PromptVersion, Run, Step
from agents.selectors import agent_perms_on
from approvals.models import ActionRequest
from approvals.selectors import action_by_id, action_operable_by, action_reviewable_by
from core.prepared import PreparedRead, insert_row, update_where
from runtime.loop import _run_to_step
from tests.factories import AgentFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db


def _orm(agent_id: int, tool: str) -> AgentTool | None:
    return AgentTool.objects.filter(agent_id=agent_id, tool=tool).annotate(breaker_quiet=TOOL_QUIET).first()


def _row(tool: AgentTool | None) -> dict[str, Any] | None:
    return None if tool is None else {**_fields(tool), "quiet": tool.breaker_quiet}


# What a jsonb column holds (no NUL, no lone surrogate).
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=5)
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
    assert len(built) == 2 and agent.pk not in [b[0] for b in built]  # built at the first call, from stand-ins
    assert len(queries) == 4


def _of(agent_id: int, tool: str) -> QuerySet[AgentTool]:
    return AgentTool.objects.filter(agent_id=agent_id, tool=tool)


@pytest.mark.parametrize(
    ("build", "why"),
    [
        # The value is changed on its way to the SQL (wrapped in %...%): it cannot be bound as it is.
        (lambda agent_id, tool: AgentTool.objects.filter(agent_id=agent_id, tool__contains=tool), "tool must reach"),
        # The value never reaches the SQL.
        (lambda agent_id, tool: AgentTool.objects.filter(agent_id=agent_id), "tool must reach"),
        # Rows other than plain model rows.
        (lambda agent_id, tool: _of(agent_id, tool).values("tool"), "model rows or values_list"),
        (lambda agent_id, tool: _of(agent_id, tool).prefetch_related("agent"), "model rows or values_list"),
        (lambda agent_id, tool: _of(agent_id, tool).values_list("tool", flat=True), "model rows or values_list"),
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


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=st.booleans(),
    breaker=st.sampled_from(["none", *BreakerState.values]),
    failures=st.integers(0, 3),
    run_input=st.dictionaries(TEXT, st.integers() | TEXT, max_size=3),
)
def test_a_prepared_read_with_related_rows_loads_them_as_the_orm_does(
    prompt: bool, breaker: str, failures: int, run_input: dict[str, Any]
) -> None:
    """The run every agent step reads, with its agent and prompt version (select_related)."""
    agent = AgentFactory()
    version = PromptVersion.objects.create(agent=agent, number=1, text="be brief") if prompt else None
    run = RunFactory(agent=agent, prompt_version=version, input=run_input)
    if breaker != "none":
        CircuitBreaker.objects.create(agent=agent, tool=MODEL, state=breaker, consecutive_failures=failures)
    orm = Run.objects.select_related("agent", "prompt_version").annotate(model_breaker_quiet=MODEL_QUIET).get(pk=run.pk)
    with CaptureQueriesContext(connection) as queries:
        prepared = _run_to_step.get(run_id=run.pk)
        related = (prepared.agent, prepared.prompt_version)  # loaded with it: no further query
    assert len(queries) == 1
    assert _fields(prepared) == _fields(orm) and prepared.model_breaker_quiet == orm.model_breaker_quiet
    assert _fields(related[0]) == _fields(orm.agent)
    assert _fields(related[1]) == _fields(orm.prompt_version)
    with pytest.raises(Run.DoesNotExist):
        _run_to_step.get(run_id=run.pk + 1000)


def _fields(obj: Any) -> dict[str, Any] | None:
    return None if obj is None else {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_a_value_used_in_several_places_is_bound_in_each() -> None:
    agent = AgentFactory()
    for tool in ("a", "b", "c"):
        AgentTool.objects.create(agent=agent, tool=tool)

    @PreparedRead
    def around(agent_id: int, tool: str) -> QuerySet[AgentTool]:
        return AgentTool.objects.filter(Q(tool=tool) | Q(tool__gt=tool), agent_id=agent_id).order_by("tool")

    for tool in ("a", "b", "c", "d"):
        expected = list(AgentTool.objects.filter(Q(tool=tool) | Q(tool__gt=tool), agent=agent).order_by("tool"))
        assert around(agent_id=agent.pk, tool=tool) == expected


PERMS = ["review_agent", "operate_agent", "configure_agent"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    direct=st.lists(st.tuples(st.booleans(), st.sampled_from(PERMS)), max_size=4),
    grouped=st.lists(st.tuples(st.booleans(), st.sampled_from(PERMS), st.booleans()), max_size=4),
)
def test_a_prepared_union_of_values_gives_the_rights_guardian_gives(direct: list[Any], grouped: list[Any]) -> None:
    """agent_perms_on reads a user's rights on one agent with a prepared union of two values_list()s."""
    user = UserFactory()
    agent, other = AgentFactory(), AgentFactory()
    group = Group.objects.create(name=f"g{user.pk}")
    user.groups.add(group)
    outsider = Group.objects.create(name=f"o{user.pk}")
    for on_agent, perm in direct:
        assign_perm(f"agents.{perm}", user, agent if on_agent else other)
    for on_agent, perm, member in grouped:
        assign_perm(f"agents.{perm}", group if member else outsider, agent if on_agent else other)
    user = type(user).objects.get(pk=user.pk)  # no permission cache
    assert agent_perms_on(user, agent) == frozenset(ObjectPermissionChecker(user).get_perms(agent))
    assert agent_perms_on(user, other) == frozenset(ObjectPermissionChecker(user).get_perms(other))


@pytest.mark.parametrize("action_id", [0, -1, 2**31, 2**63, 10**30])
def test_an_action_id_past_any_row_finds_nothing(action_id: int) -> None:
    user = UserFactory()
    assert action_reviewable_by(user, action_id) is None
    assert action_operable_by(user, action_id) is None
    with pytest.raises(ActionRequest.DoesNotExist):
        action_by_id(action_id)


@pytest.mark.parametrize("constant", [30_011, 29_017])
def test_a_constant_equal_to_a_stand_in_is_refused_not_overwritten(constant: int) -> None:
    read = PreparedRead(lambda agent_id: AgentTool.objects.filter(agent_id=agent_id, reviewer_group_id=constant))
    with pytest.raises(ImproperlyConfigured, match="told apart"):
        read(agent_id=1)


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="psycopg sends such a value typed; SQLite's driver does not"
)
def test_a_value_on_a_plain_integer_column_is_refused() -> None:
    """Django sends such a value typed to its column (Int2, Int4), and rules out one past the column's range
    before any SQL: bound as it is, it would be neither. Only keys' ids and text are bound."""
    read = PreparedRead(lambda agent_id, n: AgentTool.objects.filter(agent_id=agent_id, required_approvals=n))
    with pytest.raises(ImproperlyConfigured, match="n must reach the SQL unchanged"):
        read(agent_id=1, n=2)


# --- update_where: the compare-and-set UPDATEs of every agent step ------------------------------------------

STATUSES = ["queued", "running", "waiting", "succeeded"]
MOMENTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    status=st.sampled_from(STATUSES),
    token=st.sampled_from(["", "abc", "t0k3n"]),
    lease=st.one_of(st.none(), MOMENTS),
    expect_status=st.one_of(st.sampled_from(STATUSES), st.lists(st.sampled_from(STATUSES), max_size=3)),
    expect_token=st.one_of(st.none(), st.sampled_from(["", "abc", "x"])),
    lease_before=st.one_of(st.none(), MOMENTS),
    lease_lookup=st.sampled_from(["lt", "lte"]),
    values=st.fixed_dictionaries(
        {},
        optional={
            "status": st.sampled_from(STATUSES),
            "result": TEXT,
            "lease_until": st.one_of(st.none(), MOMENTS),
            "step_token": st.sampled_from(["", "new"]),
        },
    ),
    add=st.fixed_dictionaries(
        {},
        optional={
            "step_count": st.integers(0, 10**6),
            "tokens_used": st.integers(0, 10**6),
            "cost": st.decimals(0, 1000, places=6),
            "running_seconds": st.floats(0, 10**6),
        },
    ),
)
def test_update_where_changes_what_the_orm_update_changes(
    status: str,
    token: str,
    lease: datetime | None,
    expect_status: str | list[str],
    expect_token: str | None,
    lease_before: datetime | None,
    lease_lookup: str,
    values: dict[str, Any],
    add: dict[str, Any],
) -> None:
    """Two identical runs: one updated by the ORM, one by update_where, with the same filters and values."""
    if not values and not add:
        values = {"result": "x"}
    agent = AgentFactory()
    runs = [
        RunFactory(agent=agent, status=status, step_token=token, lease_until=lease, step_count=3, cost=Decimal("1.5"))
        for _ in range(2)
    ]
    where: dict[str, Any] = {"status__in" if isinstance(expect_status, list) else "status": expect_status}
    if expect_token is not None:
        where["step_token"] = expect_token
    if lease_before is not None:
        where[f"lease_until__{lease_lookup}"] = lease_before
    orm = Run.objects.filter(pk=runs[0].pk, **where).update(**values, **{n: F(n) + d for n, d in add.items()})
    prepared = update_where(Run, where={"pk": runs[1].pk, **where}, values=values, add=add)
    assert prepared == orm
    made_apart = {"id", "created_at", "published_at"}  # the two rows' own: their ids, when each was made
    after = [{n: v for n, v in _fields(Run.objects.get(pk=r.pk)).items() if n not in made_apart} for r in runs]
    assert after[1] == after[0]


def test_update_where_refuses_what_it_would_not_write_as_the_orm_does() -> None:
    run = RunFactory()
    with pytest.raises(TypeError, match="IS NULL"):
        update_where(Run, where={"pk": run.pk, "lease_until": None}, values={"result": "x"})
    with pytest.raises(TypeError, match="plain values"):
        update_where(Run, where={"pk": run.pk}, values={"step_count": F("step_count") + 1})
    with pytest.raises(ValueError, match="every row"):
        update_where(Run, where={}, values={"result": "x"})
    with pytest.raises(ValueError, match="only exact, lt, lte, in"):
        update_where(Run, where={"pk__gt": 1}, values={"result": "x"})
    with pytest.raises(ValueError, match="no column"):
        update_where(Run, where={"pk": run.pk}, values={"no_such_field": 1})
    assert Run.objects.get(pk=run.pk).result == ""
    for past_any_row in (2**63 - 1, 2**63, -(2**63) - 1, 10**30):
        assert update_where(Run, where={"pk": past_any_row}, values={"result": "x"}) == 0


# --- insert_row: the rows every routed call and agent step adds ---------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arguments=st.dictionaries(TEXT, JSON, max_size=4),
    confidence=st.floats(0, 1),
    magnitude=st.decimals(0, 10**6, places=2),
    rationale=TEXT,
    status=st.sampled_from(["pending", "auto_approved", "denied"]),
    with_run=st.booleans(),
)
def test_insert_row_writes_the_row_save_writes(
    arguments: dict[str, Any], confidence: float, magnitude: Decimal, rationale: str, status: str, with_run: bool
) -> None:
    """The same new action through the ORM's create() and through insert_row(): the same row, every column."""
    run = RunFactory()
    fields: dict[str, Any] = {
        "agent": run.agent,
        "run": run if with_run else None,
        "tool": "issue_refund",
        "arguments": arguments,
        "proposed_arguments": arguments,
        "confidence": confidence,
        "magnitude": magnitude,
        "rationale": rationale,
        "impact": "financial",
        "route": "review",
        "route_reason": "r",
        "status": status,
    }
    saved = ActionRequest.objects.create(**fields)
    inserted = ActionRequest(**fields)
    insert_row(inserted)
    assert inserted.pk is not None and not inserted._state.adding and inserted._state.db == "default"
    assert inserted.created_at is not None  # auto_now_add set on the object, as save() sets it
    made_apart = {"id", "created_at"}
    rows = [
        {n: v for n, v in _fields(ActionRequest.objects.get(pk=a.pk)).items() if n not in made_apart}
        for a in (saved, inserted)
    ]
    assert rows[1] == rows[0]
    assert ActionRequest.objects.get(pk=inserted.pk).created_at == inserted.created_at


def test_insert_row_sends_the_signals_save_sends_and_refuses_a_row_that_exists() -> None:
    run = RunFactory()
    seen: list[tuple[str, bool]] = []

    def before(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(("pre_save", instance.pk is None))

    def after(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        seen.append(("post_save", created and instance.pk is not None))

    pre_save.connect(before, sender=Step)
    post_save.connect(after, sender=Step)
    try:
        step = Step(run=run, seq=1, kind="final", payload={"text": "done"})
        insert_row(step)
    finally:
        pre_save.disconnect(before, sender=Step)
        post_save.disconnect(after, sender=Step)
    assert seen == [("pre_save", True), ("post_save", True)]
    with pytest.raises(ValueError, match="primary key already"):
        insert_row(step)
    assert Step.objects.filter(run=run).count() == 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    order=st.lists(st.integers(0, 2), max_size=12),
    taken=st.lists(st.integers(1, 2**31 - 1 - 12), max_size=2, unique=True),  # room for 12 more in the column
)
def test_insert_row_numbers_each_run_s_steps_from_its_own_highest(order: list[int], taken: list[int]) -> None:
    """Steps added to three runs in any interleaving, one run starting with steps numbered anywhere (a
    trace that kept its numbers): each new step is one past its own run's highest, in one statement."""
    runs = [RunFactory() for _ in range(3)]
    for seq in taken:
        Step.objects.create(run=runs[0], seq=seq, kind="final", payload={})
    expected = {run.pk: max(taken, default=0) if run is runs[0] else 0 for run in runs}
    for n in order:
        run = runs[n]
        step = Step(run=run, kind="llm_call", payload={"n": n})
        with CaptureQueriesContext(connection) as queries:
            insert_row(step, numbered=("seq", "run"))
        assert len(queries) == 1
        expected[run.pk] += 1
        assert step.seq == expected[run.pk] == Step.objects.get(pk=step.pk).seq
    for run in runs:
        assert Step.objects.filter(run=run).count() == len(taken) * (run is runs[0]) + order.count(runs.index(run))


def test_insert_row_numbers_only_an_integer_field_of_the_row() -> None:
    run = RunFactory()
    for numbered in (("kind", "run"), ("seq", "id"), ("run", "seq")):  # text, the automatic key, a relation
        with pytest.raises(ImproperlyConfigured, match="cannot number"):
            insert_row(Step(run=run, kind="final", payload={}), numbered=numbered)
    with pytest.raises(FieldDoesNotExist):
        insert_row(Step(run=run, kind="final", payload={}), numbered=("seq", "no_such_field"))
    assert not Step.objects.filter(run=run).exists()
