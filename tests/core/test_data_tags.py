"""JSON shown to people: escaped tables and trees, bounded in size, changes as field-level old → new."""

from __future__ import annotations

import html
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.services import run_start
from core.data_tags import ITEMS_SHOWN, TEXT_MAX, changes, data, humanize_key, perm_label, target_label
from tests.conftest import refund_input, user

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30,
)
TAG = re.compile(r"</?([a-z]+)[^>]*>")
OURS = {"div", "span", "table", "tbody", "thead", "tr", "th", "td", "ol", "li", "details", "summary", "del", "ins"}


def _text_of(markup: str) -> str:
    return html.unescape(TAG.sub("", markup))


@given(json_values)
def test_any_json_value_becomes_only_our_own_markup_with_every_string_escaped(value):
    markup = str(data(value))
    assert {m.group(1) for m in TAG.finditer(markup)} <= OURS
    for leaf in _strings(value):
        text = _text_of(markup)
        assert leaf[:600] in text or json.dumps(leaf)[1:-1] in text  # deeper than MAX_DEPTH: shown as JSON


@given(st.text(max_size=40).map(lambda s: s + '<script>alert("x")</script> & <b>'))
def test_markup_in_a_value_is_shown_not_run(text):
    markup = str(data({"note": text, "items": [text], "nested": {"deeper": {"x": text}}}))
    assert "<script" not in markup.lower() and "&lt;script&gt;" in markup.lower()
    assert {m.group(1) for m in TAG.finditer(markup)} <= OURS


def test_a_huge_value_is_cut_and_says_so():
    ticket = "x" * 200_000
    markup = str(data({"ticket": ticket, "ids": list(range(1000))}))
    assert len(markup) < TEXT_MAX + 10_000
    assert "200,000 characters in all" in markup and f"cut at {TEXT_MAX:,}" in markup
    assert f"and {1000 - ITEMS_SHOWN} more" in markup


def test_nested_objects_deeper_than_the_first_levels_start_collapsed():
    markup = str(data({"order": {"customer": {"address": {"city": "Lyon"}}}}))
    assert "<details><summary>1 fields</summary>" in markup and "Lyon" in markup


@given(
    before=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3)),
    after=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3)),
)
def test_changes_lists_exactly_the_fields_that_differ(before, after):
    markup = str(changes(before, after))
    differ = {
        k
        for k in set(before) | set(after)
        if before.get(k, None) != after.get(k, None) or (k in before) != (k in after)
    }
    shown = set(re.findall(r"<tr><th>(\w)</th>", markup))
    assert shown == differ
    if not differ:
        assert "no change" in markup


def test_names_for_people():
    assert humanize_key("order_id") == "order id"
    assert target_label("approvals.actionrequest") == "action"
    assert target_label("agents.run") == "run"
    assert target_label("no.such") == "no.such" and target_label("") == ""
    assert perm_label("review_agent") == "Review the agent's actions"
    assert perm_label("no_such_perm") == "no_such_perm" and perm_label(3) == 3


@pytest.mark.django_db
def test_a_200_kb_ticket_does_not_make_the_run_page_wide_or_huge(demo, client, commit):
    with commit():
        run = run_start(agent=demo["refund-triage"], input=refund_input(ticket="broken " * 30_000), actor=None)
    client.force_login(user("operator"))
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert page.count("broken") < 2 * TEXT_MAX
    assert "<code>{" not in page and "{&#x27;" not in page  # no Python dict text


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value[:ITEMS_SHOWN]:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in list(value.values())[:ITEMS_SHOWN]:
            yield from _strings(v)
