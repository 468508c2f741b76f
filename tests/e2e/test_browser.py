"""Two reviewers in two real browser contexts (Debian's chromium driven by Playwright)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from django.db import transaction

from accounts.services import api_token_issue
from approvals.models import ActionRequest, Decision
from demo.models import Refund
from live.push import ACTION_CHANGED, ACTION_OPENED, push
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import CHROMIUM, SCREENSHOTS, log_in, start_refund, wait_until

pytestmark = [
    needs_postgres,
    needs_redis,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"),
    pytest.mark.django_db(transaction=True),
]


def test_run_page_queue_counts_and_order_stay_live_with_no_console_errors(demo, stack, browser):
    base = stack.base
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    token = api_token_issue(user=user("operator"), actor=None)

    reviewer = log_in(browser, base, "reviewer", errors=errors)
    operator = log_in(browser, base, "operator", lands="/ops/", errors=errors)
    count = "#inbox a.queue[href='?agent=refund-triage'] .qc-sum"
    assert reviewer.inner_text(count) == "0"

    # The riskier call first, the smaller one second: live, the second lands below the first.
    big = start_refund(base, token, "ORD-1003", 400)  # above the order's total of 351
    reviewer.wait_for_function("document.querySelectorAll('#inbox-rows article').length === 1", timeout=10_000)
    small = start_refund(base, token, "ORD-1007", 150)
    reviewer.wait_for_function("document.querySelectorAll('#inbox-rows article').length === 2", timeout=10_000)
    reviewer.wait_for_function(f"document.querySelector(\"{count}\").textContent === '2'", timeout=10_000)
    live_order = reviewer.eval_on_selector_all("#inbox-rows article", "rows => rows.map(r => r.dataset.id)")
    big_action = ActionRequest.objects.get(run_id=big)
    small_action = ActionRequest.objects.get(run_id=small)
    assert big_action.risk_score > small_action.risk_score
    assert live_order == [str(big_action.pk), str(small_action.pk)]
    reviewer.screenshot(path=str(SCREENSHOTS / "inbox-live-order-and-counts.png"), full_page=True)

    # The operator watches the small run; it waits for the reviewer.
    operator.goto(f"{base}/runs/{small}/")
    operator.wait_for_selector("#live-status.on", timeout=10_000)
    assert operator.inner_text(f"#run-{small}-live h1 .status") == "waiting"

    reviewer.locator(f"#action-{small_action.pk}").get_by_role("button", name="Approve").click()
    reviewer.wait_for_selector(f"#action-{small_action.pk}", state="detached", timeout=10_000)
    # Without a reload: the run finishes on the operator's page, the count drops on the reviewer's.
    operator.wait_for_selector(f"#run-{small}-live h1 .status-done", timeout=15_000)
    assert "Refund issued" in operator.inner_text(f"#run-{small}-live")
    assert operator.locator("text=Cancel run").is_hidden()  # the controls follow the status
    reviewer.wait_for_function(f"document.querySelector(\"{count}\").textContent === '1'", timeout=10_000)
    operator.screenshot(path=str(SCREENSHOTS / "run-page-finished-live.png"), full_page=True)

    # A reload shows what the live page showed.
    reviewer.reload()
    reviewer.wait_for_selector("#live-status.on", timeout=10_000)
    assert reviewer.eval_on_selector_all("#inbox-rows article", "rows => rows.map(r => r.dataset.id)") == [
        str(big_action.pk)
    ]
    assert reviewer.inner_text(count) == "1"
    assert errors == []


def _held_request(page, held: list):
    """The next request the page's route caught, once the page has sent it."""
    for _ in range(200):
        if held:
            return held.pop()
        page.wait_for_timeout(50)  # Playwright delivers the route while the page is being waited on
    raise AssertionError("the page sent no decision")


def _count_pushed_copies(page, action_id) -> None:
    """From now on, `window.rowPushes` counts the copies of the action's row that websocket messages brought
    (the relay may put several in one message), and `window.mostShown` the most copies of it the page held
    after any message (read after htmx swapped the message in)."""
    page.evaluate(
        """(id) => {
            window.rowPushes = 0;
            window.mostShown = 0;
            document.addEventListener("htmx:wsAfterMessage", (e) => {
                window.rowPushes += String(e.detail.message).split(`id="action-${id}"`).length - 1;
                const shown = document.querySelectorAll(`[id="action-${id}"]`).length;
                window.mostShown = Math.max(window.mostShown, shown);
            });
        }""",
        action_id,
    )


def _push_through_relay(settings, event: str, action_id: int) -> None:
    """`event` for the action, as a committed intent that the stack's relay delivers (not this process)."""
    settings.LIVE_RELAY = "process"
    with transaction.atomic():
        push(event, action_id=action_id)


