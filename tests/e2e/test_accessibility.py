"""Every page type, as the role that uses it, checked by axe-core in Chromium: no serious or critical
violations, and nothing on the browser console (axe-playwright-python, which ships axe-core)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe

from accounts.services import api_token_issue
from agents import upstream
from approvals.four_eyes import agent_configure
from approvals.models import ActionRequest
from tests.conftest import needs_postgres, needs_redis, user
from tests.e2e.conftest import CHROMIUM, SCREENSHOTS, log_in, start_refund, wait_until

pytestmark = [
    needs_postgres,
    needs_redis,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"),
    pytest.mark.django_db(transaction=True),
]

SERIOUS = {"serious", "critical"}
SECTIONS = {
    "reviewer": ["Inbox", "Spot checks", "Agents & runs"],
    "admin2": ["Agents & runs", "Changes", "Operations", "Audit", "Access"],
    "operator": ["Agents & runs", "Operations"],
    "auditor": ["Audit", "Access"],
}


def test_every_page_type_has_no_serious_accessibility_violation_and_no_console_error(demo, stack, browser):
    base = stack.base
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    token = api_token_issue(user=user("operator"), actor=None)
    run_id = start_refund(base, token, "ORD-1003", 400)
    assert wait_until(lambda: ActionRequest.objects.filter(run_id=run_id).exists())
    action = ActionRequest.objects.get(run_id=run_id)
    change = agent_configure(
        agent=demo["crm-cleanup"], actor=user("admin"), settings={}, tools={"delete_contacts": {"mode": "auto"}}
    ).proposal
    assert change is not None
    upstream.http_tool_create(
        actor=user("admin"),
        slug="crm-note",
        description="Add a note to a customer.",
        method="POST",
        url="https://crm.example/notes",
        impact="write",
        input_schema={"type": "object"},
    )

    walks = {
        ("reviewer", "/"): [
            "/",
            "/spot-checks/",
            f"/actions/{action.pk}/",
            f"/runs/{run_id}/",
            "/agents/",
            "/tools/",
            "/notifications/",
            "/no-such-page/",
            "/audit/",  # 403 for a reviewer: the styled page
        ],
        ("admin2", "/ops/"): [
            "/changes/",
            f"/actions/{change.pk}/",
            "/agents/refund-triage/configure",
            "/tool-sources/",
            "/agents/new",
            "/agents/refund-triage/webhook/",  # with the form for whoever configures
        ],
        ("operator", "/ops/"): [
            "/ops/",
            "/ops/agents/refund-triage/",
            "/ops/agents/refund-triage/trust",
            "/ops/alerts/",
            "/agents/refund-triage/webhook/",
        ],
        ("auditor", "/audit/"): ["/audit/", "/access/", "/access/agents/refund-triage/", "/access/users/reviewer/"],
    }
    found: list[str] = []
    errors: list[str] = []
    badges: dict[str, list[str]] = {}
    axe = Axe()

    anonymous = browser.new_context().new_page()
    anonymous.on("console", lambda msg: errors.append(f"anonymous: {msg.text}") if msg.type == "error" else None)
    anonymous.goto(f"{base}/login/")
    found += _serious(axe, anonymous, "anonymous /login/")

    for (username, lands), paths in walks.items():
        page = log_in(browser, base, username, lands=lands, errors=errors)
        for path in paths:
            page.goto(f"{base}{path}")
            page.wait_for_load_state("networkidle")
            found += _serious(axe, page, f"{username} {path}")
            # One screenshot per page type and role, kept as a CI artifact (artifacts/screenshots/).
            name = "-".join(part for part in path.split("/") if part) or "home"
            page.screenshot(path=str(SCREENSHOTS / f"page-{username}-{name}.png"), full_page=True)
        # Each role sees only the sections it can act on.
        shown = page.locator("nav[aria-label=main] a").all_inner_texts()
        assert [re.sub(r"\s+\d+$", "", " ".join(t.split())) for t in shown] == SECTIONS[username], shown
        badges[username] = page.locator("nav[aria-label=main] .nav-badge").all_inner_texts()

    assert found == [], "\n".join(found)
    assert badges == {"reviewer": ["1"], "admin2": ["1"], "operator": [], "auditor": []}  # what waits for whom
    # The 404 and 403 answers are expected; anything else on the console is not.
    unexpected = [e for e in errors if "404" not in e and "403" not in e]
    assert unexpected == [], "\n".join(unexpected)


def _serious(axe: Axe, page, where: str) -> list[str]:
    results = axe.run(page)
    return [
        f"{where}: {v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v.get("impact") in SERIOUS
    ]
