"""django-admin for accounts: what it may still change is what leaves an audit trail.

Roles and rights are changed only on the /access/ pages, whose services write the
audit events and refresh open sockets. Django's default User and Group admins
would let anyone with admin access grant roles, model permissions, staff or
superuser status with no audit event, so here:

- Group is not registered (a role's membership and its permissions are rights);
- on User, groups, user_permissions, is_staff and is_superuser are read-only
  (staff and superusers are made with `createsuperuser`, on the server);
- users cannot be deleted (that would revoke every right silently): deactivate
  instead, which goes through accounts.services.user_set_active and is audited;
- creating a user (who starts with no rights) and resetting a password stay here.

Per-agent object permissions (guardian's and agents' permission models) are not
registered either; tests/accounts/test_admin.py checks what is.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import AbstractBaseUser, Group
from django.forms import ModelForm
from django.http import HttpRequest

from accounts import services

User = get_user_model()

admin.site.unregister(Group)
admin.site.unregister(User)

RIGHTS_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


@admin.register(User)
class AuditedUserAdmin(UserAdmin):
    readonly_fields = (*RIGHTS_FIELDS, "last_login", "date_joined")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        if not (change and "is_active" in form.changed_data):
            super().save_model(request, obj, form, change)
            return
        # The other fields save as usual; the active flag changes through the service,
        # which locks the row, records the event and (on commit) closes open sockets.
        wanted = obj.is_active
        obj.is_active = not wanted
        super().save_model(request, obj, form, change)
        # Every admin view runs for a logged-in staff user (admin_view refuses anyone else).
        actor = cast(AbstractBaseUser, request.user)
        services.user_set_active(user=obj, actor=actor, active=wanted)
