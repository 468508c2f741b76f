from django.db import migrations, models


class Migration(migrations.Migration):
    """Runs are counted by outcome. The old `runs_succeeded` counted every run that finished
    normally, whatever it did; those counts become `runs_done` (the past cannot be told apart)."""

    dependencies = [
        ("ops", "0001_aggregates_and_alerts"),
    ]

    operations = [
        migrations.RenameField(model_name="agenthourstat", old_name="runs_succeeded", new_name="runs_done"),
        migrations.AddField(
            model_name="agenthourstat", name="runs_done_with_edits", field=models.PositiveIntegerField(default=0)
        ),
        migrations.AddField(
            model_name="agenthourstat", name="runs_refused", field=models.PositiveIntegerField(default=0)
        ),
        migrations.AddField(
            model_name="agenthourstat", name="runs_rejected", field=models.PositiveIntegerField(default=0)
        ),
        migrations.AddField(
            model_name="agenthourstat", name="runs_denied", field=models.PositiveIntegerField(default=0)
        ),
    ]
