"""The tamper suite: one test per "detected" cell of the threat model in docs/security.md.

Attackers with database access are played for real: on PostgreSQL, the owner and
the superuser disable the append-only trigger (ALTER TABLE ... DISABLE TRIGGER);
the INSERT-only user is a real role with nothing but INSERT on the table. None of
them holds AUDIT_CHAIN_KEY or can rewrite the anchor file.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from audit.chain import GENESIS_HASH, canonical_row, chain_hash
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import Actor, checkpoint_take, record
from tests.conftest import needs_postgres

pytestmark = pytest.mark.django_db


def write_events(n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        with transaction.atomic():
            record(actor=Actor.system("test"), event="test.event", after={"i": i})


def attack(*statements: str, params: list | None = None) -> None:
    """Run SQL as the table's owner (or a superuser) would: the append-only trigger switched off."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
            cursor.execute("ALTER TABLE audit_auditcheckpoint DISABLE TRIGGER USER")
        for sql in statements:
            cursor.execute(sql, params or [])
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
            cursor.execute("ALTER TABLE audit_auditcheckpoint ENABLE TRIGGER USER")


def verify_fails(capsys, expected: str) -> None:
    with pytest.raises(CommandError, match="BROKEN"):
        call_command("audit_verify")
    assert expected in capsys.readouterr().err


@pytest.fixture
def sealed_log():
    write_events(6)
    checkpoint_take()
    write_events(2, start=6)  # written after the checkpoint: anchored outside only
    call_command("audit_verify")  # intact to begin with


def forged_row(seq: int, prev: str, *, key: bytes | None, key_id: str) -> dict:
    """A row whose hash is computed correctly, except for the key the attacker does not have."""
    row = AuditEvent.objects.get(seq=seq - 1)
    fields = {
        "seq": seq,
        "created_at": row.created_at,
        "actor_type": "system",
        "actor_id": None,
        "actor_label": "mallory",
        "event": "access.granted",
        "target_type": "",
        "target_id": "",
        "agent_id": None,
        "before": None,
        "after": {"to": "mallory"},
        "request_id": "",
        "prev_hash": prev,
        "key_id": key_id,
    }
    fields["hash"] = chain_hash(prev, canonical_row(**fields), key)
    return fields


def insert(fields: dict) -> None:
    columns = ", ".join(fields)
    placeholders = ", ".join(["%s"] * len(fields))
    values = [json.dumps(v) if k in {"before", "after"} and v is not None else v for k, v in fields.items()]
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO audit_auditevent ({columns}) VALUES ({placeholders})", values)


def test_intact_log_with_checkpoints_and_anchors_verifies(sealed_log, capsys):
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert "events: 8" in out
    assert "checkpoints checked: 1" in out
    assert "anchors checked: 9" in out  # 8 commits and the checkpoint
    assert "chain: OK" in out


# --- DB owner / superuser ---------------------------------------------------------


def test_edit_is_caught(sealed_log, capsys):
    attack("""UPDATE audit_auditevent SET actor_label = 'mallory' WHERE seq = 3""")
    verify_fails(capsys, "seq 3: content does not match its hash")


def test_delete_is_caught(sealed_log, capsys):
    attack("DELETE FROM audit_auditevent WHERE seq = 4")
    verify_fails(capsys, "gap: expected seq 4, found 5")


def test_reorder_is_caught(sealed_log, capsys):
    attack(
        "UPDATE audit_auditevent SET seq = -2 WHERE seq = 2",
        "UPDATE audit_auditevent SET seq = 2 WHERE seq = 5",
        "UPDATE audit_auditevent SET seq = 5 WHERE seq = -2",
    )
    verify_fails(capsys, "seq 2: prev_hash does not match the previous row")


