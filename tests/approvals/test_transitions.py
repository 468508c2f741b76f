"""Every status write of an action or an execution is checked against its table before anything is written."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from approvals.models import (
    ACTION_TRANSITIONS,
    EXECUTION_TRANSITIONS,
    ActionRequest,
    ActionStatus,
    Execution,
    ExecutionStatus,
)
from approvals.transitions import action_transition, execution_transition
from core.errors import IllegalTransition
from tests.factories import ActionFactory, ExecutionFactory

pytestmark = pytest.mark.django_db


def test_the_tables_name_every_status():
    assert set(ACTION_TRANSITIONS) == set(ActionStatus.values)
    assert set(EXECUTION_TRANSITIONS) == set(ExecutionStatus.values)
    for table in (ACTION_TRANSITIONS, EXECUTION_TRANSITIONS):
        assert all(targets <= set(table) for targets in table.values())


@settings(max_examples=60, deadline=None)
@given(source=st.sampled_from(ActionStatus.values), target=st.sampled_from(ActionStatus.values))
def test_an_action_moves_only_along_its_table(source, target):
    action = ActionFactory()
    ActionRequest.objects.filter(pk=action.pk).update(status=source)
    if target in ACTION_TRANSITIONS[source]:
        assert action_transition(action, from_statuses=(source,), to=target) is True
        assert ActionRequest.objects.get(pk=action.pk).status == target
    else:
        with pytest.raises(IllegalTransition):
            action_transition(action, from_statuses=(source,), to=target, error="written?")
        row = ActionRequest.objects.get(pk=action.pk)
        assert (row.status, row.error) == (source, action.error)


@settings(max_examples=30, deadline=None)
@given(source=st.sampled_from(ExecutionStatus.values), target=st.sampled_from(ExecutionStatus.values))
def test_an_execution_moves_only_along_its_table(source, target):
    execution = ExecutionFactory()
    Execution.objects.filter(pk=execution.pk).update(status=source, last_error="")
    rows = Execution.objects.filter(pk=execution.pk)
    if target in EXECUTION_TRANSITIONS[source]:
        assert execution_transition({"pk": execution.pk}, from_status=source, to=target) is True
        assert rows.get().status == target
    else:
        with pytest.raises(IllegalTransition):
            execution_transition({"pk": execution.pk}, from_status=source, to=target, last_error="written?")
        assert (rows.get().status, rows.get().last_error) == (source, "")


def test_a_transition_someone_else_made_first_is_lost_not_forced():
    action = ActionFactory()
    ActionRequest.objects.filter(pk=action.pk).update(status=ActionStatus.REJECTED)
    with pytest.raises(IllegalTransition):  # rejected -> approved is not in the table at all
        action_transition(action, from_statuses=(ActionStatus.REJECTED,), to=ActionStatus.APPROVED)
    # pending -> approved is allowed, but the row is no longer pending: nothing is written.
    assert action_transition(action, from_statuses=(ActionStatus.PENDING,), to=ActionStatus.APPROVED) is False
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.REJECTED
