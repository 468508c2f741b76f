"""The trust loop in a real browser against the real stack: a spot check graded after the call ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounts.services import api_token_issue
from agents.models import AgentTool, Run
from approvals.models import ActionRequest, ActionStatus, SpotCheck
from audit.models import AuditEvent
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import CHROMIUM, SCREENSHOTS, log_in, start_refund, wait_until

pytestmark = [
    needs_postgres,
    needs_redis,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"),
    pytest.mark.django_db(transaction=True),
]


def test_a_sampled_call_runs_unheld_and_is_graded_in_the_browser(demo, stack, browser):
    base = stack.base
    errors: list[str] = []
    # Every auto-approved refund is sampled: the call must still run without waiting for anyone.
    AgentTool.objects.filter(agent__slug="refund-triage", tool="issue_refund").update(spot_check_rate=1.0)
    token = api_token_issue(user=user("operator"), actor=None)
    run_id = start_refund(base, token, "ORD-1007", 40)  # under the auto limit of 100, confident
    assert wait_until(lambda: Run.objects.get(pk=run_id).status == "succeeded", timeout=30)
    action = ActionRequest.objects.get(run_id=run_id)
    assert action.status == ActionStatus.EXECUTED
    check = SpotCheck.objects.get(action=action)
    assert check.grade == ""

    reviewer = log_in(browser, base, "reviewer", errors=errors)
    reviewer.goto(f"{base}/spot-checks/")
    row = reviewer.locator(f"#spot-check-{check.pk}")
    assert "issue_refund" in row.inner_text()
    # A grade other than "fine" needs a reason: refused in place, nothing written.
    row.get_by_role("button", name="Should have been rejected").click()
    reviewer.wait_for_selector("#grade-error", timeout=10_000)
    assert "say what should have been different" in reviewer.inner_text("#grade-error")
    assert SpotCheck.objects.get(pk=check.pk).grade == ""

    row.get_by_label("Comment").fill("the order was a duplicate")
    row.get_by_role("button", name="Should have been rejected").click()
    reviewer.wait_for_selector(f"#spot-check-{check.pk}.graded", timeout=10_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    reviewer.screenshot(path=str(SCREENSHOTS / "spot-check-graded.png"), full_page=True)
    check.refresh_from_db()
    assert (check.grade, check.comment, check.graded_by.username) == (
        "should_reject",
        "the order was a duplicate",
        "reviewer",
    )
    assert AuditEvent.objects.filter(event="spot_check.graded", target_id=str(action.pk)).count() == 1

    # The operator sees the tool on the trust page, with the grade counted as a spot-checked sample.
    operator = log_in(browser, base, "operator", lands="/ops/", errors=errors)
    operator.goto(f"{base}/ops/agents/refund-triage/trust")
    section = operator.locator("#tool-issue_refund")
    assert "1 spot-checked" in section.inner_text()
    operator.screenshot(path=str(SCREENSHOTS / "trust-page.png"), full_page=True)
    # The only console errors are the browser's report of the refused (400) grade.
    refused = [e for e in errors if "status of 400" in e or "Error Code 400 from /spot-checks/" in e]
    assert len(refused) == 2 and errors == refused, errors
