from django.db import migrations


class Migration(migrations.Migration):
    # After the link was copied to ActionRequest.subrun (it points down now).
    dependencies = [
        ("agents", "0008_run_step_token"),
        ("approvals", "0008_actionrequest_subrun"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="run", name="run_one_per_parent"),
        migrations.RemoveField(model_name="run", name="parent_action"),
    ]
