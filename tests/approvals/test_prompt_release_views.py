"""The approver sees a new prompt's agreement with the golden set, and cannot activate a regression in one click."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client

from agents.configuration import active_prompt
from agents.models import PromptEvaluation
from approvals.four_eyes import prompt_propose
from approvals.models import ActionStatus
from audit.models import AuditEvent
from runtime.golden import prompt_evaluate
from tests.conftest import user
from tests.runtime.golden_runs import HALVES, golden_runs, use_prompt_sensitive

pytestmark = pytest.mark.django_db

SAME = "You triage refund requests. Be kind, and propose issue_refund with the order and amount asked for."


def _as(username: str) -> Client:
    client = Client()
    client.force_login(user(username))
    return client


def _text(response) -> str:
    return re.sub(r"\s+", " ", html.unescape(response.content.decode()))


def _words(response) -> str:
    """The page as it reads, without its tags."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", response.content.decode())))


@pytest.fixture
def agent(refund_agent, orders, demo_user):
    for name in ("admin", "admin2", "reviewer"):
        demo_user(name)
    use_prompt_sensitive(refund_agent)
    refund_agent.refresh_from_db()
    return refund_agent


@pytest.fixture
def regressing(agent, commit):
    """A golden set of five runs, and a proposed version that agrees with one of them (the active one: four)."""
    golden_runs(agent, commit)
    with commit():
        version, proposal = prompt_propose(agent=agent, actor=user("admin"), text=HALVES)
    return version, proposal


def test_the_change_page_shows_agreement_beside_the_active_versions_with_the_cases(regressing):
    _, proposal = regressing
    page = _text(_as("admin2").get(f"/actions/{proposal.pk}/"))
    words = _words(_as("admin2").get(f"/actions/{proposal.pk}/"))
    assert "Agreement with the confirmed outcomes: proposed 1/5 (20 %) · active v1 4/5 (80 %)" in words
    assert '<details class="golden-cases"><summary>5 cases, one per confirmed run</summary>' in page
    assert page.count("✓ agrees") == 5 and page.count("✗") == 5
    assert "Not in one click: v2 agrees with 1/5 (20 %)" in page
    assert 'name="override"' in page and 'name="override_reason"' in page
    # The changes list shows it as well.
    listed = _words(_as("admin2").get("/changes/"))
    assert "proposed 1/5 (20 %) · active v1 4/5 (80 %)" in listed
    # And the agent's configuration page, beside the waiting version.
    configure = _text(_as("admin").get("/agents/refund-triage/configure"))
    assert "golden set: proposed 1/5 (20 %) · active v1 4/5 (80 %)" in configure


def test_the_page_says_when_there_is_no_golden_set_yet(agent, commit):
    golden_runs(agent, commit, count=3)
    _, proposal = prompt_propose(agent=agent, actor=user("admin"), text=HALVES)
    page = _text(_as("admin2").get(f"/actions/{proposal.pk}/"))
    assert "No golden set yet (5 confirmed runs needed, 3 so far)" in page
    assert 'name="override"' not in page and "Evaluate again" not in page


def test_the_page_says_when_the_version_is_not_evaluated_yet(agent, commit):
    golden_runs(agent, commit)
    _, proposal = prompt_propose(agent=agent, actor=user("admin"), text=SAME)  # no commit: the task has not run
    page = _text(_as("admin2").get(f"/actions/{proposal.pk}/"))
    assert "Not evaluated yet: it is replayed against 5 confirmed runs in the background." in page
    assert "Not in one click: evaluate first" in page and "Evaluate again" in page


def test_approving_a_regression_in_one_click_is_refused_with_the_reason(regressing):
    version, proposal = regressing
    response = _as("admin2").post(f"/actions/{proposal.pk}/decide", {"verdict": "approve", "next": "/changes/"})
    assert response.status_code == 409
    page = _text(response)
    assert '<p class="error" id="decision-error" role="alert">v2 agrees with 1/5 (20 %)' in page
    assert 'name="override_reason"' in page
    proposal.refresh_from_db()
    assert proposal.status == ActionStatus.PENDING and active_prompt(version.agent).number == 1


