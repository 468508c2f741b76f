from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from audit.chain import canonical_row, chain_hash
from audit.models import AuditEvent
from audit.selectors import verify_chain
from audit.services import Actor, record
from tests.conftest import needs_postgres

pytestmark = pytest.mark.django_db


def write_events(n: int) -> None:
    for i in range(n):
        with transaction.atomic():
            record(actor=Actor.system("test"), event="test.event", after={"i": i, "amount": "1.50"})


def raw(sql: str, params: list | None = None) -> None:
    """Tamper as an attacker with database access would (triggers off on PostgreSQL)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        cursor.execute(sql, params or [])
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = origin")


@pytest.mark.django_db(transaction=True)
def test_record_outside_a_transaction_is_refused():
    with pytest.raises(RuntimeError, match="inside the transaction"):
        record(actor=None, event="test.event")


def test_rolled_back_change_leaves_no_event():
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        record(actor=None, event="test.event")
        1 / 0  # noqa: B018
    assert not AuditEvent.objects.exists()


def test_chain_links_each_event_to_the_previous():
    write_events(3)
    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == "0" * 64
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    report = verify_chain()
    assert report.ok
    assert report.count == 3
    assert report.head_hash == events[2].hash


def test_verify_command_prints_count_and_head(capsys):
    write_events(2)
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert "events: 2" in out
    assert f"head: {AuditEvent.objects.order_by('-seq').first().hash}" in out


def test_edited_row_is_caught():
    write_events(4)
    raw("UPDATE audit_auditevent SET after = %s WHERE seq = 2", ['{"i": 99, "amount": "1.50"}'])
    report = verify_chain()
    assert "seq 2: content does not match its hash" in report.problems
    with pytest.raises(CommandError, match="BROKEN"):
        call_command("audit_verify")


def test_deleted_row_is_caught():
    write_events(4)
    raw("DELETE FROM audit_auditevent WHERE seq = 3")
    problems = verify_chain().problems
    assert "gap: expected seq 3, found 4" in problems
    assert "seq 4: prev_hash does not match the previous row" in problems


def test_reordered_rows_are_caught():
    write_events(3)
    # Swap rows 1 and 2: each keeps its content and hash but takes the other's place.
    raw("UPDATE audit_auditevent SET seq = -1 WHERE seq = 1")
    raw("UPDATE audit_auditevent SET seq = 1 WHERE seq = 2")
    raw("UPDATE audit_auditevent SET seq = 2 WHERE seq = -1")
    problems = verify_chain().problems
    assert "seq 1: content does not match its hash" in problems
    assert "seq 2: content does not match its hash" in problems


def test_rehashed_edit_breaks_the_next_link():
    write_events(3)
    row = AuditEvent.objects.get(seq=2)
    raw("UPDATE audit_auditevent SET hash = %s WHERE seq = 2", ["f" * 64])
    problems = verify_chain().problems
    assert any(p.startswith("seq 3: prev_hash") for p in problems)
    assert row.hash != "f" * 64


@needs_postgres
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET actor_label = 'mallory'",
        "DELETE FROM audit_auditevent",
        "TRUNCATE audit_auditevent",
    ],
)
def test_postgres_trigger_refuses_changes(statement):
    write_events(1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert AuditEvent.objects.count() == 1


def test_orm_update_is_refused_too_on_postgres():
    write_events(1)
    if connection.vendor != "postgresql":
        pytest.skip("the trigger exists on PostgreSQL only: set DATABASE_URL=postgres://... (CI does)")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.update(event="tampered")


# --- The round trip: what is hashed is what the database gives back ----------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.just(-0.0)
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=json_values)
def test_generated_payloads_read_back_from_the_database_verify(payload):
    with transaction.atomic():
        record(actor=Actor.system("test"), event="test.payload", before={"x": payload}, after=payload)
    row = AuditEvent.objects.order_by("-seq").first()
    assert row is not None
    # Read back from the database (jsonb on PostgreSQL), not the object that was written.
    row.refresh_from_db()
    report = verify_chain()
    assert report.ok, report.problems


def test_floats_that_jsonb_rewrites_are_stored_in_the_form_it_returns():
    with transaction.atomic():
        record(actor=None, event="test.event", after={"a": 1e16, "b": -0.0, "c": 1e300, "d": 1.5e-7, "e": 2.5})
    row = AuditEvent.objects.get()
    assert row.after == {"a": 10**16, "b": 0, "c": int(1e300), "d": 1.5e-7, "e": 2.5}
    assert verify_chain().ok


def _legacy_row(seq: int, prev: str, after_sql: str, after_py: dict) -> str:
    """Insert a row as the code before the fix did: hashed over 1e+16, stored as jsonb (which rewrites it)."""
    created = timezone.now()
    fields = {
        "seq": seq,
        "created_at": created,
        "actor_type": "system",
        "actor_id": None,
        "actor_label": "old",
        "event": "run.started",
        "target_type": "",
        "target_id": "",
        "agent_id": None,
        "before": None,
        "after": after_py,
        "request_id": "",
        "prev_hash": prev,
    }
    digest = chain_hash(prev, canonical_row(**fields))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditevent (seq, created_at, actor_type, actor_id, actor_label, event, target_type,"
            " target_id, agent_id, before, after, request_id, prev_hash, key_id, hash)"
            f" VALUES (%s, %s, 'system', NULL, 'old', 'run.started', '', '', NULL, NULL, {after_sql}, '', %s, '', %s)",
            [seq, created, prev, digest],
        )
    return digest


@needs_postgres
def test_a_chain_broken_only_by_the_number_bug_can_be_reanchored_and_that_is_audited(settings, capsys):
    settings.AUDIT_LEGACY_UNTIL_SEQ = 2
    head = _legacy_row(1, "0" * 64, "'{\"amount\": 1e+16}'::jsonb", {"amount": 1e16})
    _legacy_row(2, head, "'{\"amount\": 3}'::jsonb", {"amount": 3})
    write_events(1)
    assert verify_chain().mismatched == [1]

    call_command("audit_reanchor", "--reason", "ticket 42: jsonb number forms")
    assert "seq 1: broken only by number forms" in capsys.readouterr().out
    event = AuditEvent.objects.get(event="audit.reanchored")
    assert event.after["reason"] == "ticket 42: jsonb number forms"
    assert [item["seq"] for item in event.after["accepted"]] == [1]
    report = verify_chain()
    assert report.ok and report.reanchored == 1

    # The acceptance is for exactly that content: a later edit of the row is caught again.
    raw("UPDATE audit_auditevent SET after = '{\"amount\": 2e+16}'::jsonb WHERE seq = 1")
    assert verify_chain().mismatched == [1]


@needs_postgres
def test_reanchoring_refuses_a_row_edited_for_other_reasons(settings, capsys):
    settings.AUDIT_LEGACY_UNTIL_SEQ = 1
    _legacy_row(1, "0" * 64, "'{\"amount\": 1e+16}'::jsonb", {"amount": 1e16})
    write_events(1)
    raw("UPDATE audit_auditevent SET actor_label = 'mallory' WHERE seq = 1")
    with pytest.raises(CommandError, match="refused"):
        call_command("audit_reanchor", "--reason", "trying")
    assert "not because of number forms" in capsys.readouterr().err
    assert not AuditEvent.objects.filter(event="audit.reanchored").exists()
