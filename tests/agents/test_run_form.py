"""Runs are started from a form generated from the agent's input schema, with JSON as the alternative."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.forms import RunInputForm
from agents.models import Run
from demo.seed import CRM_INPUT_SCHEMA, REFUND_INPUT_SCHEMA
from tests.conftest import user


@settings(max_examples=200)
@given(
    ticket=st.text(min_size=1, max_size=300).filter(lambda t: t.strip() and "\x00" not in t),
    order=st.from_regex(r"ORD-\d{4,6}", fullmatch=True),
    amount=st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False, allow_infinity=False),
    ids=st.lists(st.integers(1, 10**6), min_size=1, max_size=20),
)
def test_what_a_person_types_comes_back_as_the_json_they_meant(ticket, order, amount, ids):
    form = RunInputForm(REFUND_INPUT_SCHEMA, {"in-ticket": ticket, "in-order_id": order, "in-amount": str(amount)})
    assert form.is_valid(), form.errors
    values = form.values()
    assert values["order_id"] == order and values["ticket"] == form.cleaned_data["ticket"]
    assert isinstance(values["amount"], int | float) and abs(values["amount"] - float(amount)) < 1e-6
    crm = RunInputForm(CRM_INPUT_SCHEMA, {"in-request": "dupes", "in-contact_ids": ", ".join(map(str, ids))})
    assert crm.is_valid() and crm.values() == {"request": "dupes", "contact_ids": ids}


def test_the_form_follows_the_schema_order_labels_and_required_marks():
    form = RunInputForm(REFUND_INPUT_SCHEMA)
    assert list(form.fields) == ["ticket", "order_id", "amount"]
    assert all(field.required for field in form.fields.values())
    assert form.fields["order_id"].label == "order id"
    assert not RunInputForm({"type": "object"}).fields  # no properties, no fields


@pytest.mark.django_db
def test_an_operator_starts_a_run_from_the_form_or_from_json(demo, client):
    client.force_login(user("operator"))
    page = client.get("/agents/").content.decode()
    assert 'name="in-ticket"' in page and 'name="in-contact_ids"' in page and 'value="form"' in page
    assert 'placeholder="e.g. ORD-1001"' in page and 'placeholder="e.g. 11, 12, 13"' in page  # the schema's examples

    response = client.post(
        "/agents/refund-triage/runs",
        {"as": "form", "in-ticket": "The kettle arrived broken.", "in-order_id": "ORD-1001", "in-amount": "40.5"},
    )
    run = Run.objects.latest("id")
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert run.input == {"ticket": "The kettle arrived broken.", "order_id": "ORD-1001", "amount": 40.5}

    client.post("/agents/crm-cleanup/runs", {"as": "json", "input": '{"request": "x", "contact_ids": [4, 5]}'})
    assert Run.objects.latest("id").input == {"request": "x", "contact_ids": [4, 5]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"in-ticket": "x", "in-order_id": "ORD-1001"}, "amount: This field is required."),
        ({"in-ticket": "x", "in-order_id": "ORD-1001", "in-amount": "lots"}, "is not of type"),
        ({"in-ticket": "x", "in-order_id": "ORD-1001", "in-amount": "1e999999"}, "is not of type"),
    ],
)
def test_a_form_that_does_not_fit_the_schema_starts_nothing_and_says_why(demo, client, fields, message):
    client.force_login(user("operator"))
    before = Run.objects.count()
    response = client.post("/agents/refund-triage/runs", {"as": "form", **fields}, follow=True)
    assert Run.objects.count() == before
    assert message in response.content.decode().replace("&#x27;", "'")