def test_an_answer_whose_row_a_live_frame_took_away_still_lands_in_the_notices(demo, stack, browser):
    """The decision's own live frame, or another reviewer's, can remove the row before the POST's answer
    arrives; htmx would then look for the answer's targets inside the detached row. The toast, and the
    reason a decision failed, must land in the page's notices anyway, with no console error."""
    base = stack.base
    errors: list[str] = []
    token = api_token_issue(user=user("operator"), actor=None)
    other = api_token_issue(user=user("reviewer2"), actor=None)
    reviewer = log_in(browser, base, "reviewer", errors=errors)
    first, second = start_refund(base, token, "ORD-1010", 150), start_refund(base, token, "ORD-1011", 150)
    reviewer.wait_for_function("document.querySelectorAll('#inbox-rows article').length === 2", timeout=10_000)
    mine = ActionRequest.objects.get(run_id=first)
    theirs = ActionRequest.objects.get(run_id=second)
    held: list = []

    def hold(route) -> None:  # each decision POST waits here until the test lets it go
        held.append(route)  # (a bound builtin cannot be a Playwright handler)

    reviewer.route("**/decide", hold)

    # This reviewer's approval: the server decides, and its live frame removes the row before the answer.
    reviewer.locator(f"#action-{mine.pk}").get_by_role("button", name="Approve").click()
    approval = _held_request(reviewer, held)
    answer = approval.fetch()
    assert answer.status == 200
    reviewer.wait_for_selector(f"#action-{mine.pk}", state="detached", timeout=10_000)
    approval.fulfill(response=answer)
    toast = reviewer.wait_for_selector("#notices .toast", timeout=10_000)
    assert toast.inner_text().startswith(f"Approved {mine.tool} #{mine.pk} ")

    # Another reviewer rejects the second while this one's approval is on its way: the refusal lands.
    reviewer.locator(f"#action-{theirs.pk}").get_by_role("button", name="Approve").click()
    approval = _held_request(reviewer, held)
    response = httpx.post(
        f"{base}/api/v1/actions/{theirs.pk}/decision",
        json={"verdict": "reject", "comment": "Not this one."},
        headers={"Authorization": f"Bearer {other}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    reviewer.wait_for_selector(f"#action-{theirs.pk}", state="detached", timeout=10_000)
    approval.continue_()
    error = reviewer.wait_for_selector("#notices #decision-error", timeout=10_000)
    assert "reviewer2" in error.inner_text(), error.inner_text()
    assert ActionRequest.objects.get(pk=theirs.pk).status == "rejected"
    # The browser logs the refused POST itself; nothing else may be an error.
    assert [e for e in errors if "status of 409 (Conflict)" not in e] == []


def test_new_action_appears_live_and_leaves_the_other_inbox_when_approved(demo, stack, browser):
    base = stack.base
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice = log_in(browser, base, "reviewer")
    bob = log_in(browser, base, "reviewer2")
    token = api_token_issue(user=user("operator"), actor=None)

    run_id = start_refund(base, token, "ORD-1007", 150)
    # The worker routes the call to review; both inboxes get the row without a reload.
    alice.wait_for_selector("#inbox-rows article", timeout=10_000)
    bob.wait_for_selector("#inbox-rows article", timeout=10_000)
    action = ActionRequest.objects.get(run_id=run_id)
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

    alice = log_in(browser, base, "reviewer")
    bob = log_in(browser, base, "reviewer2")
    first, second = start_refund(base, token, "ORD-1008", 150), start_refund(base, token, "ORD-1009", 150)
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


def test_an_inbox_approval_can_be_undone_until_it_is_sent(demo, stack, browser, settings):
    base = stack.base
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    token = api_token_issue(user=user("operator"), actor=None)
    run_id = start_refund(base, token, "ORD-1011", 150)
    reviewer = log_in(browser, base, "reviewer")
    reviewer.wait_for_selector("#inbox-rows article", timeout=10_000)
    action = ActionRequest.objects.get(run_id=run_id)
    row = f"#action-{action.pk}"
    decides: list[str] = []
    reviewer.on("request", lambda r: decides.append(r.url) if r.method == "POST" and "/decide" in r.url else None)

    # Approve, then Undo while it is held: the row comes back, and the page says nothing was decided.
    reviewer.locator(row).get_by_role("button", name="Approve").click()
    reviewer.wait_for_selector(".notice.hold button.undo", timeout=5_000)
    assert reviewer.locator(row).is_hidden()
    # A live frame that brings a fresh copy of the row while it is held (the row's own push, a list fetched
    # again after a gap) does not show it again: it stays hidden until Undo.
    reviewer.evaluate(
        """(id) => {
            const copy = document.getElementById(id).cloneNode(true);
            copy.hidden = false;
            copy.setAttribute("hx-swap-oob", "true");
            htmx.swap(document.body, copy.outerHTML, {swapStyle: "none"});
        }""",
        f"action-{action.pk}",
    )
    assert reviewer.locator(row).count() == 1 and reviewer.locator(row).is_hidden()
    reviewer.screenshot(path=str(SCREENSHOTS / "inbox-approval-held-with-undo.png"), full_page=True)
    reviewer.click(".notice.hold button.undo")
    reviewer.wait_for_selector(".notice.undone", timeout=5_000)
    assert reviewer.locator(row).is_visible()
    assert ActionRequest.objects.get(pk=action.pk).status == "pending"

    # Approve again and let it go: it is sent once the hold ends, and it is the only decision sent.
    # (Were the undone hold's timer still alive it would have fired first: two posts, not one.)
    # While it is held, a live frame replaces the row (as a claim or an SLA warning does): the approval is
    # sent from the row on the page then, not lost with the one that was clicked. A longer hold than the
    # stack's 2 s, so the frame surely lands inside it.
    reviewer.evaluate("document.body.dataset.undoSeconds = '8'")
    _count_pushed_copies(reviewer, action.pk)
    reviewer.locator(row).get_by_role("button", name="Approve").click()
    reviewer.wait_for_selector(".notice.hold button.undo", timeout=5_000)
    _push_through_relay(settings, ACTION_CHANGED, action.pk)
    reviewer.wait_for_function("window.rowPushes >= 1", timeout=5_000)
    assert reviewer.locator(".notice.hold").count() == 1  # still held
    assert reviewer.locator(row).count() == 1 and reviewer.locator(row).is_hidden()
    assert reviewer.evaluate("document.querySelectorAll('#inbox-rows > :not(article.row)').length") == 0
    reviewer.wait_for_selector(row, state="detached", timeout=15_000)
    assert wait_until(lambda: ActionRequest.objects.get(pk=action.pk).status == "executed")
    assert decides == [f"{base}/actions/{action.pk}/decide"]
    assert ActionRequest.objects.get(pk=action.pk).decision.reviewer.username == "reviewer"


def test_a_row_pushed_again_after_the_page_shows_it_is_kept_not_doubled(demo, stack, browser, settings):
    """The page can render a row (or fetch its list again when its socket opens) before the row's own push
    arrives, and a push can come twice: the row must stay one row, where it was, with no console error."""
    base = stack.base
    errors: list[str] = []
    token = api_token_issue(user=user("operator"), actor=None)
    first, second = start_refund(base, token, "ORD-1003", 400), start_refund(base, token, "ORD-1007", 150)
    reviewer = log_in(browser, base, "reviewer", errors=errors)
    reviewer.wait_for_function("document.querySelectorAll('#inbox-rows > article.row').length === 2", timeout=10_000)
    reviewer.wait_for_selector("#live-status.on", timeout=10_000)
    reviewer.wait_for_load_state("networkidle")  # the list fetched again when the socket opened has landed
    shown = [str(ActionRequest.objects.get(run_id=run).pk) for run in (first, second)]
    rows = "document.querySelectorAll('#inbox-rows > *')"
    assert reviewer.evaluate(f"Array.from({rows}, r => r.matches('article.row') && r.dataset.id)") == shown

    # The second row's push, delivered through the real outbox and relay, twice over.
    _count_pushed_copies(reviewer, shown[1])
    for copies in (1, 2):  # one at a time: the relay coalesces equal intents of one batch into one frame
        _push_through_relay(settings, ACTION_OPENED, int(shown[1]))
        reviewer.wait_for_function(f"window.rowPushes >= {copies}", timeout=10_000)  # and swapped in
    assert reviewer.evaluate("window.mostShown") == 1
    assert reviewer.evaluate(f"Array.from({rows}, r => r.matches('article.row') && r.dataset.id)") == shown
    assert reviewer.locator(f"#action-{shown[1]}").is_visible()
    assert errors == []


def test_a_run_started_from_the_schema_form_and_an_edit_confirmed_after_its_recomputed_preview(demo, stack, browser):
    base = stack.base
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    operator = log_in(browser, base, "operator", lands="/ops/")
    operator.goto(f"{base}/agents/")
    form = operator.locator("form.run-start").filter(has=operator.locator("input[name=in-order_id]")).first
    form.locator("input[name=in-ticket]").fill("The toaster arrived broken.")
    form.locator("input[name=in-order_id]").fill("ORD-1012")
    form.locator("input[name=in-amount]").fill("300")
    operator.screenshot(path=str(SCREENSHOTS / "run-start-form.png"), full_page=True)
    form.get_by_role("button", name="Start run", exact=True).click()
    operator.wait_for_url(f"{base}/runs/*/")
    run_id = int(operator.url.rstrip("/").split("/")[-1])
    assert wait_until(lambda: ActionRequest.objects.filter(run_id=run_id).exists())
    action = ActionRequest.objects.get(run_id=run_id)
    assert action.arguments["order_id"] == "ORD-1012" and action.arguments["amount"] == "300"

    reviewer = log_in(browser, base, "reviewer")
    reviewer.goto(f"{base}/actions/{action.pk}/")
    reviewer.fill("input[name=arg-amount]", "45")
    reviewer.click("text=Save edit & approve")
    reviewer.wait_for_selector("#edit-review", timeout=10_000)
    assert "45" in reviewer.inner_text("#edit-review")  # the recomputed "refunded after"
    reviewer.screenshot(path=str(SCREENSHOTS / "edit-recomputed-preview-to-confirm.png"), full_page=True)
    assert ActionRequest.objects.get(pk=action.pk).status == "pending"
    reviewer.click("text=Confirm edit & approve")
    assert wait_until(lambda: ActionRequest.objects.get(pk=action.pk).status == "executed")
    assert ActionRequest.objects.get(pk=action.pk).arguments["amount"] == "45"
