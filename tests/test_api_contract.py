"""The API keeps the promises of its OpenAPI document.

The generated document declares, on every operation, every status it can answer
with the one error schema; requests the document allows are accepted and others
refused; and Schemathesis, with every phase and check, finds nothing against the
real app (daphne on loopback, a seeded database, a token with rights).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.engine
from django.conf import settings
from schemathesis.engine import events
from schemathesis.openapi.checks import RejectedPositiveData

from accounts.services import api_token_issue
from approvals.models import ActionRequest, ActionStatus
from core import inbound
from core.api_contract import COMMON_ERRORS, ERROR_HEADERS
from demo.seed import seed_all
from tests.conftest import ON_POSTGRES, PASSWORD, refund_input, user
from tests.e2e.conftest import BIN, STARTED_BY_TESTS, _wait_for_other_sessions_to_leave, free_port, wait_for_port

ERROR_REF = "#/components/schemas/ErrorOut"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


# ---- the document ------------------------------------------------------------------------------------------------


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield f"{method.upper()} {path}", operation


def _refs(schema: dict[str, Any]) -> set[str]:
    return {schema["$ref"]} if "$ref" in schema else {r for s in schema.get("anyOf", []) for r in _refs(s)}


@pytest.mark.django_db
def test_every_operation_declares_each_status_it_can_answer(client):
    document = client.get("/api/v1/openapi.json").json()
    missing: list[str] = []
    for label, operation in _operations(document):
        responses = {int(status): response for status, response in operation["responses"].items()}
        expected = set(COMMON_ERRORS)
        if "{" in label:
            expected.add(404)  # a path names an object, which may not exist or not be yours
        if "requestBody" in operation:
            expected.add(415)
        missing += [f"{label}: no {status}" for status in sorted(expected - responses.keys())]
        if not any(200 <= status < 300 for status in responses):
            missing.append(f"{label}: no success status")
        for status, response in responses.items():
            if status < 400:
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            if ERROR_REF not in _refs(schema):
                missing.append(f"{label}: {status} is not ErrorOut")
            for header in ERROR_HEADERS.get(status, {}):
                if header not in response.get("headers", {}):
                    missing.append(f"{label}: {status} does not declare {header}")
    assert not missing, "\n".join(missing)


def test_the_error_schema_carries_what_errors_carry(client, db):
    schemas = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    error = schemas["ErrorOut"]
    assert error["required"] == ["error", "detail"]
    # Extra keys config.api.domain_error copies from a DomainError's details.
    assert {"errors", "decided_by", "verdict", "action_status", "tier", "claimed_by", "regression"} <= error[
        "properties"
    ].keys()
    assert schemas["FieldError"]["required"] == ["field", "message"]


# ---- what the document allows is accepted, and nothing else ------------------------------------------------------


def _pending(api_as: Any) -> ActionRequest:
    body = {"input": refund_input(amount=250)}
    run_id = api_as("operator").post("/api/v1/agents/refund-triage/runs", body).json()["id"]
    return ActionRequest.objects.get(run_id=run_id)


@pytest.mark.django_db(transaction=True)
def test_arguments_with_a_verdict_other_than_edit_are_refused_on_the_field(refund_agent, orders, api_as):
    action = _pending(api_as)
    response = api_as("reviewer").post(f"/api/v1/actions/{action.pk}/decision", {"verdict": "approve", "arguments": {}})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert [(e["field"], e["message"]) for e in body["errors"]] == [
        ("approve.arguments", "arguments are only accepted with verdict 'edit'")
    ]
    assert ActionRequest.objects.get(pk=action.pk).status == ActionStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_null_arguments_are_taken_as_absent(refund_agent, orders, api_as):
    action = _pending(api_as)
    body = {"verdict": "approve", "arguments": None, "comment": ""}
    response = api_as("reviewer").post(f"/api/v1/actions/{action.pk}/decision", body)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "executed"


@pytest.mark.django_db(transaction=True)
def test_a_missing_or_unknown_verdict_names_the_verdict_field(refund_agent, orders, api_as):
    action = _pending(api_as)
    for body in ({"comment": "x"}, {"verdict": "maybe"}):
        response = api_as("reviewer").post(f"/api/v1/actions/{action.pk}/decision", body)
        assert response.status_code == 400
        assert [e["field"] for e in response.json()["errors"]] == ["verdict"]


@pytest.mark.parametrize("raw", ["[]", '["comment"]', '"oops"', "3", "null"])
def test_undo_refuses_a_body_that_is_not_an_object(api_as, raw):
    response = api_as("reviewer").post("/api/v1/actions/1/undo", raw=raw)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"


@pytest.mark.django_db(transaction=True)
def test_undoing_an_action_whose_tool_cannot_be_undone_is_409(refund_agent, orders, api_as):
    run_id = api_as("operator").post("/api/v1/agents/refund-triage/runs", {"input": refund_input(amount=20)})
    action = ActionRequest.objects.get(run_id=run_id.json()["id"])
    assert action.status == ActionStatus.EXECUTED
    ActionRequest.objects.filter(pk=action.pk).update(tool="delegate")  # a tool with no compensation
    response = api_as("reviewer").post(f"/api/v1/actions/{action.pk}/undo", {})
    assert response.status_code == 409
    assert response.json()["error"] == "not_reversible"


@pytest.mark.parametrize(
    "body",
    [
        {"tool": "issue_refund", "arguments": {}, "confidence": "0.9"},  # a string is not a number
        {"tool": "issue_refund", "arguments": {}, "confidence": True},
        {"tool": 7, "arguments": {}, "confidence": 0.9},
        {"tool": "issue_refund", "arguments": {}, "confidence": 0.9, "rationle": "typo"},
        {"tool": "issue_refund", "arguments": [], "confidence": 0.9},
    ],
)
def test_submitted_calls_are_held_to_the_declared_types_and_keys(refund_agent, api_as, body):
    response = api_as("operator").post("/api/v1/agents/refund-triage/actions", body)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"
    assert not ActionRequest.objects.exists()


def test_an_integer_confidence_is_a_number(refund_agent, orders, api_as):
    body = {"tool": "issue_refund", "arguments": {"order_id": "ORD-1002", "amount": 5, "reason": "x"}, "confidence": 1}
    assert api_as("operator").post("/api/v1/agents/refund-triage/actions", body).status_code == 201


@pytest.mark.parametrize("path", ["/api/v1/actions/0", "/api/v1/actions/9223372036854775808", "/api/v1/runs/-1"])
def test_ids_outside_the_declared_range_are_400(api_as, path):
    response = api_as("reviewer").get(path)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_a_body_that_is_not_json_is_415(refund_agent, api_as):
    client = api_as("operator")
    response = client.client.post(
        "/api/v1/agents/refund-triage/runs",
        data='{"input": {}}',
        content_type="text/plain",
        headers=client.headers,
    )
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def test_an_unknown_api_url_is_a_json_404(api_as):
    response = api_as("reviewer").get("/api/v1/no/such/thing")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "not_found"


# ---- the running app -----------------------------------------------------------------------------------------------


@dataclass
class LiveApi:
    base: str
    token: str


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [BIN / "python", "manage.py", *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def _seed_objects(base: str, operator_token: str) -> None:
    """Runs and actions a case can meet (pending, executed and so undoable), with the same ids on every run."""
    headers = {"Authorization": f"Bearer {operator_token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=20) as api:
        for amount in (250, 20, 400):
            body = {"input": {"ticket": "The kettle arrived broken.", "order_id": "ORD-1001", "amount": amount}}
            run = api.post("/api/v1/agents/refund-triage/runs", json=body)
            assert run.status_code == 201, run.text
            assert api.get(f"/api/v1/runs/{run.json()['id']}").json()["actions"], "the run proposed nothing"
        # Submitted calls, most of them pending, so decisions with odd comments reach the database.
        for n, (amount, confidence) in enumerate([(20, 0.99), (90, 0.4), *[(101 + k, 0.95) for k in range(8)]]):
            body = {
                "tool": "issue_refund",
                "arguments": {"order_id": f"ORD-{1010 + n}", "amount": amount, "reason": "late"},
                "confidence": confidence,
            }
            response = api.post("/api/v1/agents/refund-triage/actions", json=body)
            assert response.status_code == 201, response.text


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[LiveApi]:
    """daphne serving config.asgi:application on loopback, on a seeded database, with an admin's token."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG"}}
    # No broker: background work runs in the request that commits it, so the server's
    # state (ids, statuses) after each request is the same on every run.
    env.update(BACKGROUND_TASKS="inline", HTTPS="0", AUDIT_ANCHOR_FILE=str(tmp_path / "anchors.log"))
    env["PGAPPNAME"] = STARTED_BY_TESTS  # so the test waits for its sessions to end
    if ON_POSTGRES:
        # The test database (the test is transactional, so what it commits the server sees), seeded here:
        # three more processes (seed_demo, two issue_token) were 14 s of start-ups and password hashing.
        db = settings.DATABASES["default"]
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        env["AUDIT_ANCHOR_FILE"] = settings.AUDIT_ANCHOR_FILE  # one chain, written by both: anchored in one file
        seed_all(password=PASSWORD)
        tokens = {name: api_token_issue(user=user(name), actor=None) for name in ("operator", "admin")}
    else:
        env["SQLITE_PATH"] = str(tmp_path / "contract.sqlite3")
        _manage(env, "migrate", "--noinput", "-v0")
        _manage(env, "seed_demo")
        tokens = {name: _manage(env, "issue_token", name) for name in ("operator", "admin")}
    port = free_port()
    with open(tmp_path / "web.log", "w") as log:
        web = subprocess.Popen(
            [BIN / "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, web)
            base = f"http://127.0.0.1:{port}"
            _seed_objects(base, tokens["operator"])
            yield LiveApi(base=base, token=tokens["admin"])
        finally:
            web.terminate()
            web.wait(timeout=15)
            if ON_POSTGRES:
                _wait_for_other_sessions_to_leave()  # the test database is flushed after us
    # What the server logged but no response showed (a background thread's crash, a refused body).
    tracebacks = _tracebacks((tmp_path / "web.log").read_text())
    assert not tracebacks, "the server logged tracebacks:\n" + "\n".join(tracebacks)


def _tracebacks(log: str) -> list[str]:
    """Each distinct traceback in a log, as the line that raised and the exception."""
    found: list[str] = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            j = i + 1
            while j < len(lines) and lines[j].startswith(" "):
                j += 1
            frames = [frame.strip() for frame in lines[i + 1 : j] if frame.strip().startswith("File")]
            found.append(f"{frames[-1] if frames else ''}: {lines[j] if j < len(lines) else ''}")
    return list(dict.fromkeys(found))


# What the document cannot know: the run input is checked against the agent's input
# schema, tool arguments against the tool's (both set by admins at run time), and
# a submitted call against the agent's enabled tools and limits. A request the
# document allows may still be refused for these, with 400 and one of these codes
# (and field errors); any other 400 for valid data is a contract violation.
RUNTIME_REFUSALS = {
    "POST /api/v1/agents/{slug}/runs": {"invalid_input"},
    # The tool decides, too, who executes the call (a caller's tool, or Countersign).
    "POST /api/v1/agents/{slug}/actions": {
        "unknown_tool",
        "tool_not_enabled",
        "invalid_arguments",
        "over_limit",
        "execution_mismatch",
        "caller_executes",
    },
    "POST /api/v1/actions/{action_id}/decision": {"invalid_arguments"},
    # The programs an installation starts (UPSTREAM_STDIO_COMMANDS) and credentials written out in full.
    "POST /api/v1/tool-sources": {"invalid_config"},
    # An agent's endpoint URL, key reference and input schema are checked by the agent's own rules.
    "POST /api/v1/agents": {"invalid_input"},
    "POST /api/v1/tool-sources/http": {"invalid_config"},
    "POST /api/v1/tool-sources/caller": {"invalid_config"},
    # A webhook URL whose host no lookup could take (a label over 63 characters, not IDNA-encodable).
    "PUT /api/v1/agents/{slug}/webhook": {"invalid_config"},
}


def _outside_input_limits(body: Any) -> bool:
    """Past the input boundary's limits (NUL, lone surrogates, integers beyond 64 bits, depth, size).

    JSON Schema cannot say these about a free-form object, so a schema-valid body
    past them is refused with 400 invalid_request, as the 400 response documents.
    """
    try:
        inbound.refuse_invalid(body)
    except inbound.InputRefused:
        return True
    return False


def _refused_as_documented(failure: Any, case: Any, response: Any) -> bool:
    """A schema-valid request refused for what the document cannot say (see above)."""
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400:
        return False
    try:
        code = response.json().get("error")
    except ValueError:
        return False
    if code == "invalid_request" and _outside_input_limits(case.body):
        return True
    return code in RUNTIME_REFUSALS.get(case.operation.label, set())


def _contract_schema(live_api: LiveApi) -> Any:
    config = schemathesis.Config.from_dict(
        {
            # Deterministic: the same cases, in the same order, on every run.
            "seed": 9,
            "base-url": live_api.base,
            "auth": {"openapi": {"BearerToken": {"bearer": live_api.token}}},
            # A real agent, so bodies reach the agent's and tool's own validation, not just a 404. The
            # long-poll answers at once and the decision stream closes after its backlog
            # (max_response_time would measure their waits, which tests/approvals/test_wait.py and
            # tests/e2e/test_decision_stream.py cover).
            "parameters": {"slug": "refund-triage", "timeout": 0, "seconds": 0},
            "generation": {"max-examples": 30, "deterministic": True, "database": "none"},
            # Every check is on by default; this one needs a limit to run.
            "checks": {"max_response_time": 10},
        }
    )
    schema = schemathesis.openapi.from_url(f"{live_api.base}/api/v1/openapi.json", config=config)

    @schema.hook
    def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
        return not _refused_as_documented(failure, case, response)

    return schema


def _describe(failure: Any, code_sample: str = "", response: Any = None) -> str:
    answer = f"-> {response.status_code} {response.content[:400]!r}" if response is not None else ""
    return f"[{failure.code}] {failure.operation}: {failure.title}\n{failure.message}\n{code_sample}\n{answer}"


@pytest.mark.timeout(300)
@pytest.mark.django_db(transaction=True)
def test_the_running_api_keeps_its_contract(live_api: LiveApi) -> None:
    """`schemathesis run --checks all` against the live app, as a test: every phase, every check."""
    found: list[str] = []
    for event in schemathesis.engine.from_schema(_contract_schema(live_api)).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            recorder = event.recorder
            for case_id, checks in recorder.checks.items():
                interaction = recorder.interactions.get(case_id)
                response = interaction.response if interaction is not None else None
                for check in checks:
                    if check.failure_info is not None:
                        info = check.failure_info
                        found.append(_describe(info.failure, info.code_sample, response))
        elif isinstance(event, events.NonFatalError):
            found.append(f"error in {event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            found += [_describe(f) for f in event.failures]
    assert not found, f"{len(found)} contract failures:\n\n" + "\n\n".join(dict.fromkeys(found))
