"""The tamper suite: an attacker with superuser rights disables the trigger and rewrites the log.

Each attack must make `audit_verify` exit non-zero. On PostgreSQL the trigger is
disabled with ALTER TABLE ... DISABLE TRIGGER, as an attacker with superuser
rights would; elsewhere there is no trigger to disable.
"""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from audit.models import AuditCheckpoint, AuditEvent
from audit.services import Actor, checkpoint_take, record
from tests.conftest import needs_postgres

pytestmark = pytest.mark.django_db


def write_events(n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        with transaction.atomic():
            record(actor=Actor.system("test"), event="test.event", after={"i": i})


def attack(*statements: str) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
        for sql in statements:
            cursor.execute(sql)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")


def verify_fails(capsys, expected: str) -> None:
    with pytest.raises(CommandError, match="BROKEN"):
        call_command("audit_verify")
    assert expected in capsys.readouterr().err


@pytest.fixture
def sealed_log():
    write_events(6)
    checkpoint_take()
    write_events(2, start=6)  # written after the checkpoint
    call_command("audit_verify")  # intact to begin with


def test_intact_log_with_checkpoints_verifies(sealed_log, capsys):
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert "events: 8" in out
    assert "checkpoints checked: 1" in out
    assert "chain: OK" in out


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


def test_cutting_off_the_tail_is_caught_by_the_checkpoint(sealed_log, capsys):
    # Rows 5-8 removed: what is left is a perfectly consistent, shorter chain.
    attack("DELETE FROM audit_auditevent WHERE seq >= 5")
    verify_fails(capsys, "names seq 6, which is gone: the log was cut off")


def test_truncating_everything_is_caught(sealed_log, capsys):
    attack("DELETE FROM audit_auditevent" if connection.vendor != "postgresql" else "TRUNCATE audit_auditevent")
    verify_fails(capsys, "which is gone")


def test_rewriting_the_whole_chain_is_caught_by_the_checkpoint(sealed_log, capsys):
    # The attacker recomputes every hash after editing row 2: the chain is consistent again,
    # but row 6's hash no longer matches the sealed one.
    from audit.chain import GENESIS_HASH, canonical_row, chain_hash

    attack("UPDATE audit_auditevent SET after = '{\"i\": 99}' WHERE seq = 2")
    prev = GENESIS_HASH
    rows = list(AuditEvent.objects.order_by("seq"))
    statements = []
    for row in rows:
        fields = {
            f: getattr(row, f)
            for f in (
                "seq",
                "created_at",
                "actor_type",
                "actor_id",
                "actor_label",
                "event",
                "target_type",
                "target_id",
                "agent_id",
                "before",
                "after",
                "request_id",
            )
        }
        digest = chain_hash(prev, canonical_row(**fields, prev_hash=prev))
        statements.append(f"UPDATE audit_auditevent SET prev_hash = '{prev}', hash = '{digest}' WHERE seq = {row.seq}")
        prev = digest
    attack(*statements)
    verify_fails(capsys, "at seq 6 has a different hash: the log was rewritten")


def test_a_forged_checkpoint_is_reported(sealed_log, capsys):
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditcheckpoint DISABLE TRIGGER USER")
        cursor.execute("UPDATE audit_auditcheckpoint SET seq = 2")
    verify_fails(capsys, "invalid seal")


def test_checkpoint_file_outside_the_database_catches_deleted_checkpoints(tmp_path, settings, capsys):
    settings.AUDIT_CHECKPOINT_FILE = str(tmp_path / "checkpoints.jsonl")
    write_events(5)
    checkpoint_take()
    line = json.loads((tmp_path / "checkpoints.jsonl").read_text())
    assert line["seq"] == 5
    # The attacker removes the tail and the checkpoint rows, but cannot reach the file.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditcheckpoint DISABLE TRIGGER USER")
        cursor.execute("DELETE FROM audit_auditcheckpoint")
    attack("DELETE FROM audit_auditevent WHERE seq >= 4")
    verify_fails(capsys, "checkpoint file line 1 names seq 5, which is gone")


@needs_postgres
def test_checkpoints_are_append_only_on_postgres(sealed_log):
    with pytest.raises(DatabaseError, match="audit_auditcheckpoint is append-only"), transaction.atomic():
        AuditCheckpoint.objects.update(seq=1)
