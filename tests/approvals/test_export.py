"""The interventions export: what a row says, the filters, who may read which agent, secrets, and its cost."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import PromptStatus, PromptVersion
from agents.services import agent_permission_grant
from approvals import export
from approvals.models import ActionStatus, Decision, SpotCheck
from audit.models import AuditEvent
from core.secrets import REDACTED, forget_cached
from tests.conftest import PASSWORD, user
from tests.factories import ActionFactory

pytestmark = pytest.mark.django_db

URL = "/exports/interventions.jsonl"


def login(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


def lines(response) -> list[dict]:
    assert response.status_code == 200, response.content
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line) for line in body.splitlines()]


def ids(response) -> list[int]:
    return [row["id"] for row in lines(response)]


def action_of(agent, **fields):
    if "run" in fields and fields["run"] is None:  # submitted over the API, by an agent running elsewhere
        return ActionFactory(agent=agent, **fields)
    return ActionFactory(run__agent=agent, **fields)


def reviewed(agent, verdict="approve", *, by, comment="", after=None, **fields):
    action = action_of(agent, status=ActionStatus.EXECUTED, **fields)
    Decision.objects.create(
        action=action,
        reviewer=by,
        verdict=verdict,
        comment=comment,
        arguments_before=action.proposed_arguments,
        arguments_after=after if after is not None else action.proposed_arguments,
    )
    return action


def spot_checked(agent, grade, *, by, comment="", rate=0.05, **fields):
    action = action_of(agent, status=ActionStatus.EXECUTED, route="auto", **fields)
    SpotCheck.objects.create(
        action=action,
        agent=agent,
        tool=action.tool,
        rate=rate,
        grade=grade,
        comment=comment,
        graded_by=by if grade else None,
        graded_at=timezone.now() if grade else None,
    )
    return action


@pytest.fixture
def people(refund_agent, crm_agent, demo_user):
    for name in ("reviewer", "reviewer2", "operator", "auditor", "admin2"):
        demo_user(name)
    return user("reviewer")


def test_a_row_carries_input_proposal_decision_edit_reason_prompt_version_and_outcome(refund_agent, people):
    version = PromptVersion.objects.create(agent=refund_agent, number=7, text="v7", status=PromptStatus.RETIRED)
    edited = reviewed(
        refund_agent,
        "edit",
        by=people,
        comment="the order total is 30",
        after={"order_id": "ORD-1001", "amount": 30},
        arguments={"order_id": "ORD-1001", "amount": 30},
        proposed_arguments={"order_id": "ORD-1001", "amount": 40},
        confidence=0.72,
        rationale="the customer asked for 40",
        route_reason="confidence 0.72 below 0.8",
        result={"refund_id": 5},
        run__input={"ticket": "broken kettle", "order_id": "ORD-1001", "amount": 40},
        run__prompt_version=version,
    )
    graded = spot_checked(refund_agent, "should_reject", by=people, comment="no refund was due", rate=0.25)
    spot_checked(refund_agent, "", by=people)  # sampled, not graded yet: nothing to learn from
    ActionFactory(run__agent=refund_agent)  # pending: nobody decided it
    change = reviewed(refund_agent, "approve", by=people, tier=0, tool="apply_agent_config")  # configuration
    response = login("reviewer").get(URL)
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Content-Disposition"] == 'attachment; filename="countersign-interventions.jsonl"'
    first, second = lines(response)
    decision = Decision.objects.get(action=edited)
    assert first == {
        "id": edited.pk,
        "agent": "refund-triage",
        "tool": "issue_refund",
        "created_at": edited.created_at.isoformat(),
        "input": {"ticket": "broken kettle", "order_id": "ORD-1001", "amount": 40},
        "proposed_arguments": {"order_id": "ORD-1001", "amount": 40},
        "confidence": 0.72,
        "rationale": "the customer asked for 40",
        "route": "review",
        "route_reason": "confidence 0.72 below 0.8",
        "source": "review",
        "outcome": "edit",
        "arguments_before": {"order_id": "ORD-1001", "amount": 40},
        "arguments_after": {"order_id": "ORD-1001", "amount": 30},
        "reason": "the order total is 30",
        "reviewer": "reviewer",
        "decided_at": decision.created_at.isoformat(),
        "weight": 1.0,
        "prompt_version": 7,
        "execution": {"status": "executed", "result": {"refund_id": 5}, "error": None},
    }
    assert second["id"] == graded.pk
    assert (second["source"], second["outcome"], second["reason"], second["reviewer"]) == (
        "spot_check",
        "should_reject",
        "no refund was due",
        "reviewer",
    )
    assert second["weight"] == 4.0  # one grade stands for 1 / rate auto-approved actions
    assert (second["arguments_before"], second["arguments_after"], second["prompt_version"]) == (None, None, None)
    assert change.pk not in {first["id"], second["id"]}


def test_an_action_without_a_run_has_no_input(refund_agent, people):
    action = reviewed(refund_agent, "reject", by=people, run=None)
    [row] = lines(login("reviewer").get(URL))
    assert (row["id"], row["input"], row["prompt_version"], row["arguments_after"]) == (action.pk, None, None, None)


@pytest.fixture
def spread(refund_agent, crm_agent, people):
    """One action of each kind, named, spread over three days."""
    now = timezone.now()
    made = {
        "approve": reviewed(refund_agent, "approve", by=people),
        "edit": reviewed(refund_agent, "edit", by=people),
        "reject": reviewed(crm_agent, "reject", by=people, tool="delete_contacts"),
        "fine": spot_checked(refund_agent, "fine", by=people),
        "should_edit": spot_checked(crm_agent, "should_edit", by=people, tool="delete_contacts"),
        "should_reject": spot_checked(refund_agent, "should_reject", by=people),
    }
    for i, action in enumerate(made.values()):
        type(action).objects.filter(pk=action.pk).update(created_at=now - timedelta(days=i // 2))
    return {name: action.pk for name, action in made.items()}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["approve", "edit", "reject", "fine", "should_edit", "should_reject"]),
        ("agent=crm-cleanup", ["reject", "should_edit"]),
        ("tool=issue_refund", ["approve", "edit", "fine", "should_reject"]),
        ("outcome=edit", ["edit"]),
        ("outcome=should_edit", ["should_edit"]),
        ("source=review", ["approve", "edit", "reject"]),
        ("source=spot_check", ["fine", "should_edit", "should_reject"]),
        ("source=review&outcome=reject", ["reject"]),
        ("agent=refund-triage&source=spot_check", ["fine", "should_reject"]),
        ("since={today}", ["approve", "edit"]),
        ("until={yesterday}", ["reject", "fine", "should_edit", "should_reject"]),
        ("since={yesterday}&until={yesterday}", ["reject", "fine"]),
        (
            "since={two_days_ago}T00:00:00%2B00:00&until={today}T00:00:00Z",
            ["reject", "fine", "should_edit", "should_reject"],
        ),
    ],
)
def test_filters_select_by_agent_tool_time_outcome_and_source(spread, query, expected):
    today = timezone.now().date()
    query = query.format(today=today, yesterday=today - timedelta(days=1), two_days_ago=today - timedelta(days=2))
    response = login("auditor").get(f"{URL}?{query}")
    assert ids(response) == sorted(spread[name] for name in expected)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("outcome=maybe", "outcome: one of approve, reject, edit, fine, should_edit, should_reject"),
        ("source=reviews", "source: one of review, spot_check"),
        ("source=review&outcome=fine", "outcome: fine is a spot check outcome, not a review's"),
        ("since=yesterday", "since: an ISO 8601 date or time"),
        ("until=2026-02-30", "until: an ISO 8601 date or time"),
        ("since=2026-03-02&until=2026-03-01", "until: must be later than since"),
        ("tool=no_such_tool", "tool: no agent tool is named 'no_such_tool'"),
        ("tool=apply_agent_config", "tool: no agent tool is named 'apply_agent_config'"),  # configuration changes
        ("agent=no%20such%20agent!", "agent: not an agent's slug"),
        ("agent=" + "a" * 51, "agent: not an agent's slug"),
    ],
)
def test_invalid_filters_are_refused_with_a_message_and_export_nothing(spread, query, message):
    response = login("auditor").get(f"{URL}?{query}")
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not AuditEvent.objects.filter(event="interventions.exported").exists()


def test_each_user_exports_only_the_agents_whose_actions_they_may_see(spread, crm_agent, people):
    everything = sorted(spread.values())
    refunds = sorted(spread[n] for n in ("approve", "edit", "fine", "should_reject"))
    assert ids(login("reviewer2").get(URL)) == refunds  # reviews refund-triage only
    assert login("reviewer2").get(f"{URL}?agent=crm-cleanup").status_code == 404  # as if it did not exist
    assert login("reviewer2").get(f"{URL}?agent=nobody").status_code == 404
    for name in ("reviewer", "operator", "auditor", "admin2"):  # reviews / operates / audits every agent
        assert ids(login(name).get(URL)) == everything, name
    configurer = get_user_model().objects.create_user(username="configurer", password=PASSWORD)
    agent_permission_grant(agent=crm_agent, perm="configure_agent", to=configurer, actor=None)
    assert login("configurer").get(URL).status_code == 404  # configuring shows no actions
    get_user_model().objects.create_user(username="outsider", password=PASSWORD)
    assert login("outsider").get(URL).status_code == 404
    anonymous = Client().get(URL)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    assert login("reviewer").post(URL).status_code == 405


def test_an_export_is_on_the_audit_trail(spread, refund_agent):
    lines(login("reviewer2").get(f"{URL}?agent=refund-triage&outcome=edit"))
    event = AuditEvent.objects.get(event="interventions.exported")
    assert (event.actor_label, event.agent_id) == ("reviewer2", refund_agent.pk)
    assert event.after == {"filters": {"agent": "refund-triage", "outcome": "edit"}}


def test_the_filename_says_what_was_filtered(spread):
    response = login("reviewer").get(f"{URL}?agent=crm-cleanup&outcome=reject")
    assert (
        response["Content-Disposition"] == 'attachment; filename="countersign-interventions-crm-cleanup-reject.jsonl"'
    )


SECRET = "sk-live-0123456789abcdefghij"


def test_a_known_secret_echoed_anywhere_in_a_row_never_leaves(refund_agent, people, monkeypatch, settings):
    # Rows written before the secret was known (say, a key added later): the store still has it.
    leaky = {"order_id": "ORD-1001", "amount": 40, "note": f"key {SECRET}", SECRET: "as a key"}
    reviewed(
        refund_agent,
        "edit",
        by=people,
        comment=f"they pasted {SECRET}",
        proposed_arguments=leaky,
        arguments=leaky,
        after={**leaky, "api_key": "not-even-known-but-named-so"},
        rationale=f"authorised with Bearer {SECRET}",
        result={"echo": [f"{SECRET}"]},
        error=f"provider said {SECRET}",
        run__input={"ticket": f"my key is {SECRET}", "order_id": "ORD-1001", "amount": 40},
    )
    spot_checked(refund_agent, "fine", by=people, comment=f"fine, though {SECRET} showed", run__input={"t": SECRET})
    monkeypatch.setenv("COUNTERSIGN_SECRET_PROVIDER", SECRET)
    forget_cached()
    response = login("reviewer").get(URL)
    body = b"".join(response.streaming_content).decode()
    assert SECRET not in body
    assert "not-even-known-but-named-so" not in body  # a secret-looking key's value
    rows = [json.loads(line) for line in body.splitlines()]
    assert rows[0]["input"]["ticket"] == f"my key is {REDACTED}"
    assert rows[0]["proposed_arguments"]["note"] == f"key {REDACTED}"
    assert rows[0]["arguments_after"]["api_key"] == REDACTED
    assert rows[0]["execution"]["result"] == {"echo": [REDACTED]}
    assert rows[0]["reason"] == f"they pasted {REDACTED}"
    assert rows[1]["input"] == {"t": REDACTED}
    out = io.StringIO()
    call_command("export_interventions", stdout=out)
    assert SECRET not in out.getvalue() and REDACTED in out.getvalue()


def test_each_batch_costs_the_same_queries_whatever_its_rows(refund_agent, people, monkeypatch):
    client = login("reviewer")
    lines(client.get(URL))  # warm the caches a first request fills (content types)

    def add(n):
        for i in range(n):
            if i % 2:
                reviewed(refund_agent, "edit", by=people, run__prompt_version=None)
            else:
                spot_checked(refund_agent, "fine", by=people)

    def cost():
        with CaptureQueriesContext(connection) as queries:
            rows = lines(client.get(URL))
        return len(rows), len(queries)

    monkeypatch.setattr(export, "BATCH_SIZE", 50)
    add(3)
    three, base = cost()
    add(27)
    thirty, same = cost()
    assert (three, thirty) == (3, 30)
    assert same == base  # one batch each: no query per row
    monkeypatch.setattr(export, "BATCH_SIZE", 7)
    _, batched = cost()
    # 30 rows in batches of 7 take five queries (7, 7, 7, 7, 2) where one did.
    assert batched == base + 4


def test_django_counts_the_same_queries_for_3_and_30_rows(refund_agent, people, monkeypatch, django_assert_num_queries):
    client = login("reviewer")
    monkeypatch.setattr(export, "BATCH_SIZE", 50)
    lines(client.get(URL))
    for _ in range(3):
        reviewed(refund_agent, "approve", by=people)
    with CaptureQueriesContext(connection) as three:
        assert len(lines(client.get(URL))) == 3
    for _ in range(27):
        reviewed(refund_agent, "approve", by=people)
    with django_assert_num_queries(len(three)):
        assert len(lines(client.get(URL))) == 30


def test_the_command_writes_what_the_view_sends(spread, tmp_path):
    view = b"".join(login("auditor").get(f"{URL}?source=review").streaming_content).decode()
    out = io.StringIO()
    call_command("export_interventions", "--source", "review", stdout=out)
    assert out.getvalue() == view and len(view.splitlines()) == 3
    target = tmp_path / "refunds.jsonl"
    err = io.StringIO()
    call_command("export_interventions", "--agent", "refund-triage", "--outcome", "fine", "-o", str(target), stderr=err)
    [row] = [json.loads(line) for line in target.read_text().splitlines()]
    assert (row["id"], row["outcome"]) == (spread["fine"], "fine")
    assert "1 action(s) written" in err.getvalue()
    assert not (tmp_path / "refunds.jsonl.partial").exists()
    assert AuditEvent.objects.filter(event="interventions.exported", actor_label="export_interventions").count() == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--outcome", "maybe"], "outcome: one of"),
        (["--since", "last week"], "since: an ISO 8601 date or time"),
        (["--source", "spot_check", "--outcome", "approve"], "approve is a review outcome"),
        (["--agent", "nobody"], "no agent has the slug 'nobody'"),
        (["--tool", "nope"], "tool: no agent tool is named 'nope'"),
    ],
)
def test_the_command_refuses_bad_filters(spread, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("export_interventions", *args, stdout=io.StringIO())
    assert not AuditEvent.objects.filter(event="interventions.exported").exists()


def test_the_command_refuses_an_unwritable_file_and_leaves_nothing(spread, tmp_path):
    with pytest.raises(CommandError, match="cannot write"):
        call_command("export_interventions", "-o", str(tmp_path / "missing" / "x.jsonl"))


def test_the_ops_agent_page_links_to_its_export(people):
    page = login("operator").get("/ops/agents/refund-triage/").content.decode()
    assert f'href="{URL}?agent=refund-triage"' in page


def test_times_are_utc_unless_they_say_otherwise():
    utc = timezone.get_fixed_timezone(0)
    filters = export.parse_filters({"since": "2026-03-01T12:00", "until": "2026-03-01T15:00:00+02:00"})
    assert (filters.since, filters.until) == (
        datetime(2026, 3, 1, 12, tzinfo=utc),
        datetime(2026, 3, 1, 13, tzinfo=utc),
    )
    with pytest.raises(export.InvalidFilter, match="until: must be later than since"):
        export.parse_filters({"since": "2026-03-01T12:00", "until": "2026-03-01T14:00:00+02:00"})  # the same moment
    assert export.parse_filters({"until": "2026-03-01"}).until == datetime(2026, 3, 2, tzinfo=utc)  # all of that day