def test_cutting_the_tail_after_the_last_checkpoint_is_caught_by_the_anchors(sealed_log, capsys):
    # Rows 7-8 came after the checkpoint at 6: what is left is a consistent chain that
    # matches every checkpoint in the database. The anchors outside still name seq 8.
    attack("DELETE FROM audit_auditevent WHERE seq >= 7")
    verify_fails(capsys, "names seq 8, which is gone: the log was cut off")


def test_cutting_the_tail_and_the_checkpoints_is_caught_by_the_anchors(sealed_log, capsys):
    attack("DELETE FROM audit_auditcheckpoint", "DELETE FROM audit_auditevent WHERE seq >= 4")
    verify_fails(capsys, "names seq 6, which is gone")


def test_truncating_everything_is_caught(sealed_log, capsys):
    attack(
        "DELETE FROM audit_auditcheckpoint",
        "DELETE FROM audit_auditevent" if connection.vendor != "postgresql" else "TRUNCATE audit_auditevent",
    )
    verify_fails(capsys, "which is gone")


def test_forged_append_with_a_guessed_key_is_caught(sealed_log, capsys):
    head = AuditEvent.objects.get(seq=8)
    insert(forged_row(9, head.hash, key=b"not-the-key", key_id=head.key_id))
    verify_fails(capsys, "seq 9: content does not match its hash")


def test_forged_append_as_an_unkeyed_row_is_caught(sealed_log, capsys):
    head = AuditEvent.objects.get(seq=8)
    insert(forged_row(9, head.hash, key=None, key_id=""))
    verify_fails(capsys, "seq 9: an unkeyed row past AUDIT_LEGACY_UNTIL_SEQ (forged)")


@pytest.mark.parametrize("as_legacy", [False, True])
def test_recomputing_the_whole_chain_is_caught(sealed_log, capsys, as_legacy):
    # The attacker edits row 2 and recomputes every hash after it, either with a key of
    # their own or as an unkeyed legacy chain: it is consistent, but not keyed with ours.
    attack("UPDATE audit_auditevent SET after = '{\"i\": 99}' WHERE seq = 2")
    prev = GENESIS_HASH
    statements = []
    for row in AuditEvent.objects.order_by("seq"):
        fields = {f: getattr(row, f) for f in ("seq", "created_at", "actor_type", "actor_id", "actor_label")}
        fields |= {f: getattr(row, f) for f in ("event", "target_type", "target_id", "agent_id", "before", "after")}
        key_id = "" if as_legacy else row.key_id
        fields |= {"request_id": row.request_id, "prev_hash": prev, "key_id": key_id}
        digest = chain_hash(prev, canonical_row(**fields), None if as_legacy else b"mallory's key")
        statements.append(
            f"UPDATE audit_auditevent SET prev_hash = '{prev}', hash = '{digest}', key_id = '{key_id}' "
            f"WHERE seq = {row.seq}"
        )
        prev = digest
    attack(*statements)
    verify_fails(capsys, "seq 1:")


def test_a_forged_checkpoint_is_reported(sealed_log, capsys):
    attack("UPDATE audit_auditcheckpoint SET seq = 2")
    verify_fails(capsys, "invalid seal")


def test_a_forged_anchor_is_reported(sealed_log, capsys, settings):
    with open(settings.AUDIT_ANCHOR_FILE, "a") as anchors:
        anchors.write(json.dumps({"seq": 3, "hash": "f" * 64, "at": "2026-01-01T00:00:00+00:00", "mac": "0" * 64}))
    verify_fails(capsys, "has an invalid MAC")


def test_anchors_are_written_after_every_commit(settings):
    write_events(3)
    with open(settings.AUDIT_ANCHOR_FILE) as anchors:
        lines = [json.loads(line) for line in anchors]
    assert [line["seq"] for line in lines] == [1, 2, 3]
    assert lines[-1]["hash"] == AuditEvent.objects.get(seq=3).hash


