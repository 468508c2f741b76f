"""django-admin cannot change rights without the audit trail (real POSTs through the test client)."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client
from guardian.models import GroupObjectPermission, UserObjectPermission

from agents.models import AgentGroupObjectPermission, AgentUserObjectPermission
from audit.models import AuditEvent
from tests.conftest import PASSWORD, user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(demo) -> Client:
    client = Client()
    client.force_login(user("admin"))  # staff and superuser in the demo
    return client


def change_url(username: str) -> str:
    return f"/django-admin/auth/user/{user(username).pk}/change/"


def change_form(username: str, **changes: object) -> dict[str, object]:
    subject = user(username)
    data: dict[str, object] = {
        "username": subject.username,
        "first_name": subject.first_name,
        "last_name": subject.last_name,
        "email": subject.email,
        # Read-only here; sent so that the same POST would be valid for Django's default UserAdmin.
        "date_joined_0": subject.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": subject.date_joined.strftime("%H:%M:%S"),
        "_save": "Save",
    }
    if subject.is_active:
        data["is_active"] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_nothing_that_carries_rights_is_registered():
    for model in (
        Group,
        Permission,
        UserObjectPermission,
        GroupObjectPermission,
        AgentUserObjectPermission,
        AgentGroupObjectPermission,
    ):
        assert not admin.site.is_registered(model), model


def test_the_group_admin_is_gone(admin_browser):
    assert admin_browser.get("/django-admin/auth/group/").status_code == 404
    assert admin_browser.get(change_url("reviewer2")).status_code == 200


def test_the_change_form_cannot_grant_roles_permissions_staff_or_superuser(admin_browser):
    admin_group = Group.objects.get(name="Admin")
    perm = Permission.objects.get(codename="manage_access")
    post = change_form(
        "reviewer2",
        first_name="Rita",
        groups=[str(admin_group.pk)],
        user_permissions=[str(perm.pk)],
        is_superuser="on",
        is_staff="on",
    )
    response = admin_browser.post(change_url("reviewer2"), post)
    assert response.status_code == 302, response.content.decode()[:2000]
    subject = user("reviewer2")
    assert subject.first_name == "Rita"  # the save happened; only the rights were ignored
    assert list(subject.groups.values_list("name", flat=True)) == ["Reviewer"]
    assert not subject.user_permissions.exists()
    assert (subject.is_superuser, subject.is_staff) == (False, False)
    assert not subject.has_perm("accounts.manage_access")


def test_the_change_form_cannot_strip_an_admins_rights_either(admin_browser):
    response = admin_browser.post(change_url("admin"), change_form("admin", is_superuser=None, is_staff=None))
    assert response.status_code == 302
    subject = user("admin")
    assert (subject.is_superuser, subject.is_staff) == (True, True)
    assert subject.groups.filter(name="Admin").exists()


def test_deactivation_through_the_admin_is_audited(admin_browser):
    response = admin_browser.post(change_url("reviewer2"), change_form("reviewer2", is_active=None))
    assert response.status_code == 302
    assert user("reviewer2").is_active is False
    event = AuditEvent.objects.filter(event="access.user_deactivated").get()
    assert (event.actor_label, event.target_id) == ("admin", str(user("reviewer2").pk))
    assert (event.before, event.after) == ({"is_active": True}, {"is_active": False})
    # A deactivated user cannot log in.
    assert Client().post("/login/", {"username": "reviewer2", "password": PASSWORD}).status_code == 200


def test_reactivation_through_the_admin_is_audited(admin_browser):
    get_user_model().objects.filter(username="reviewer2").update(is_active=False)
    response = admin_browser.post(change_url("reviewer2"), change_form("reviewer2", is_active="on"))
    assert response.status_code == 302
    assert user("reviewer2").is_active is True
    event = AuditEvent.objects.filter(event="access.user_activated").get()
    assert event.actor_label == "admin"


def test_saving_without_touching_the_active_flag_records_nothing(admin_browser):
    response = admin_browser.post(change_url("reviewer2"), change_form("reviewer2", first_name="Rita"))
    assert response.status_code == 302
    assert not AuditEvent.objects.filter(event__startswith="access.user_").exists()


def test_users_cannot_be_deleted_only_deactivated(admin_browser):
    url = f"/django-admin/auth/user/{user('reviewer2').pk}/delete/"
    assert admin_browser.post(url, {"post": "yes"}).status_code == 403
    assert get_user_model().objects.filter(username="reviewer2").exists()


def test_users_can_still_be_created_and_their_password_reset(admin_browser):
    created = admin_browser.post(
        "/django-admin/auth/user/add/",
        {"username": "newcomer", "usable_password": "true", "password1": "A-long-pass-9", "password2": "A-long-pass-9"},
    )
    assert created.status_code == 302, created.content.decode()[:2000]
    newcomer = get_user_model().objects.get(username="newcomer")
    assert not newcomer.groups.exists() and not newcomer.is_staff
    reset = admin_browser.post(
        f"/django-admin/auth/user/{newcomer.pk}/password/",
        {"usable_password": "true", "password1": "Another-pass-8", "password2": "Another-pass-8"},
    )
    assert reset.status_code == 302, reset.content.decode()[:2000]
    newcomer.refresh_from_db()
    assert newcomer.check_password("Another-pass-8")
