"""Runs and the actions they wait on: cancelling a run, and a finished sub-run handing back its result."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction

from agents.models import RUN_TRANSITIONS, Run, RunStatus
from agents.services import run_feed_back, run_transition
from approvals.models import ActionRequest, ActionStatus
from approvals.queue import action_leave_pending
from audit.services import record
from core.errors import IllegalTransition
from live.push import ACTION_CLOSED, push_many


def run_finished(*, run: Run, outcome: str, result: str) -> None:
    """A finished sub-run hands its result to the coordinator run waiting on it."""
    action = ActionRequest.objects.filter(subrun=run).select_related("run").first()
    if action is None or action.run is None:
        return
    detail = {"result": result} if outcome == "executed" else {"error": result}
    run_feed_back(run=action.run, payload=action.feedback(outcome, subrun=run.pk, **detail))


def run_cancel(*, run: Run, actor: User) -> Run:
    """An operator cancels a queued, waiting or halted run; its pending actions are cancelled too."""
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if RunStatus.CANCELLED not in RUN_TRANSITIONS[locked.status]:
            raise IllegalTransition(f"a {locked.status} run cannot be cancelled")
        run_transition(run_id=locked.pk, from_status=locked.status, to_status=RunStatus.CANCELLED)
        pending = [
            action.pk
            for action in ActionRequest.objects.filter(run=locked, status=ActionStatus.PENDING).only("agent_id", "tier")
            if action_leave_pending(action=action, to_status=ActionStatus.CANCELLED)
        ]
        record(
            actor=actor,
            event="run.cancelled",
            target=locked,
            agent_id=locked.agent_id,
            before={"status": locked.status},
            after={"cancelled_actions": pending},
        )
        push_many(ACTION_CLOSED, [{"action_id": i} for i in pending])
        run_finished(run=locked, outcome="failed", result="sub-run cancelled")
    locked.refresh_from_db()
    return locked
