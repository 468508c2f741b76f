"""Stateful property test: no sequence of events reaches an illegal state or runs an action twice.

Hypothesis drives the real services (decisions, duplicate deliveries, crashes
between claim and effect, the sweeper, cancel, resume, undo) in any order and
checks the invariants after every step.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count
from django.test import TestCase
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from agents.models import RUN_TRANSITIONS, Agent, Run, RunStatus
from agents.services import run_resume, run_start
from approvals.decisions import action_request_decide
from approvals.execution import action_execute, action_undo, executions_sweep
from approvals.models import (
    ACTION_TRANSITIONS,
    EXECUTION_TRANSITIONS,
    ActionRequest,
    ActionStatus,
    Decision,
    Execution,
    ExecutionStatus,
    QueueCount,
)
from audit.models import AuditEvent
from audit.selectors import verify_chain
from core.errors import DomainError
from demo.models import Contact, Refund
from runtime.services import run_cancel

EXECUTED_LIKE = {ActionStatus.EXECUTED, ActionStatus.COMPENSATED}


class ApprovalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Each example runs in a transaction that is rolled back at teardown. Like
        # Django's TestCase blocks it never commits, so it is marked as theirs are:
        # the services' own blocks are then the outermost (their audit rows and
        # counters are written when they end, core.transactions).
        self.atomic = transaction.atomic()
        self.atomic._from_testcase = True
        self.atomic.__enter__()
        # The anchors of the previous example name rows its rollback removed.
        Path(django_settings.AUDIT_ANCHOR_FILE).write_text("")
        self.users = {u.username: u for u in get_user_model().objects.all()}
        self.agents = {a.slug: a for a in Agent.objects.all()}

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    def committed(self):
        return TestCase.captureOnCommitCallbacks(execute=True)

    def pick(self, model, data, **filters):
        ids = list(model.objects.filter(**filters).values_list("pk", flat=True).order_by("pk"))
        if not ids:
            return None
        return model.objects.get(pk=data.draw(st.sampled_from(ids)))

    @rule(amount=st.sampled_from([20, 150, 300]), hedge=st.booleans())
    def start_refund_run(self, amount, hedge):
        ticket = "maybe broken?" if hedge else "arrived broken"
        with self.committed():
            run_start(
                agent=self.agents["refund-triage"],
                input={"ticket": ticket, "order_id": "ORD-1003", "amount": amount},
                actor=None,
            )

    @rule(ids=st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True))
    def start_cleanup_run(self, ids):
        with self.committed():
            run_start(agent=self.agents["crm-cleanup"], input={"request": "dupes", "contact_ids": ids}, actor=None)

    @rule(
        data=st.data(),
        verdict=st.sampled_from(["approve", "reject", "edit"]),
        who=st.sampled_from(["reviewer", "reviewer2"]),
    )
    def decide(self, data, verdict, who):
        action = self.pick(ActionRequest, data)
        if action is None:
            return
        arguments = None
        if verdict == "edit":
            arguments = dict(action.arguments)
            if action.tool == "issue_refund":
                arguments["amount"] = 10
        try:
            with self.committed():
                action_request_decide(
                    action=action, actor=self.users[who], verdict=verdict, arguments=arguments, comment="x"
                )
        except DomainError:
            pass

    @rule(data=st.data())
    def duplicate_delivery(self, data):
        execution = self.pick(Execution, data)
        if execution is not None:
            with self.committed():
                action_execute(execution_id=execution.pk)

    @rule(data=st.data())
    def crash_after_claim(self, data):
        # A worker claimed a pending execution and died before the effect committed.
        execution = self.pick(Execution, data, status=ExecutionStatus.PENDING)
        if execution is None:
            return
        Execution.objects.filter(pk=execution.pk).update(
            status=ExecutionStatus.RUNNING,
            attempts=execution.attempts + 1,
            lease_until=timezone.now() - timedelta(seconds=1),
        )
        ActionRequest.objects.filter(
            pk=execution.action_id, status__in=[ActionStatus.APPROVED, ActionStatus.AUTO_APPROVED]
        ).update(status=ActionStatus.EXECUTING)

    @rule()
    def sweep(self):
        Execution.objects.filter(status=ExecutionStatus.PENDING).update(
            published_at=timezone.now() - timedelta(hours=1)
        )
        with self.committed():
            executions_sweep()

    @rule(data=st.data(), resume=st.booleans())
    def operate(self, data, resume):
        run = self.pick(Run, data)
        if run is None:
            return
        try:
            with self.committed():
                (run_resume if resume else run_cancel)(run=run, actor=self.users["operator"])
        except DomainError:
            pass

    @rule(data=st.data())
    def undo(self, data):
        action = self.pick(ActionRequest, data)
        if action is None:
            return
        with contextlib.suppress(DomainError):
            action_undo(action=action, actor=self.users["reviewer"])

    @invariant()
    def states_are_legal(self):
        for status in ActionRequest.objects.values_list("status", flat=True):
            assert status in ACTION_TRANSITIONS
        for status in Run.objects.values_list("status", flat=True):
            assert status in RUN_TRANSITIONS

    @invariant()
    def executions_follow_their_actions(self):
        # What the action says happened, its execution says too (both go through their tables).
        expected = {
            ActionStatus.EXECUTED: {ExecutionStatus.DONE},
            ActionStatus.COMPENSATED: {ExecutionStatus.DONE},
            ActionStatus.IN_DOUBT: {ExecutionStatus.IN_DOUBT},
            ActionStatus.EXECUTING: {ExecutionStatus.PENDING, ExecutionStatus.RUNNING},
        }
        for status, action_status in Execution.objects.values_list("status", "action__status"):
            assert status in EXECUTION_TRANSITIONS
            if action_status in expected:
                assert status in expected[action_status], (action_status, status)

    @invariant()
    def nothing_ran_twice(self):
        for action in ActionRequest.objects.all():
            executed = AuditEvent.objects.filter(
                event="action.executed", target_type="approvals.actionrequest", target_id=str(action.pk)
            ).count()
            assert executed == (1 if action.status in EXECUTED_LIKE else 0), (action.pk, action.status, executed)
            key = f"action-{action.pk}"
            refunds = Refund.objects.filter(idempotency_key=key).count()
            assert refunds <= 1
            if action.tool == "issue_refund":
                assert refunds == (1 if action.status in EXECUTED_LIKE else 0), (action.pk, action.status)
            if action.tool == "delete_contacts" and action.status not in EXECUTED_LIKE:
                assert not Contact.objects.filter(deleted_by_key=key).exists()

    @invariant()
    def decisions_match_statuses(self):
        decided = set(Decision.objects.values_list("action_id", flat=True))
        for action in ActionRequest.objects.all():
            if action.status in {ActionStatus.APPROVED, ActionStatus.REJECTED}:
                assert action.pk in decided
            if action.status in {ActionStatus.PENDING, ActionStatus.AUTO_APPROVED, ActionStatus.DENIED}:
                assert action.pk not in decided

    @invariant()
    def finished_runs_have_no_pending_actions(self):
        assert not ActionRequest.objects.filter(
            status=ActionStatus.PENDING, run__status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED]
        ).exists()

    @invariant()
    def queue_counts_match_the_pending_actions(self):

        actual = {
            (row["agent_id"], row["tier"]): row["n"]
            for row in ActionRequest.objects.filter(status=ActionStatus.PENDING)
            .values("agent_id", "tier")
            .annotate(n=Count("id"))
        }
        kept = {(q.agent_id, q.tier): q.pending for q in QueueCount.objects.all() if q.pending}
        assert kept == actual

    @invariant()
    def audit_chain_holds(self):
        assert verify_chain().ok


@pytest.mark.django_db
def test_no_sequence_of_events_breaks_the_approval_state_machine(demo):
    run_state_machine_as_test(
        ApprovalMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
