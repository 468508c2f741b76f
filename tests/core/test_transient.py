"""Transient database errors are never a final state: requests answer 503, work is retried."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
from django.db import OperationalError
from django.test import Client

from agents import tools as tool_registry
from agents.models import RunStatus, StepKind
from agents.services import run_start
from approvals.models import ActionRequest, ActionStatus
from audit.models import AuditEvent
from audit.selectors import verify_chain
from core.transient import is_transient
from demo.models import Refund
from runtime import loop as runtime
from tests.conftest import PASSWORD, refund_input

pytestmark = pytest.mark.django_db


def deadlock() -> OperationalError:
    """What Django raises when PostgreSQL picks this transaction as a deadlock's victim."""
    error = OperationalError("deadlock detected")
    error.__cause__ = psycopg.errors.DeadlockDetected("deadlock detected")
    return error


def lost_connection() -> OperationalError:
    error = OperationalError("server closed the connection unexpectedly")
    error.__cause__ = psycopg.OperationalError("server closed the connection unexpectedly")
    return error


def test_transient_errors_are_told_apart_from_final_ones():
    assert is_transient(deadlock())
    assert is_transient(lost_connection())
    serialization = OperationalError("could not serialize")
    serialization.__cause__ = psycopg.errors.SerializationFailure("could not serialize")
    assert is_transient(serialization)
    assert is_transient(OperationalError("database is locked"))  # SQLite, no cause
    timeout = OperationalError("canceling statement due to statement timeout")
    timeout.__cause__ = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
    assert not is_transient(timeout)  # a tool's own time limit
    assert not is_transient(ValueError("boom"))


@pytest.mark.parametrize("make_error", [deadlock, lost_connection])
def test_a_transient_error_in_a_page_is_503_with_retry_after(refund_agent, demo_user, monkeypatch, make_error):
    def fails(*args, **kwargs):
        raise make_error()

    demo_user("reviewer")
    monkeypatch.setattr("approvals.selectors.inbox_for", fails)
    client = Client(raise_request_exception=False)
    client.login(username="reviewer", password=PASSWORD)
    response = client.get("/")
    assert response.status_code == 503
    assert response["Retry-After"] == "2"


def test_a_transient_error_in_the_api_is_503_json(refund_agent, api_as, monkeypatch):
    def fails(*args, **kwargs):
        raise deadlock()

    monkeypatch.setattr("approvals.selectors.actions_reviewable_by", fails)
    response = api_as("reviewer").get("/api/v1/actions")
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert response["Retry-After"] == "2"


def flaky_tool(monkeypatch, name: str, *, failures: int, transactional: bool = True) -> list[int]:
    """Make `name`'s effect raise a deadlock the first `failures` times, then run for real."""
    real = tool_registry.get_tool(name)
    assert real is not None
    calls: list[int] = []

    def execute(args, key):
        calls.append(1)
        if len(calls) <= failures:
            raise deadlock()
        return real.execute(args, key)

    monkeypatch.setitem(
        tool_registry._registry, name, dataclasses.replace(real, execute=execute, transactional=transactional)
    )
    return calls


def test_a_deadlock_inside_an_execution_is_retried_with_the_same_key_not_failed(
    refund_agent, orders, commit, monkeypatch
):
    calls = flaky_tool(monkeypatch, "issue_refund", failures=2)
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=20), actor=None)
    action = ActionRequest.objects.get(run=run)
    assert action.status == ActionStatus.EXECUTED
    assert len(calls) == 3
    assert Refund.objects.count() == 1
    assert Refund.objects.get().idempotency_key == action.execution.idempotency_key
    assert AuditEvent.objects.filter(event="execution.recovered", target_id=str(action.pk)).count() == 2
    assert AuditEvent.objects.filter(event="action.failed").count() == 0
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert verify_chain().ok


def test_a_deadlock_around_an_effect_outside_the_database_goes_to_a_person(refund_agent, orders, commit, monkeypatch):
    flaky_tool(monkeypatch, "issue_refund", failures=1, transactional=False)
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=20), actor=None)
    action = ActionRequest.objects.get(run=run)
    # Its effect may or may not have happened: never retried blindly, never marked failed.
    assert action.status == ActionStatus.IN_DOUBT
    assert AuditEvent.objects.filter(event="action.in_doubt", target_id=str(action.pk)).exists()


def test_a_deadlock_in_a_runs_step_requeues_the_step(refund_agent, orders, commit, monkeypatch):

    real = runtime._record_model_call
    calls: list[int] = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise deadlock()
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime, "_record_model_call", flaky)
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=20), actor=None)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert AuditEvent.objects.filter(event="run.step_retried", target_id=str(run.pk)).count() == 1
    # The rolled-back attempt left nothing in the trace: one model call per real step.
    assert run.steps.filter(kind=StepKind.LLM_CALL).count() == len(calls) - 1
