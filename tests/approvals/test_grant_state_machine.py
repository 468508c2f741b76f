"""Stateful property test for calls the agent executes itself: whatever the order of decisions, redemptions with the
approved or other arguments, reports lost, duplicated or late, expiry, settled doubts and undo, a grant is redeemed
at most once, only with the approved call, and reported at most once, and every state is one the tables allow."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import TestCase
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from agents.models import Agent, AgentTool
from approvals.decisions import action_request_decide
from approvals.execution import action_resolve_in_doubt, action_undo
from approvals.grants import grant_redeem, grant_report, grant_token, grants_sweep
from approvals.models import ACTION_TRANSITIONS, ActionRequest, ActionStatus, Execution, Grant, GrantStatus
from approvals.routing import route_tool_call
from audit.models import AuditEvent
from audit.selectors import verify_chain
from core.canonical import call_digest
from core.errors import DomainError
from tests.factories import enabled_caller_tool

# What a grant's status allows its action to be in.
FOLLOWS = {
    GrantStatus.ISSUED: {ActionStatus.APPROVED, ActionStatus.AUTO_APPROVED},
    # Executing, in doubt (its report is late), or settled by a person before the report came.
    GrantStatus.REDEEMED: {
        ActionStatus.EXECUTING,
        ActionStatus.IN_DOUBT,
        ActionStatus.EXECUTED,
        ActionStatus.FAILED,
        ActionStatus.COMPENSATED,
    },
    GrantStatus.REPORTED: {ActionStatus.EXECUTED, ActionStatus.FAILED, ActionStatus.COMPENSATED},
    GrantStatus.EXPIRED: {ActionStatus.EXPIRED},
}


class GrantMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # As in test_state_machine: one transaction per example, rolled back, marked as a test's.
        self.atomic = transaction.atomic()
        self.atomic._from_testcase = True
        self.atomic.__enter__()
        Path(django_settings.AUDIT_ANCHOR_FILE).write_text("")
        self.users = {u.username: u for u in get_user_model().objects.all()}
        self.agent = Agent.objects.get(slug="refund-triage")
        with transaction.atomic():
            enabled_caller_tool(
                self.agent,
                admin=self.users["admin"],
                mode="auto",
                input_schema={"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]},
                magnitude_pointer="/amount",
                reversible=True,
            )
            # Review below 0.8 confidence, auto above it.
            AgentTool.objects.filter(agent=self.agent, tool="send_invoice").update(min_confidence=0.8)
        # What succeeded, per grant, as the agent saw it.
        self.redeemed: dict[int, list[str]] = {}
        self.reported: dict[int, int] = {}

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

    def has(self, model, **filters) -> bool:
        return model.objects.filter(**filters).exists()

    @rule(amount=st.sampled_from([10, 250]), confidence=st.sampled_from([0.5, 0.95, 0.95]))
    def submit(self, amount, confidence):
        with self.committed():
            route_tool_call(
                agent=self.agent,
                run=None,
                tool="send_invoice",
                arguments={"amount": amount},
                confidence=confidence,
                rationale="",
                actor=self.users["operator"],
                takes_grant=True,
            )

    @precondition(lambda self: self.has(ActionRequest, status=ActionStatus.PENDING))
    @rule(data=st.data(), verdict=st.sampled_from(["approve", "reject", "edit"]))
    def decide(self, data, verdict):
        action = self.pick(ActionRequest, data, status=ActionStatus.PENDING)
        if action is None:
            return
        arguments = {"amount": 7} if verdict == "edit" else None
        with contextlib.suppress(DomainError), self.committed():
            action_request_decide(
                action=action, actor=self.users["reviewer"], verdict=verdict, arguments=arguments, comment="x"
            )

    @precondition(lambda self: self.has(Grant))
    @rule(data=st.data(), honest=st.booleans())
    def redeem(self, data, honest):
        self.redeem_grant(self.pick(Grant, data), honest=honest)

    def redeem_grant(self, grant, *, honest):
        action = ActionRequest.objects.get(pk=grant.action_id)
        # Dishonest: the proposed call after an edit, or another amount.
        other = action.proposed_arguments if action.proposed_arguments != action.arguments else {"amount": 99}
        arguments = action.arguments if honest else other
        with contextlib.suppress(DomainError), self.committed():
            grant_redeem(action=action, actor=self.users["operator"], token=grant_token(grant), arguments=arguments)
            self.redeemed.setdefault(grant.pk, []).append(
                call_digest(agent=self.agent.slug, tool="send_invoice", arguments=arguments)
            )

    @precondition(lambda self: self.has(Grant, status=GrantStatus.ISSUED))
    @rule(data=st.data(), failed=st.booleans())
    def agent_acts(self, data, failed):
        # The usual path: redeem with the approved call, execute, report.
        grant = self.pick(Grant, data, status=GrantStatus.ISSUED)
        self.redeem_grant(grant, honest=True)
        self.report_grant(grant, failed=failed)

    @precondition(lambda self: self.has(Grant))
    @rule(data=st.data(), failed=st.booleans())
    def report(self, data, failed):
        self.report_grant(self.pick(Grant, data), failed=failed)

    def report_grant(self, grant, *, failed):
        action = ActionRequest.objects.get(pk=grant.action_id)
        with contextlib.suppress(DomainError), self.committed():
            grant_report(
                action=action,
                actor=self.users["operator"],
                token=grant_token(grant),
                arguments=action.arguments,
                result=None if failed else {"sent": True},
                error="billing down" if failed else "",
            )
            self.reported[grant.pk] = self.reported.get(grant.pk, 0) + 1

    @precondition(lambda self: self.has(Grant))
    @rule(data=st.data())
    def time_runs_out(self, data):
        # The grant's time passes: never redeemed, or its report lost on the way.
        grant = self.pick(Grant, data)
        past = timezone.now() - timedelta(seconds=1)
        Grant.objects.filter(pk=grant.pk).update(expires_at=past, report_due_at=past if grant.redeemed_at else None)
        with self.committed():
            grants_sweep()

    @precondition(lambda self: self.has(ActionRequest, status=ActionStatus.IN_DOUBT))
    @rule(data=st.data(), executed=st.booleans())
    def person_settles_doubt(self, data, executed):
        action = self.pick(ActionRequest, data, status=ActionStatus.IN_DOUBT)
        with self.committed():
            action_resolve_in_doubt(action=action, actor=self.users["admin"], executed=executed, comment="checked")

    @precondition(lambda self: self.has(ActionRequest, status=ActionStatus.EXECUTED))
    @rule(data=st.data())
    def undo(self, data):
        action = self.pick(ActionRequest, data, status=ActionStatus.EXECUTED)
        with contextlib.suppress(DomainError):
            action_undo(action=action, actor=self.users["reviewer"])

    @invariant()
    def grants_follow_their_actions(self):
        for status, action_status in Grant.objects.values_list("status", "action__status"):
            assert action_status in ACTION_TRANSITIONS
            assert action_status in FOLLOWS[status], (status, action_status)
        granted = set(Grant.objects.values_list("action_id", flat=True))
        for action in ActionRequest.objects.all():
            assert action.caller_executes
            decided_without = {ActionStatus.PENDING, ActionStatus.REJECTED, ActionStatus.EXPIRED}
            assert action.pk in granted or action.status in decided_without, (action.pk, action.status)
        assert not Execution.objects.exists()  # Countersign executes none of them

    @invariant()
    def each_grant_is_redeemed_once_with_the_approved_call_and_reported_once(self):
        digests = dict(Grant.objects.values_list("pk", "digest"))
        for grant_id, redeemed_with in self.redeemed.items():
            assert redeemed_with == [digests[grant_id]], (grant_id, redeemed_with)
        assert all(n == 1 for n in self.reported.values()), self.reported
        assert set(self.reported) <= set(self.redeemed)  # no report without a redeemed grant
        for action_id in ActionRequest.objects.values_list("pk", flat=True):
            events = AuditEvent.objects.filter(target_type="approvals.actionrequest", target_id=str(action_id))
            assert events.filter(event="grant.redeemed").count() <= 1
            assert events.filter(event__in=["action.executed", "action.failed"]).count() <= 1

    @invariant()
    def audit_chain_holds(self):
        assert verify_chain().ok


@pytest.mark.django_db
def test_no_sequence_of_events_redeems_or_reports_a_grant_twice(demo):
    run_state_machine_as_test(
        GrantMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
