"""What each role may do globally (per-agent rights are object permissions on agents).

Roles are auth groups. Global rights are model permissions given to the group:
Admin manages roles and permissions and reads the audit trail; Auditor reads
the audit trail; Reviewer and Operator have no global rights, only per-agent ones.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

from accounts.models import Role

ROLE_PERMISSIONS: dict[Role, list[str]] = {
    Role.ADMIN: ["audit.view_auditevent", "accounts.manage_access", "agents.add_agent", "agents.add_toolsource"],
    Role.AUDITOR: ["audit.view_auditevent"],
    Role.REVIEWER: [],
    Role.OPERATOR: [],
}


def ensure_roles() -> dict[Role, Group]:
    """Create the role groups and give them exactly their global permissions. Idempotent."""
    groups: dict[Role, Group] = {}
    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role.value)
        wanted = []
        for dotted in perms:
            app_label, codename = dotted.split(".")
            wanted.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(wanted)
        groups[role] = group
    return groups
