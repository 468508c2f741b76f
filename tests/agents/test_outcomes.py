"""A run says what it came to: done, done with edits, refused, rejected, denied, failed, halted, cancelled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client

from accounts.services import api_token_issue
from agents.models import AgentTool, Run, RunOutcome, RunStatus
from agents.services import run_start, run_transition
from approvals.claims import action_request_claim
from approvals.decisions import action_request_decide
from approvals.models import ActionRequest
from ops.selectors import agent_health
from runtime.services import run_cancel
from tests.conftest import refund_input, user

pytestmark = pytest.mark.django_db


def _run(demo, commit, **kw) -> Run:
    with commit():
        run = run_start(agent=demo["refund-triage"], input=refund_input(**kw), actor=None)
    return run


def _decide(commit, run, verdict, **kw):
    action = ActionRequest.objects.get(run=run)
    action_request_claim(action=action, actor=user("reviewer"))
    with commit():
        action_request_decide(action=action, actor=user("reviewer"), verdict=verdict, **kw)
    run.refresh_from_db()
    return run


def test_each_way_a_run_ends_is_told_apart_on_the_run_in_the_api_and_in_the_metrics(demo, commit):
    done = _run(demo, commit, amount=20)  # auto-approved and executed
    edited = _run(demo, commit, amount=300)
    edited = _decide(
        commit, edited, "edit", arguments={**ActionRequest.objects.get(run=edited).arguments, "amount": 50}
    )
    rejected = _decide(commit, _run(demo, commit, amount=300), "reject", comment="not eligible")
    refused = _run(demo, commit, amount=20, order="not-an-order")  # the guard refuses the arguments
    failed = _run(demo, commit, amount=20, order="ORD-9999")  # auto, but the tool fails: no such order
    waiting = _run(demo, commit, amount=300)
    with commit():
        run_cancel(run=waiting, actor=user("operator"))
    AgentTool.objects.filter(agent=demo["refund-triage"], tool="issue_refund").update(mode="deny")
    denied = _run(demo, commit, amount=20)
    for run in (done, edited, rejected, refused, failed, waiting, denied):
        run.refresh_from_db()

    came_to = {
        "done": done,
        "done_with_edits": edited,
        "rejected": rejected,
        "refused": refused,
        "failed": failed,
        "cancelled": waiting,
        "denied": denied,
    }
    assert {name: run.outcome for name, run in came_to.items()} == {name: name for name in came_to}
    # The lifecycle still says the loop finished: only the outcome says whether anything happened.
    assert {done.status, rejected.status, refused.status, denied.status, failed.status} == {RunStatus.SUCCEEDED}

    client = Client()
    client.force_login(user("operator"))
    for name, run in came_to.items():
        page = client.get(f"/runs/{run.pk}/").content.decode()
        label = RunOutcome(name).label
        assert f'<span class="status status-{name}" title="run {run.status}">{label}</span>' in page, name

    api = Client(headers={"Authorization": f"Bearer {api_token_issue(user=user('operator'), actor=None)}"})
    assert {name: api.get(f"/api/v1/runs/{run.pk}").json()["outcome"] for name, run in came_to.items()} == {
        name: name for name in came_to
    }

    health = agent_health(demo["refund-triage"], timedelta(hours=24))
    counts = {name: n for name, _label, n in health["outcomes"]}
    assert counts == {o.value: (1 if o.value in came_to else 0) for o in RunOutcome}
    assert health["success_rate"] == pytest.approx(2 / 7)  # done and done with edits, of seven that ended

    token = api_token_issue(user=user("operator"), actor=None)
    metrics = Client().get("/metrics", headers={"Authorization": f"Bearer {token}"}).content.decode()
    assert 'countersign_runs_refused_total{agent="refund-triage"} 1.0' in metrics
    assert 'countersign_runs_done_total{agent="refund-triage"} 1.0' in metrics


def test_a_halted_run_says_so_until_it_is_resumed(demo, commit):
    run = _run(demo, commit, amount=300)  # waiting for a reviewer
    assert run_transition(run_id=run.pk, from_status=RunStatus.WAITING, to_status=RunStatus.QUEUED)
    assert run_transition(run_id=run.pk, from_status=RunStatus.QUEUED, to_status=RunStatus.RUNNING)
    assert run_transition(run_id=run.pk, from_status=RunStatus.RUNNING, to_status=RunStatus.HALTED, halt_reason="x")
    run.refresh_from_db()
    assert run.outcome == RunOutcome.HALTED
    assert run_transition(run_id=run.pk, from_status=RunStatus.HALTED, to_status=RunStatus.QUEUED)
    run.refresh_from_db()
    assert run.outcome == ""


def test_finishing_without_saying_what_the_run_came_to_is_refused(demo, commit):
    run = _run(demo, commit, amount=300)
    run_transition(run_id=run.pk, from_status=RunStatus.WAITING, to_status=RunStatus.QUEUED)
    run_transition(run_id=run.pk, from_status=RunStatus.QUEUED, to_status=RunStatus.RUNNING)
    with pytest.raises(ValueError, match="must say what it came to"):
        run_transition(run_id=run.pk, from_status=RunStatus.RUNNING, to_status=RunStatus.SUCCEEDED)
