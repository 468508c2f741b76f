"""Two reviewers in two real browser contexts (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from django.db import connections
from playwright.sync_api import sync_playwright

from accounts.services import api_token_issue
from approvals.models import ActionRequest, Decision
from demo.models import Refund
from tests.conftest import PASSWORD, needs_postgres, needs_redis, user
from tests.e2e.conftest import use_production_password, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

pytestmark = [
    needs_postgres,
    needs_redis,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def browser(monkeypatch):

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM
    # calls are still plain synchronous ones (Django documents this switch for such tools).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()
        # ORM calls made while Playwright's loop runs open their own connection
        # (another context as far as Django is concerned): close it, or the
        # test database cannot be dropped at the end of the session.
        connections.close_all()


def log_in(browser, base: str, username: str):
    use_production_password(username)
    page = browser.new_context().new_page()
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    page.wait_for_selector("#live-status.on", timeout=10_000)  # the websocket is open
    return page


def test_new_action_appears_live_and_leaves_the_other_inbox_when_approved(demo, stack, browser):
    base = stack.base
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice = log_in(browser, base, "reviewer")
    bob = log_in(browser, base, "reviewer2")
    token = api_token_issue(user=user("operator"), actor=None)

    created = httpx.post(
        f"{base}/api/v1/agents/refund-triage/runs",
        json={"input": {"ticket": "Arrived broken.", "order_id": "ORD-1007", "amount": 150}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert created.status_code == 201
    # The worker routes the call to review; both inboxes get the row without a reload.
    alice.wait_for_selector("#inbox-rows article", timeout=10_000)
    bob.wait_for_selector("#inbox-rows article", timeout=10_000)
    action = ActionRequest.objects.get(run_id=created.json()["id"])
    row = f"#action-{action.pk}"
    assert alice.locator(row).count() == 1
    assert bob.locator(row).count() == 1
    alice.screenshot(path=str(SCREENSHOTS / "inbox-reviewer-new-action.png"), full_page=True)
    bob.screenshot(path=str(SCREENSHOTS / "inbox-reviewer2-new-action.png"), full_page=True)

    alice.locator(row).get_by_role("button", name="Approve").click()
    alice.wait_for_selector(row, state="detached", timeout=10_000)
    bob.wait_for_selector(row, state="detached", timeout=10_000)
    bob.screenshot(path=str(SCREENSHOTS / "inbox-reviewer2-after-approval.png"), full_page=True)

    # The worker executes it after the decision commits: wait for that, then count.
    assert wait_until(lambda: ActionRequest.objects.get(pk=action.pk).status == "executed")
    action.refresh_from_db()
    assert action.decision.reviewer.username == "reviewer"
    assert Refund.objects.filter(order__order_id="ORD-1007").count() == 1


def test_keyboard_approve_and_an_invalid_edit(demo, stack, browser):
    base = stack.base
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    token = api_token_issue(user=user("operator"), actor=None)

    def start(order: str) -> int:
        response = httpx.post(
            f"{base}/api/v1/agents/refund-triage/runs",
            json={"input": {"ticket": "Arrived broken.", "order_id": order, "amount": 150}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 201
        return response.json()["id"]

    alice = log_in(browser, base, "reviewer")
    bob = log_in(browser, base, "reviewer2")
    first, second = start("ORD-1008"), start("ORD-1009")
    alice.wait_for_function("document.querySelectorAll('#inbox-rows article').length === 2", timeout=10_000)
    bob.wait_for_function("document.querySelectorAll('#inbox-rows article').length === 2", timeout=10_000)
    first_action = ActionRequest.objects.get(run_id=first)
    second_action = ActionRequest.objects.get(run_id=second)

    # j selects the first row, a approves it.
    alice.keyboard.press("j")
    selected = alice.eval_on_selector("#inbox-rows article.current", "el => el.dataset.id")
    alice.keyboard.press("a")
    alice.wait_for_selector(f"#action-{selected}", state="detached", timeout=10_000)
    bob.wait_for_selector(f"#action-{selected}", state="detached", timeout=10_000)
    bob.screenshot(path=str(SCREENSHOTS / "keyboard-approve-left-other-inbox.png"), full_page=True)
    approved = ActionRequest.objects.get(pk=int(selected))
    assert approved.decision.reviewer.username == "reviewer"
    assert {approved.pk} <= {first_action.pk, second_action.pk}

    # ? opens the help.
    alice.keyboard.press("?")
    assert alice.is_visible("#help")
    alice.keyboard.press("Escape")

    # An edit with an invalid amount shows the error and changes nothing.
    other = second_action if approved.pk == first_action.pk else first_action
    alice.goto(f"{base}/actions/{other.pk}/")
    alice.fill("input[name=arg-amount]", "-3")
    alice.click("text=Save edit & approve")
    alice.wait_for_selector(".field.invalid", timeout=10_000)
    assert "greater than 0" in alice.inner_text(".field.invalid")
    alice.screenshot(path=str(SCREENSHOTS / "invalid-edit-error.png"), full_page=True)
    other.refresh_from_db()
    assert other.status == "pending"
    assert other.arguments["amount"] == "150"
    assert not Decision.objects.filter(action=other).exists()