def test_a_rotated_key_still_verifies_the_rows_it_signed(settings, capsys):
    write_events(2)
    settings.AUDIT_CHAIN_OLD_KEYS = [settings.AUDIT_CHAIN_KEY]
    settings.AUDIT_CHAIN_KEY = "a-brand-new-chain-key"
    write_events(2, start=2)
    call_command("audit_verify")
    assert "events: 4" in capsys.readouterr().out
    assert len({e.key_id for e in AuditEvent.objects.all()}) == 2
    settings.AUDIT_CHAIN_OLD_KEYS = []
    verify_fails(capsys, "signed with an unknown key")


def test_a_legacy_unkeyed_prefix_verifies_up_to_its_configured_end(settings, capsys):
    # A deployment from before the keyed chain: its rows were plain SHA-256.
    prev = GENESIS_HASH
    for seq in (1, 2):
        row = {
            "seq": seq,
            "created_at": AuditEvent._meta.get_field("created_at").to_python("2026-01-01T00:00:00+00:00"),
            "actor_type": "system",
            "actor_id": None,
            "actor_label": "legacy",
            "event": "test.event",
            "target_type": "",
            "target_id": "",
            "agent_id": None,
            "before": None,
            "after": {"i": seq},
            "request_id": "",
            "prev_hash": prev,
            "key_id": "",
        }
        row["hash"] = hashlib.sha256(prev.encode() + canonical_row(**row)).hexdigest()
        insert(row)
        prev = row["hash"]
    write_events(1)
    verify_fails(capsys, "seq 1: an unkeyed row past AUDIT_LEGACY_UNTIL_SEQ")
    settings.AUDIT_LEGACY_UNTIL_SEQ = 2
    call_command("audit_verify")
    assert "events: 3" in capsys.readouterr().out


# --- DB user with INSERT only ------------------------------------------------------


@pytest.fixture
def insert_only_role():
    with connection.cursor() as cursor:
        cursor.execute("DROP ROLE IF EXISTS audit_inserter")
        cursor.execute("CREATE ROLE audit_inserter NOLOGIN")
        cursor.execute("GRANT INSERT ON audit_auditevent TO audit_inserter")
    yield "audit_inserter"
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
        cursor.execute("REVOKE ALL ON audit_auditevent FROM audit_inserter")
        cursor.execute("DROP ROLE audit_inserter")


@needs_postgres
def test_insert_only_user_cannot_edit_delete_or_truncate(sealed_log, insert_only_role):
    for statement in (
        "UPDATE audit_auditevent SET actor_label = 'mallory'",
        "DELETE FROM audit_auditevent WHERE seq = 8",
        "TRUNCATE audit_auditevent",
    ):
        with (
            pytest.raises(DatabaseError, match="permission denied"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(f"SET LOCAL ROLE {insert_only_role}")
            cursor.execute(statement)
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
    assert AuditEvent.objects.count() == 8


@needs_postgres
def test_insert_only_user_cannot_forge_an_append(sealed_log, insert_only_role, capsys):
    head = AuditEvent.objects.get(seq=8)
    row = forged_row(9, head.hash, key=b"guess", key_id=head.key_id)
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {insert_only_role}")
    insert(row)
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
    assert AuditEvent.objects.count() == 9
    verify_fails(capsys, "seq 9: content does not match its hash")


@needs_postgres
def test_checkpoints_are_append_only_on_postgres(sealed_log):
    with pytest.raises(DatabaseError, match="audit_auditcheckpoint is append-only"), transaction.atomic():
        AuditCheckpoint.objects.update(seq=1)


def test_the_periodic_checkpoint_checks_the_rows_since_the_last_intact_one(capsys):
    write_events(3)
    first = checkpoint_take()
    assert first is not None and first.chain_ok
    write_events(2, start=3)
    attack("UPDATE audit_auditevent SET actor_label = 'mallory' WHERE seq = 5")
    second = checkpoint_take()
    assert second is not None and second.seq == 5
    assert not second.chain_ok  # the edit after the first checkpoint is seen
    verify_fails(capsys, "seq 5: content does not match its hash")
