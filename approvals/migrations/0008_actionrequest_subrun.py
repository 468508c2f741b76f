import django.db.models.deletion
from django.db import migrations, models


def copy_links(apps, schema_editor):
    """The sub-run link now points down: from the delegating action to its run."""
    Run = apps.get_model("agents", "Run")
    ActionRequest = apps.get_model("approvals", "ActionRequest")
    for run_id, action_id in Run.objects.filter(parent_action__isnull=False).values_list("pk", "parent_action_id"):
        ActionRequest.objects.filter(pk=action_id).update(subrun_id=run_id)


def copy_links_back(apps, schema_editor):
    Run = apps.get_model("agents", "Run")
    ActionRequest = apps.get_model("approvals", "ActionRequest")
    for action_id, run_id in ActionRequest.objects.filter(subrun__isnull=False).values_list("pk", "subrun_id"):
        Run.objects.filter(pk=run_id).update(parent_action_id=action_id)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0008_run_step_token"),
        ("approvals", "0007_claimed_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="actionrequest",
            name="subrun",
            field=models.OneToOneField(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="delegated_by",
                to="agents.run",
            ),
        ),
        migrations.RunPython(copy_links, copy_links_back),
    ]
