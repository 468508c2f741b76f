"""Navigation by role: each role lands where its work is, sees only what it can act on, with pending counts."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from agents.services import run_start
from approvals.four_eyes import agent_configure
from config.navigation import sections_for
from tests.conftest import PASSWORD, refund_input, user

pytestmark = pytest.mark.django_db

EVERYTHING = ["Inbox", "Spot checks", "Agents & runs", "Changes", "Operations", "Audit", "Access"]
SEES = {
    "admin": EVERYTHING,
    "admin2": ["Agents & runs", "Changes", "Operations", "Audit", "Access"],
    "reviewer": ["Inbox", "Spot checks", "Agents & runs"],
    "reviewer2": ["Inbox", "Spot checks", "Agents & runs"],
    "operator": ["Agents & runs", "Operations"],
    "auditor": ["Audit", "Access"],
}
LANDS = {
    "admin": "/",
    "admin2": "/ops/",
    "reviewer": "/",
    "reviewer2": "/",
    "operator": "/ops/",
    "auditor": "/audit/",
}


@pytest.mark.parametrize("username", sorted(SEES))
def test_each_role_lands_where_its_work_is_and_sees_only_what_it_can_act_on(demo, username):
    client = Client()
    response = client.post("/login/", {"username": username, "password": PASSWORD}, follow=True)
    assert response.redirect_chain[-1][0] == LANDS[username]
    assert response.status_code == 200
    header = response.content.decode().split("</header>")[0]
    shown = re.findall(r'<nav aria-label="main">(.*?)</nav>', header, re.S)[0]
    labels = [re.sub(r"<.*?>|\s+\d+\s*$", "", a).strip() for a in re.findall(r"<a [^>]*>(.*?)</a>", shown, re.S)]
    assert [label.replace("&amp;", "&") for label in labels] == SEES[username]


def test_the_badges_count_what_waits_for_each_person(demo, commit):
    for amount in (300, 400):
        with commit():
            run_start(agent=demo["refund-triage"], input=refund_input(amount=amount), actor=None)
    risky = agent_configure(
        agent=demo["crm-cleanup"], actor=user("admin"), settings={}, tools={"delete_contacts": {"mode": "auto"}}
    )
    assert not risky.applied  # waits for a second admin

    def badges(username):
        return {s.label: s.badge for s in sections_for(user(username)) if s.badge}

    assert badges("reviewer") == {"Inbox": 2}
    assert badges("admin2") == {"Changes": 1}
    assert badges("admin") == {"Inbox": 2}  # their own proposal waits for someone else
    assert badges("operator") == {} and badges("auditor") == {}

    client = Client()
    client.force_login(user("reviewer"))
    page = client.get("/agents/").content.decode()
    assert '<span class="nav-badge" title="2 waiting for you">2</span>' in page


def test_the_header_costs_the_same_few_queries_whatever_the_role(demo):
    counts = {}
    for username in SEES:
        person = user(username)
        with CaptureQueriesContext(connection) as queries:
            sections_for(person)
        counts[username] = len(queries)
    # A reviewer's: their per-agent rights, the inbox badge, the open spot checks, their global permissions (2).
    assert max(counts.values()) <= 5, counts


def test_someone_who_decides_nothing_sees_no_bulk_controls_in_the_inbox(demo):
    client = Client()
    client.force_login(user("auditor"))
    page = client.get("/").content.decode()
    assert 'id="not-a-reviewer"' in page and '<form id="bulk" hidden' in page
    client.force_login(user("reviewer"))
    page = client.get("/").content.decode()
    assert 'id="not-a-reviewer"' not in page and '<form id="bulk" method="post"' in page


def test_every_page_names_a_favicon_and_the_browser_default_finds_it(demo):
    client = Client()
    client.force_login(user("reviewer"))
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/no-such-page/").content.decode()
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/favicon.svg"
