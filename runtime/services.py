"""Runs and the actions they wait on: cancelling a run, and a finished sub-run handing back its result."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet

from agents.models import RUN_TRANSITIONS, Run, RunOutcome, RunStatus, Step, StepKind
from agents.services import run_feed_back, run_transition
from approvals.models import ActionRequest, ActionStatus, Decision, Verdict
from approvals.queue import action_leave_pending
from audit.services import record
from core.errors import IllegalTransition
from core.prepared import PreparedRead
from live.push import ACTION_CLOSED, push_many

# What the last tool call a run made came to (its TOOL_RESULT step), as the run's outcome
# when nothing was executed. Expired is rejected: the review deadline's policy said no.
LAST_CALL_OUTCOME = {
    "refused": RunOutcome.REFUSED,
    "rejected": RunOutcome.REJECTED,
    "expired": RunOutcome.REJECTED,
    "denied": RunOutcome.DENIED,
}


@PreparedRead
def _tool_result_payloads(run_id: int) -> QuerySet[Step, tuple[Any]]:
    return Step.objects.filter(run_id=run_id, kind=StepKind.TOOL_RESULT).order_by("seq").values_list("payload")


def tool_results(run: Run) -> list[Any]:
    """What a run's tool calls came to, in order: what its model is shown of them, and what the run came to.
    Every step reads it (prepared, core.prepared)."""
    return [payload for (payload,) in _tool_result_payloads(run_id=run.pk)]


def run_outcome(run: Run) -> RunOutcome:
    """What a run that reached its final answer came to: done only if it acted (or never needed to).

    Any executed call makes it done (with edits if a reviewer changed one); otherwise its last
    call says why nothing happened: refused, rejected, denied, or failed.
    """
    results = [payload for payload in tool_results(run) if isinstance(payload, dict)]
    executed = [p.get("action_id") for p in results if p.get("outcome") == "executed"]
    if executed:
        edited = Decision.objects.filter(action_id__in=executed, verdict=Verdict.EDIT).exists()
        return RunOutcome.DONE_WITH_EDITS if edited else RunOutcome.DONE
    if not results:
        return RunOutcome.DONE
    return LAST_CALL_OUTCOME.get(str(results[-1].get("outcome")), RunOutcome.FAILED)


# A finished sub-run, as its coordinator's delegate call is told of it: done is executed,
# and a sub-run that did nothing says why, in the words a tool result uses.
FED_BACK = {
    RunOutcome.DONE: "executed",
    RunOutcome.DONE_WITH_EDITS: "executed",
    RunOutcome.REFUSED: "refused",
    RunOutcome.REJECTED: "rejected",
    RunOutcome.DENIED: "denied",
}


@PreparedRead
def _delegating_action(subrun_id: int) -> QuerySet[ActionRequest]:
    return ActionRequest.objects.filter(subrun_id=subrun_id).select_related("run").order_by("pk")[:1]


def run_finished(*, run: Run, outcome: str, result: str) -> None:
    """A finished sub-run hands its result to the coordinator run waiting on it (every finished run asks)."""
    action = _delegating_action.first(subrun_id=run.pk)
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
