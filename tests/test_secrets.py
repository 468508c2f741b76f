"""Known secret values never land anywhere: a model that echoes its key, searched for in everything kept.

The provider is the real OpenAI-compatible one, talking to an HTTP server on
loopback that echoes the key it was sent in the answer's text, in the tool
call's arguments and in the rationale. Afterwards every table of the database
is dumped, the audit exports are downloaded and the log output is read: the key
is in none of them.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

import core.secrets
from agents.models import RunStatus
from agents.services import run_start
from core.logs import ScrubbingFormatter
from core.secrets import REDACTED, forget_cached, known_secrets, scrub_text
from demo.models import Refund
from tests.agents.test_openai_provider import completion, llm_server, tool_call  # noqa: F401  (fixture)
from tests.agents.test_runtime_openai import KEY, openai_agent  # noqa: F401  (fixture)
from tests.conftest import PASSWORD, refund_input

pytestmark = pytest.mark.django_db


def database_dump() -> str:
    """Every row of every table, as text."""
    lines = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            lines.extend(f"{table}: {row!r}" for row in cursor.fetchall())
    return "\n".join(lines)


@pytest.fixture
def log_output():
    """What the configured log handler writes, with the project's formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ScrubbingFormatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def test_the_configured_log_formatter_is_the_scrubbing_one():
    assert settings.LOGGING["formatters"]["plain"]["()"] == "core.logs.ScrubbingFormatter"


def test_a_model_echoing_its_key_leaves_it_nowhere(openai_agent, demo_user, llm_server, commit, log_output):  # noqa: F811
    demo_user("auditor")
    forget_cached()
    llm_server.respond(
        body=completion(
            tool_call(
                "issue_refund",
                {
                    "order_id": "ORD-1003",
                    "amount": 30,
                    "reason": f"my key is {KEY}",
                    "_confidence": 0.97,
                    "_rationale": f"authorised with Bearer {KEY}",
                },
            )
        )
    )
    llm_server.respond(body=completion({"role": "assistant", "content": f"Done. (I used {KEY}.)"}))
    with commit():
        run = run_start(agent=openai_agent, input=refund_input(ticket=f"please, {KEY}"), actor=None)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert llm_server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # the key was really used
    logging.getLogger("agents").warning("provider said: %s", run.result + KEY)

    refund = Refund.objects.get()
    assert REDACTED in refund.reason
    assert REDACTED in run.result
    dump = database_dump()
    assert KEY not in dump
    assert REDACTED in dump  # what was scrubbed is visible as such

    auditor = Client()
    auditor.login(username="auditor", password=PASSWORD)
    for fmt in ("csv", "jsonl"):
        export = auditor.get(f"/audit/export.{fmt}")
        assert export.status_code == 200
        assert KEY not in b"".join(export.streaming_content).decode()
    page = auditor.get("/audit/")
    assert KEY not in page.content.decode()

    logged = log_output.getvalue()
    assert "provider said" in logged
    assert KEY not in logged


def test_server_secrets_sent_by_a_client_are_scrubbed_on_the_way_in(refund_agent, orders, api_as, settings):
    # SECRET_KEY in an API body is stored as [redacted], like any known secret.
    settings.SECRET_KEY = "a-server-secret-key-of-fifty-characters-0123456789"
    forget_cached()
    api = api_as("operator")
    response = api.post(
        "/api/v1/agents/refund-triage/runs",
        {"input": refund_input(ticket=f"leaked: {settings.SECRET_KEY}")},
    )
    assert response.status_code == 201, response.content
    dump = database_dump()
    assert settings.SECRET_KEY not in dump
    assert f"leaked: {REDACTED}" in json.dumps(dump)


def test_secret_files_and_prefixed_variables_are_known(tmp_path, settings, monkeypatch):

    (tmp_path / "webhook").write_text("whsec-0123456789abcdef\n")
    settings.SECRETS_DIR = str(tmp_path)
    monkeypatch.setenv("COUNTERSIGN_SECRET_SMTP", "smtp-password-xyz")
    settings.EMAIL_HOST_PASSWORD = "email-password-123"
    forget_cached()
    assert {"whsec-0123456789abcdef", "smtp-password-xyz", "email-password-123"} <= set(known_secrets())
    text = "a whsec-0123456789abcdef b smtp-password-xyz c email-password-123"
    assert scrub_text(text) == f"a {REDACTED} b {REDACTED} c {REDACTED}"


def test_known_secrets_are_read_once_per_refresh_even_when_there_are_none(settings, monkeypatch):
    # With no secret long enough to mask, every scrub used to re-read settings, environment
    # and files: a fifth of a routed call's time in the benchmark (SECRET_KEY=bench).
    reads: list[int] = []
    monkeypatch.setattr(core.secrets, "_configured", lambda: reads.append(1) or {"short"})
    monkeypatch.setattr(core.secrets, "_resolved", set())  # none registered at run time either
    forget_cached()
    for _ in range(3):
        assert scrub_text("nothing here") == "nothing here"
    assert known_secrets() == () and len(reads) == 1
    forget_cached()
    known_secrets()
    assert len(reads) == 2
