"""Every URL pattern and every API operation, fed generated hostile input: never a 5xx.

The routes come from the URL resolver and the OpenAPI document, the field names
from the project's forms, its `request.POST`/`request.GET` reads and the API's
schemas, so a new page or field is covered without touching this file. Values
are what careless and hostile clients send: NUL, unpaired surrogates, NaN and
±Infinity, numbers out of range, deep nesting, oversize text, odd digits.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
from django import forms
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.services import api_token_issue
from agents.models import Run
from agents.services import run_start
from approvals.models import ActionRequest
from audit.models import AuditEvent
from core import inbound
from tests.conftest import PASSWORD, refund_input

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
APPS = ("accounts", "agents", "approvals", "audit", "ops", "config", "demo")

# --- What a hostile client sends -------------------------------------------------

DEEP_ARRAY = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a":' * 200 + "1" + "}" * 200
# Form and query values, as raw UTF-8 bytes (a lone surrogate cannot be sent as text).
HOSTILE_BYTES = [
    b"\x00",
    b"a\x00b",
    "\ud800".encode("utf-8", "surrogatepass"),
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-1e999",
    b"1e999999",
    b"99999999999999999999",
    b"-99999999999999999999",
    "²".encode(),
    b"-1",
    b"0",
    b"",
    b"x" * 60_000,
    DEEP_ARRAY.encode(),
    DEEP_OBJECT.encode(),
    b'{"amount": NaN}',
    b'{"amount": 1e999, "order_id": "ORD-1001"}',
    b'{"ticket": "\\u0000"}',
    b'{"ticket": "\\ud800"}',
    b'{"contact_ids": [99999999999999999999]}',
    b"[]",
    b"null",
    b"javascript:alert(1)",
    b"2026-13-45",
]
# JSON values for API bodies (json.dumps writes NaN and Infinity as bare tokens).
HOSTILE_JSON = [
    float("nan"),
    float("inf"),
    float("-inf"),
    10**30,
    -(10**30),
    "\x00",
    "\ud800",
    "x" * 60_000,
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    {"a": {"b": {"c": None}}},
    [],
    None,
    True,
    -1,
    0,
    1e308,
    "",
    "NaN",
]


def _body(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


# --- Where to send it -------------------------------------------------------------


def _routes() -> list[tuple[str, str]]:
    found = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                found.append((prefix + str(p.pattern), p.name or ""))

    walk(get_resolver().url_patterns, "")
    return [(r, n) for r, n in found if not r.startswith(("django-admin", "^"))]


def _field_names() -> list[str]:
    """Every form field and request parameter the project reads."""
    names: set[str] = set()
    pattern = re.compile(r"request\.(?:POST|GET)(?:\.get|\.getlist)?[\(\[]\s*[\"']([a-z_0-9]+)[\"']")
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            names |= set(pattern.findall(path.read_text()))
            for line in path.read_text().splitlines():
                match = re.match(r"\s+([a-z_0-9]+) = forms\.\w+Field\(", line)
                if match:
                    names.add(match.group(1))
    names |= {"input", "arguments", "verdict", "comment", "reason", "amount", "order_id", "contact_ids", "ids"}
    return sorted(names)


FIELDS = _field_names()
ROUTES = _routes()


def _concrete(route: str, ids: dict[str, Any], hostile: str | None) -> str:
    def fill(match: re.Match[str]) -> str:
        converter, name = match.group(1) or "str", match.group(2)
        if hostile is not None and converter in {"str", "slug"}:
            return quote_from_bytes(hostile.encode("utf-8", "surrogatepass"), safe="")
        return str(ids.get(name, ids["default_" + ("int" if converter == "int" else "str")]))

    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", fill, route)


@pytest.fixture
def world(refund_agent, orders, demo_user, commit):
    # The admin sees every page; the reviewer is the user the user pages are about.
    admin_user = demo_user("admin")
    demo_user("reviewer")
    with commit():
        run = run_start(agent=refund_agent, input=refund_input(amount=300), actor=None)
    action = ActionRequest.objects.filter(run=run).first()
    assert action is not None
    admin = Client(raise_request_exception=False)
    admin.login(username="admin", password=PASSWORD)
    token = api_token_issue(user=admin_user, actor=None)
    return {
        "client": admin,
        "token": token,
        "ids": {
            "slug": "refund-triage",
            "run_id": run.pk,
            "action_id": action.pk,
            "breaker_id": 1,
            "number": 1,
            "rule_id": 1,
            "fmt": "csv",
            "username": "reviewer",
            "default_int": 1,
            "default_str": "x",
        },
    }


def _check(response: Any, where: str) -> None:
    assert response.status_code < 500, f"{where}: {response.status_code} {response.content[:300]!r}"


def _unchanged_when_refused(response: Any, before: tuple[int, int, int]) -> None:
    # A refusal by the boundary writes nothing at all.
    if response.status_code in {400, 413, 414} and response.get("Content-Type", "").startswith("application/json"):
        code = json.loads(response.content).get("error")
        if code in {"invalid_request", "malformed_json", "too_large", "uri_too_long"}:
            assert (AuditEvent.objects.count(), Run.objects.count(), ActionRequest.objects.count()) == before


@pytest.mark.parametrize(("route", "name"), ROUTES, ids=[n or r for r, n in ROUTES])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_page_answers_hostile_input_with_a_5xx(world, route, name, data):
    client: Client = world["client"]
    fields = data.draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=6, unique=True), label="fields")
    values = [data.draw(st.sampled_from(HOSTILE_BYTES), label=f) for f in fields]
    hostile_part = data.draw(st.none() | st.sampled_from(["\x00", "\ud800x", "..", "x" * 300]), label="path")
    url = _concrete(route, world["ids"], hostile_part)
    encoded = "&".join(f"{quote(f)}={quote_from_bytes(v)}" for f, v in zip(fields, values, strict=True))
    headers = {"Authorization": f"Bearer {world['token']}"} if route.startswith("api/") else {}

    _check(client.get(f"{url}?{encoded}", headers=headers), f"GET {url}")
    form = client.generic(
        "POST", url, encoded.encode(), content_type="application/x-www-form-urlencoded", headers=headers
    )
    _check(form, f"POST form {url} {fields}")
    body = {f: data.draw(st.sampled_from(HOSTILE_JSON), label=f"json {f}") for f in fields}
    before = (AuditEvent.objects.count(), Run.objects.count(), ActionRequest.objects.count())
    posted = client.generic("POST", url, _body(body), content_type="application/json", headers=headers)
    _check(posted, f"POST json {url} {fields}")
    _unchanged_when_refused(posted, before)


def _operations(client: Client, token: str) -> list[tuple[str, str, dict[str, Any]]]:
    doc = json.loads(client.get("/api/v1/openapi.json").content)
    ops = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            ops.append((method.upper(), path, op))
    return ops


def _schema_fields(op: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    names: set[str] = set()

    def props(schema: dict[str, Any]) -> None:
        if "$ref" in schema:
            props(doc["components"]["schemas"][schema["$ref"].split("/")[-1]])
        for sub in itertools.chain(schema.get("anyOf", []), schema.get("oneOf", []), schema.get("allOf", [])):
            props(sub)
        names.update(schema.get("properties", {}))

    for content in op.get("requestBody", {}).get("content", {}).values():
        props(content.get("schema", {}))
    names |= {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
    return sorted(names) or ["x"]


def test_every_api_operation_refuses_hostile_json_with_a_4xx(world):
    client: Client = world["client"]
    headers = {"Authorization": f"Bearer {world['token']}"}
    doc = json.loads(client.get("/api/v1/openapi.json").content)
    tried = 0
    for method, path, op in _operations(client, world["token"]):
        url = re.sub(r"\{(\w+)\}", lambda m: str(world["ids"].get(m.group(1), 1)), path)
        for field in _schema_fields(op, doc):
            for value in HOSTILE_JSON:
                before = (AuditEvent.objects.count(), Run.objects.count(), ActionRequest.objects.count())
                if method == "GET":
                    raw = value if isinstance(value, str) else json.dumps(value)
                    response = client.get(
                        f"{url}?{quote(field)}={quote_from_bytes(raw.encode('utf-8', 'surrogatepass'))}",
                        headers=headers,
                    )
                else:
                    body = {field: value, "input": {field: value}, "arguments": {field: value}}
                    response = client.generic(
                        method, url, _body(body), content_type="application/json", headers=headers
                    )
                _check(response, f"{method} {url} {field}={str(value)[:40]!r}")
                _unchanged_when_refused(response, before)
                tried += 1
    print(f"hostile API requests: {tried} over {len(_operations(client, world['token']))} operations, no 5xx")
    assert tried > 100


def test_a_60000_character_query_string_is_answered_414():
    response = Client().get("/login/?q=" + "x" * 60_000)
    assert response.status_code == 414


def test_the_limits_are_the_documented_ones():
    doc = (ROOT / "docs" / "security.md").read_text()
    for value in (inbound.MAX_DEPTH, inbound.MAX_TEXT_CHARS, inbound.MAX_BODY_BYTES, inbound.MAX_QUERY_CHARS):
        assert f"{value:,}" in doc or str(value) in doc
    assert forms  # the field scan reads forms.*Field declarations
