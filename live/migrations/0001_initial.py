"""The push outbox, and (on PostgreSQL) a trigger that wakes the relay when a change that wrote to it commits."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

# NOTIFY is transactional: the relay hears it only once the inserting transaction commits,
# and a transaction that inserts many rows notifies once (one statement-level trigger).
NOTIFY = """
CREATE FUNCTION live_push_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('live_push', '');
    RETURN NULL;
END $$;
CREATE TRIGGER live_push_notify AFTER INSERT ON live_push FOR EACH STATEMENT EXECUTE FUNCTION live_push_notify();
"""
DROP = "DROP TRIGGER IF EXISTS live_push_notify ON live_push; DROP FUNCTION IF EXISTS live_push_notify();"


def add_trigger(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(NOTIFY)


def drop_trigger(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Push",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("event", models.CharField(max_length=64)),
                ("ids", models.JSONField(default=dict)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.RunPython(add_trigger, drop_trigger),
    ]