def test_the_inbox_one_click_approve_is_refused_too(regressing):
    _, proposal = regressing
    response = _as("admin2").post(
        f"/actions/{proposal.pk}/decide", {"verdict": "approve", "from": "inbox"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 409
    assert "falls more than the agent&#x27;s margin of 5%" in response.content.decode()
    proposal.refresh_from_db()
    assert proposal.status == ActionStatus.PENDING


def test_an_override_needs_the_box_and_a_written_reason(regressing, commit):
    version, proposal = regressing
    admin2 = _as("admin2")
    url = f"/actions/{proposal.pk}/decide"
    missing = admin2.post(url, {"verdict": "approve", "override": "1", "override_reason": "  "})
    assert missing.status_code == 400 and "an override needs a written reason" in _text(missing)
    unticked = admin2.post(url, {"verdict": "approve", "override_reason": "a reason, but no box"})
    assert unticked.status_code == 409
    too_long = admin2.post(url, {"verdict": "approve", "override": "1", "override_reason": "x" * 5001})
    assert too_long.status_code == 400 and "longer than 5000 characters" in _text(too_long)
    assert not AuditEvent.objects.filter(event="prompt.regression_overridden").exists()

    with commit():
        done = admin2.post(
            url, {"verdict": "approve", "override": "1", "override_reason": "reviewers halved on purpose"}
        )
    assert done.status_code == 302
    assert active_prompt(version.agent) == version
    event = AuditEvent.objects.get(event="prompt.regression_overridden")
    assert (event.actor_label, event.after["reason"], event.after["agreed"], event.after["baseline_agreed"]) == (
        "admin2",
        "reviewers halved on purpose",
        1,
        4,
    )


def test_the_api_obeys_the_gate_and_takes_an_override_reason(regressing, api_as, commit):
    version, proposal = regressing
    api = api_as("admin2")
    refused = api.post(f"/api/v1/actions/{proposal.pk}/decision", {"verdict": "approve"})
    assert refused.status_code == 409 and refused.json()["error"] == "prompt_regression"
    assert refused.json()["regression"] == {
        "version": version.number,
        "evaluation": PromptEvaluation.objects.get(version=version).pk,
        "cases": 5,
        "agreed": 1,
        "baseline": 1,
        "baseline_agreed": 4,
        "margin": 0.05,
    }
    with commit():
        done = api.post(
            f"/api/v1/actions/{proposal.pk}/decision", {"verdict": "approve", "override_reason": "known trade-off"}
        )
    assert done.status_code == 200, done.content
    assert active_prompt(version.agent) == version
    assert AuditEvent.objects.get(event="prompt.regression_overridden").after["reason"] == "known trade-off"


def test_an_admin_can_run_the_evaluation_again_from_the_page(regressing, commit):
    version, proposal = regressing
    url = f"/actions/{proposal.pk}/evaluate"
    assert _as("admin2").get(url).status_code == 405
    with commit():
        response = _as("admin2").post(url)
    assert response.status_code == 302
    latest = PromptEvaluation.objects.filter(version=version).latest("id")
    assert PromptEvaluation.objects.filter(version=version).count() == 2
    assert latest.created_by == user("admin2")
    assert AuditEvent.objects.filter(event="prompt.evaluated").latest("seq").actor_label == "admin2"


@pytest.mark.parametrize("who", ["reviewer", "outsider"])
def test_no_one_but_an_admin_of_the_agent_can_trigger_an_evaluation(regressing, outsider, who):
    _, proposal = regressing
    response = _as(who).post(f"/actions/{proposal.pk}/evaluate")
    assert response.status_code == 404
    assert PromptEvaluation.objects.count() == 1


def test_evaluating_a_decided_version_or_without_a_golden_set_is_refused(agent, commit):
    golden_runs(agent, commit, count=2)
    _, proposal = prompt_propose(agent=agent, actor=user("admin"), text=SAME)
    thin = _as("admin2").post(f"/actions/{proposal.pk}/evaluate")
    assert thin.status_code == 409 and "no golden set yet" in _text(thin)
    with commit():
        _as("admin2").post(f"/actions/{proposal.pk}/decide", {"verdict": "approve"})
    decided = _as("admin2").post(f"/actions/{proposal.pk}/evaluate")
    assert decided.status_code == 409 and "only a prompt version still waiting can be evaluated" in _text(decided)
    assert not PromptEvaluation.objects.exists()


def test_an_improving_version_is_approved_in_one_click(agent, commit):
    golden_runs(agent, commit)
    with commit():
        version, proposal = prompt_propose(agent=agent, actor=user("admin"), text=SAME)
    prompt_evaluate(version=version, actor=user("admin2"))
    page = _text(_as("admin2").get(f"/actions/{proposal.pk}/"))
    assert "proposed 4/5 (80 %) · active v1 4/5 (80 %)" in _words(_as("admin2").get(f"/actions/{proposal.pk}/"))
    assert 'name="override"' not in page
    with commit():
        response = _as("admin2").post(f"/actions/{proposal.pk}/decide", {"verdict": "approve", "next": "/changes/"})
    assert response.status_code == 302 and active_prompt(agent) == version
