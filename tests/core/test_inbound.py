"""The input boundary's own rules, as properties over generated values."""

from __future__ import annotations

import json
import math

import pytest
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from agents.models import Run
from approvals.models import ActionRequest
from audit.models import AuditEvent
from core import inbound
from tests.conftest import PASSWORD, refund_input

anything = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.text(alphabet=st.characters(codec=None, categories=None)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=15,
)


def accepted(value) -> bool:
    try:
        inbound.refuse_invalid(value)
    except inbound.InputRefused:
        return False
    return True


@given(anything)
def test_refusal_is_the_only_way_a_value_fails(value):
    try:
        kept = inbound.refuse_invalid(value)
    except inbound.InputRefused as exc:
        assert exc.problems and all(p.message for p in exc.problems)
        return
    # What passes can be written as strict JSON (no NaN, encodable as UTF-8).
    json.dumps(kept, allow_nan=False).encode("utf-8")


@given(anything)
def test_sanitised_output_always_crosses_the_boundary(value):
    cleaned = inbound.sanitise(value)
    assert accepted(cleaned.value)
    if accepted(value):
        assert cleaned.repairs == [] or any("secret" in r for r in cleaned.repairs)


@given(st.text(alphabet=st.characters(codec=None, categories=None)))
def test_parsing_any_text_either_refuses_or_returns_a_valid_value(text):
    try:
        value = inbound.parse_json(text)
    except inbound.InputRefused:
        return
    assert accepted(value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"amount": NaN}', "not a JSON number"),
        ('{"amount": Infinity}', "not a JSON number"),
        ('{"amount": -Infinity}', "not a JSON number"),
        ('{"amount": 1e999}', "not finite"),
        ('{"ids": [99999999999999999999]}', "outside"),
        ('{"t": "a\\u0000b"}', "NUL"),
        ('{"t": "\\ud800"}', "surrogate"),
        ("[" * 100 + "]" * 100, "deeper than 32"),
        ("[" * 100_000 + "]" * 100_000, "deeper than 32"),
        ('{"a": ', "not valid JSON"),
    ],
)
def test_hostile_json_is_refused_with_a_reason(raw, message):
    with pytest.raises(inbound.InputRefused) as refused:
        inbound.parse_json(raw)
    assert message in str(refused.value)


def test_a_huge_integer_is_refused_without_being_parsed():
    # int() of a million digits takes seconds; the boundary refuses on length first.
    with pytest.raises(inbound.InputRefused, match="outside"):
        inbound.parse_json("1" * 1_000_000)


def test_the_path_names_the_field():
    with pytest.raises(inbound.InputRefused) as refused:
        inbound.refuse_invalid({"input": {"items": [1, math.inf]}})
    assert refused.value.problems[0].field == "input.items[1]"


# --- The new-user defects: a run with amount 1e999 or NaN; a contact id past 64 bits -------------


@pytest.mark.django_db
@pytest.mark.parametrize("amount", ["1e999", "NaN", "-Infinity", "1e999999"])
def test_starting_a_run_with_a_non_finite_amount_is_400_from_the_api_and_the_page(refund_agent, api_as, amount):
    body = json.dumps({"input": refund_input()}).replace('"amount": 40', f'"amount": {amount}')
    response = api_as("operator").post("/api/v1/agents/refund-triage/runs", raw=body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "input.amount"
    page = Client()
    page.login(username="operator", password=PASSWORD)
    response = page.post(
        "/agents/refund-triage/runs", {"input": json.dumps(refund_input()).replace("40", amount), "priority": "0"}
    )
    assert response.status_code in {302, 400}
    assert not Run.objects.exists()
    assert not AuditEvent.objects.filter(event="run.started").exists()


@pytest.mark.django_db
def test_a_contact_id_past_64_bits_is_refused_before_anything_is_stored(crm_agent, api_as):
    response = api_as("operator").post(
        "/api/v1/agents/crm-cleanup/runs",
        raw='{"input": {"request": "dupes", "contact_ids": [99999999999999999999]}}',
    )
    assert response.status_code == 400
    assert "contact_ids[0]" in response.json()["errors"][0]["field"]
    assert not ActionRequest.objects.exists()
