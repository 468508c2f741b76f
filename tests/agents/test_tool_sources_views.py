"""The admins' pages: tool sources (add, list, approve, the diff of a change) and making an agent in the browser."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from agents import upstream
from agents.models import Agent, ToolSource, UpstreamState, UpstreamTool
from agents.selectors import agent_perms_on
from audit.models import AuditEvent
from tests.conftest import PASSWORD

BIN = Path(sys.executable).parent
CHANGING = Path(__file__).with_name("changing_mcp_server.py")

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _programs_we_start(settings: Any) -> None:
    settings.UPSTREAM_STDIO_COMMANDS = [str(BIN / "mcp-server-time"), sys.executable]


def _as(demo_user: Any, username: str) -> Client:
    client = Client()
    demo_user(username)
    assert client.login(username=username, password=PASSWORD)
    return client


@pytest.mark.parametrize("username", ["operator", "reviewer", "auditor"])
def test_the_pages_are_not_there_for_anyone_but_admins(demo_user, username):
    client = _as(demo_user, username)
    assert client.get("/tool-sources/").status_code == 404
    assert client.post("/tool-sources/add", {"slug": "t", "kind": "mcp_http", "url": "https://x/"}).status_code == 404
    assert client.get("/agents/new").status_code == 404
    assert client.post("/agents/new", {"slug": "x", "name": "X"}).status_code == 404
    assert not ToolSource.objects.exists() and not Agent.objects.filter(slug="x").exists()


def test_writes_refuse_get(demo_user):
    client = _as(demo_user, "admin")
    assert client.get("/tool-sources/add").status_code == 405
    assert client.get("/upstream-tools/x/approve").status_code == 405


def test_an_admin_adds_a_server_its_tools_start_disabled_and_approving_one_offers_it(demo_user):
    client = _as(demo_user, "admin")
    response = client.post(
        "/tool-sources/add", {"slug": "time", "kind": "mcp_stdio", "command": str(BIN / "mcp-server-time")}
    )
    assert response.status_code == 302
    page = client.get("/tool-sources/").content.decode()
    assert "time__get_current_time" in page and "disabled" in page
    tool = UpstreamTool.objects.get(name="time__get_current_time")
    stale = client.post(f"/upstream-tools/{tool.name}/approve", {"definition_hash": "0" * 64}, follow=True)
    assert "changed since you looked" in stale.content.decode()
    assert UpstreamTool.objects.get(pk=tool.pk).state == UpstreamState.DISABLED
    client.post(f"/upstream-tools/{tool.name}/approve", {"definition_hash": tool.definition_hash, "impact": "read"})
    assert UpstreamTool.objects.get(pk=tool.pk).state == UpstreamState.ACTIVE
    # Offered on every agent's configuration page now, disabled there until an admin enables it.
    seeded = client.get("/agents/")
    assert seeded.status_code == 200


def test_a_credential_written_out_is_refused_and_nothing_is_written(demo_user):
    client = _as(demo_user, "admin")
    response = client.post(
        "/tool-sources/add",
        {"slug": "gh", "kind": "mcp_http", "url": "https://mcp.example/", "headers": '{"Authorization": "Bearer x"}'},
    )
    assert response.status_code == 400
    assert "looks like a credential" in response.content.decode()
    assert not ToolSource.objects.exists()
    broken = client.post("/tool-sources/add", {"slug": "gh", "kind": "mcp_http", "url": "https://m/", "headers": "{"})
    assert broken.status_code == 400 and not ToolSource.objects.exists()


def test_a_suspended_tool_shows_what_changed(demo_user, tmp_path):
    admin = _as(demo_user, "admin")
    description = tmp_path / "d.txt"
    description.write_text("Look up an order.")
    source = upstream.source_create(
        actor=demo_user("admin"),
        slug="orders",
        kind="mcp_stdio",
        command=sys.executable,
        args=[str(CHANGING), str(description)],
    )
    upstream.source_sync(source=source, actor=None)
    tool = UpstreamTool.objects.get(name="orders__lookup")
    upstream.upstream_tool_approve(tool=tool, actor=demo_user("admin"), definition_hash_seen=tool.definition_hash)
    description.write_text("Look up an order and its customer's address.")
    admin.post("/tool-sources/orders/sync")
    page = admin.get("/tool-sources/").content.decode()
    assert "suspended" in page
    assert "-  &quot;description&quot;: &quot;Look up an order.&quot;" in page
    assert "Approve the new definition" in page


def test_the_sources_page_costs_the_same_queries_for_one_source_or_many(demo_user, django_assert_max_num_queries):
    client = _as(demo_user, "admin")
    admin = demo_user("admin")
    for n in range(1, 4):
        upstream.http_tool_create(
            actor=admin,
            slug=f"hook{n}",
            description="d",
            method="POST",
            url="https://h.example/",
            impact="write",
            input_schema={"type": "object"},
        )
        with django_assert_max_num_queries(12):
            assert client.get("/tool-sources/").status_code == 200


def test_an_admin_makes_an_agent_and_may_configure_and_run_it(demo_user):
    client = _as(demo_user, "admin")
    response = client.post(
        "/agents/new", {"slug": "triage", "name": "Triage", "provider": "scripted", "model": "refund_triage"}
    )
    assert response.status_code == 302 and response["Location"] == "/agents/triage/configure"
    agent = Agent.objects.get(slug="triage")
    assert {"configure_agent", "operate_agent"} <= agent_perms_on(demo_user("admin"), agent)
    assert AuditEvent.objects.filter(event="agent.created", agent_id=agent.pk).exists()
    assert not agent.tools.exists()  # every tool starts disabled
    assert client.get("/agents/triage/configure").status_code == 200


@pytest.mark.parametrize(
    "fields",
    [
        {"slug": "bad slug!", "name": "X"},
        {"slug": "x", "name": ""},
        {"slug": "x", "name": "X", "review_threshold": "2"},
        {"slug": "x", "name": "X", "max_steps": "many"},
        {"slug": "x", "name": "X", "input_schema": '{"type": 5}'},
        {"slug": "x", "name": "X", "api_key_ref": "sk-live-literal"},
    ],
)
def test_a_bad_agent_is_refused_with_a_message_and_nothing_is_written(demo_user, fields):
    client = _as(demo_user, "admin")
    response = client.post("/agents/new", {"provider": "scripted", **fields})
    assert response.status_code == 400
    assert 'class="error"' in response.content.decode()
    assert not Agent.objects.exists()


def test_the_api_makes_agents_for_admins_only(api_as):
    body = {"slug": "triage", "name": "Triage", "max_steps": 4.0}
    assert api_as("operator").post("/api/v1/agents", body).status_code == 403
    created = api_as("admin").post("/api/v1/agents", body)
    assert created.status_code == 201, created.content
    assert created.json()["max_steps"] == 4
    assert api_as("admin").post("/api/v1/agents", body).status_code == 409
