"""Run by test_sqlite_demo.py in a process of its own, with no DATABASE_URL: `make demo`'s SQLite database.

The demo's loop end to end: each demo agent's tool routed to review, approved, executed (inline).
Prints one line per tool: `<tool> <status after routing> <status after the decision>`.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from agents.models import Agent  # noqa: E402
from approvals.decisions import action_request_decide  # noqa: E402
from approvals.models import ActionRequest  # noqa: E402
from approvals.routing import route_tool_call  # noqa: E402

call_command("migrate", verbosity=0)
call_command("seed_demo", verbosity=0)
reviewer = get_user_model().objects.get(username="reviewer")
calls = [
    ("crm-cleanup", "delete_contacts", {"ids": [3, 2**70]}),
    ("refund-triage", "issue_refund", {"order_id": "ORD-1003", "amount": 300, "reason": "arrived broken"}),
]
for slug, tool, arguments in calls:
    outcome = route_tool_call(
        agent=Agent.objects.get(slug=slug), run=None, tool=tool, arguments=arguments, confidence=0.5, rationale="x"
    )
    assert outcome.action is not None, outcome
    routed = outcome.action.status
    action_request_decide(action=outcome.action, actor=reviewer, verdict="approve", comment="checked")
    print(tool, routed, ActionRequest.objects.get(pk=outcome.action.pk).status)
