"""Every permission path on the /access/ pages writes its audit event (real POSTs, the admin2 persona)."""

from __future__ import annotations

import pytest
from django.test import Client

from agents.models import Agent, AgentGroupObjectPermission
from audit.models import AuditEvent
from tests.conftest import user

pytestmark = pytest.mark.django_db


def browser(role: str) -> Client:
    client = Client()
    client.force_login(user(role))
    return client


def last(event: str) -> AuditEvent:
    return AuditEvent.objects.filter(event=event).latest("seq")


def test_assigning_a_role_is_audited(demo):
    response = browser("admin2").post("/access/roles", {"username": "reviewer2", "role": "Auditor", "action": "assign"})
    assert response.status_code == 302
    assert user("reviewer2").groups.filter(name="Auditor").exists()
    event = last("role.granted")
    assert (event.actor_label, event.target_id, event.after) == (
        "admin2",
        str(user("reviewer2").pk),
        {"role": "Auditor"},
    )


def test_removing_a_role_is_audited(demo):
    response = browser("admin2").post(
        "/access/roles", {"username": "reviewer2", "role": "Reviewer", "action": "remove"}
    )
    assert response.status_code == 302
    assert not user("reviewer2").groups.filter(name="Reviewer").exists()
    event = last("role.revoked")
    assert (event.actor_label, event.target_id, event.before) == (
        "admin2",
        str(user("reviewer2").pk),
        {"role": "Reviewer"},
    )


def test_granting_to_a_user_is_audited(demo):
    post = {"agent": "crm-cleanup", "perm": "review_agent", "holder": "reviewer2", "action": "grant"}
    assert browser("admin2").post("/access/grants", post).status_code == 302
    crm = Agent.objects.get(slug="crm-cleanup")
    assert user("reviewer2").has_perm("agents.review_agent", crm)
    event = last("permission.granted")
    assert (event.actor_label, event.agent_id, event.after) == (
        "admin2",
        crm.pk,
        {"perm": "review_agent", "user": "reviewer2"},
    )


def test_revoking_from_a_user_is_audited(demo):
    post = {"agent": "refund-triage", "perm": "review_agent", "holder": "reviewer2", "action": "revoke"}
    assert browser("admin2").post("/access/grants", post).status_code == 302
    refund = Agent.objects.get(slug="refund-triage")
    assert not user("reviewer2").has_perm("agents.review_agent", refund)
    event = last("permission.revoked")
    assert (event.actor_label, event.agent_id, event.before) == (
        "admin2",
        refund.pk,
        {"perm": "review_agent", "user": "reviewer2"},
    )


def test_granting_to_and_revoking_from_a_role_group_are_audited(demo):
    client = browser("admin2")
    post = {"agent": "crm-cleanup", "perm": "operate_agent", "holder": "group:Auditor"}
    assert client.post("/access/grants", {**post, "action": "grant"}).status_code == 302
    assert user("auditor").has_perm("agents.operate_agent", Agent.objects.get(slug="crm-cleanup"))
    assert last("permission.granted").after == {"perm": "operate_agent", "group": "Auditor"}
    assert client.post("/access/grants", {**post, "action": "revoke"}).status_code == 302
    assert not AgentGroupObjectPermission.objects.filter(group__name="Auditor").exists()
    assert last("permission.revoked").before == {"perm": "operate_agent", "group": "Auditor"}


def test_a_change_that_changes_nothing_records_nothing(demo):
    before = AuditEvent.objects.filter(event__startswith="role.").count()
    browser("admin2").post("/access/roles", {"username": "reviewer2", "role": "Reviewer", "action": "assign"})
    assert AuditEvent.objects.filter(event__startswith="role.").count() == before
