from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from agents.selectors import agent_rights, agents_with_perm
from agents.services import agent_permission_grant, agent_permission_revoke
from audit.models import AuditEvent
from core.errors import InvalidInput
from tests.conftest import user

pytestmark = pytest.mark.django_db


def test_demo_permissions(demo):
    def slugs(name, perm):
        return sorted(agents_with_perm(user(name), perm).values_list("slug", flat=True))

    assert slugs("reviewer", "review_agent") == ["crm-cleanup", "refund-triage", "support-coordinator"]
    assert slugs("reviewer2", "review_agent") == ["refund-triage"]
    assert slugs("operator", "review_agent") == []
    assert slugs("operator", "operate_agent") == ["crm-cleanup", "refund-triage", "support-coordinator"]
    assert slugs("auditor", "review_agent") == []
    assert [g.name for g in user("auditor").groups.all()] == ["Auditor"]


def test_grant_and_revoke_are_audited(crm_agent, demo_user):
    admin = demo_user("admin")
    newbie = get_user_model().objects.create_user(username="newbie")
    agent = crm_agent
    agent_permission_grant(agent=agent, perm="review_agent", to=newbie, actor=admin)
    assert list(agents_with_perm(newbie, "review_agent")) == [agent]
    agent_permission_revoke(agent=agent, perm="review_agent", to=newbie, actor=admin)
    assert list(agents_with_perm(newbie, "review_agent")) == []
    granted, revoked = AuditEvent.objects.filter(event__startswith="permission.", actor_label="admin").order_by("seq")
    assert granted.event == "permission.granted"
    assert granted.after == {"perm": "review_agent", "user": "newbie"}
    assert revoked.event == "permission.revoked"
    assert revoked.before == {"perm": "review_agent", "user": "newbie"}


def test_unknown_permission_is_refused(crm_agent, demo_user):
    reviewer = demo_user("reviewer")
    with pytest.raises(InvalidInput):
        agent_permission_grant(agent=crm_agent, perm="own_agent", to=reviewer, actor=None)


def test_inactive_user_sees_nothing(refund_agent, demo_user):
    # The reviewer reviews refund-triage: it is being inactive that hides it.
    reviewer = demo_user("reviewer")
    reviewer.is_active = False
    reviewer.save()
    assert list(agents_with_perm(reviewer, "review_agent")) == []


def test_granting_what_is_held_records_nothing(crm_agent, demo_user):
    agent = crm_agent
    reviewer, reviewer2 = demo_user("reviewer"), demo_user("reviewer2")
    before = AuditEvent.objects.filter(event__startswith="permission.").count()
    assert agent_permission_grant(agent=agent, perm="review_agent", to=reviewer, actor=None) is False
    assert agent_permission_revoke(agent=agent, perm="review_agent", to=reviewer2, actor=None) is False
    assert AuditEvent.objects.filter(event__startswith="permission.").count() == before


def test_rights_kept_for_a_request_follow_a_grant_and_a_revoke_on_the_same_object(crm_agent, demo_user):
    newbie = get_user_model().objects.create_user(username="newbie")
    assert agent_rights(newbie) == {}  # read, and kept on the object
    agent_permission_grant(agent=crm_agent, perm="review_agent", to=newbie, actor=demo_user("admin"))
    assert agent_rights(newbie) == {"review_agent": frozenset({crm_agent.pk})}
    agent_permission_revoke(agent=crm_agent, perm="review_agent", to=newbie, actor=demo_user("admin"))
    assert agent_rights(newbie) == {}
