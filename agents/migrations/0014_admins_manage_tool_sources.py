"""Admins may add tool sources (upstream MCP servers, HTTP tools) and approve their tools."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management import create_permissions
from django.db import migrations


def grant(apps: Any, schema_editor: Any) -> None:
    # Permissions are normally created after migrate; make sure this one exists now.
    config = apps.get_app_config("agents")
    config.models_module = True
    create_permissions(config, apps=apps, verbosity=0)
    config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permission = Permission.objects.get(content_type__app_label="agents", codename="add_toolsource")
    for group in Group.objects.filter(name="Admin"):
        group.permissions.add(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0013_tool_sources"),
        ("accounts", "0003_roles"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
