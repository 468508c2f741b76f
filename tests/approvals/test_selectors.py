"""Who may see one action: the one-row check agrees with the list's filter (and the rights on one agent with
guardian's), whatever the rights. So do every right at once, and the groups a live socket joins."""

from __future__ import annotations

from django.contrib.auth.models import Group
from guardian.shortcuts import assign_perm, get_perms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase

from agents.selectors import agent_perms_on, agent_rights, agents_with_perm
from approvals.models import ActionRequest
from approvals.pushes import audience
from approvals.selectors import TIER_RIGHTS, action_reviewable_by, actions_reviewable_by
from live.groups import agent_group, operator_group, user_group
from tests.factories import ActionFactory, AgentFactory, UserFactory

RIGHTS = ("review_agent", "review_escalated_agent", "configure_agent", "operate_agent")
rights = st.sets(st.sampled_from(RIGHTS))

# A person: mostly active, now and then a superuser; rights held directly and through a group on
# each of two agents; a member of the tools' reviewer group or not.
people = st.fixed_dictionaries(
    {
        "active": st.sampled_from([True, True, True, False]),
        "superuser": st.sampled_from([False, False, False, True]),
        "in_reviewer_group": st.booleans(),
        "direct": st.tuples(rights, rights),
        "grouped": st.tuples(rights, rights),
    }
)


class TestOneActionAgreesWithTheList(TestCase):
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(person=people)
    def test_it_finds_exactly_the_actions_the_list_shows(self, person):
        agents = [AgentFactory(), AgentFactory()]
        seniors = Group.objects.create(name=f"seniors-{agents[0].pk}")
        team = Group.objects.create(name=f"team-{agents[0].pk}")
        user = UserFactory(is_active=person["active"], is_superuser=person["superuser"])
        user.groups.add(team)
        if person["in_reviewer_group"]:
            user.groups.add(seniors)
        for agent, direct, grouped in zip(agents, person["direct"], person["grouped"], strict=True):
            for right in direct:
                assign_perm(f"agents.{right}", user, agent)
            for right in grouped:
                assign_perm(f"agents.{right}", team, agent)
        # Every shape of action on both agents: each tier (3 is none), limited to the reviewer group or not.
        made = []
        for agent in agents:
            for tier in (0, 1, 2, 3):
                for limited in (False, True):
                    action = ActionFactory(run__agent=agent, tier=tier)
                    if limited:
                        ActionRequest.objects.filter(pk=action.pk).update(reviewer_group=seniors)
                    made.append(action.pk)

        listed = set(actions_reviewable_by(user).filter(pk__in=made).values_list("pk", flat=True))
        found = {pk for pk in made if action_reviewable_by(user, pk) is not None}
        assert found == listed, person
        # The one-query rights of one agent are guardian's own answer.
        for agent in agents:
            assert agent_perms_on(user, agent) == frozenset(get_perms(user, agent)), person

        # Every right at once (one query) holds on exactly the agents guardian's query finds for it.
        guardian = {right: set(agents_with_perm(user, right).values_list("pk", flat=True)) for right in RIGHTS}
        held = agent_rights(user)
        assert {right: set(held.get(right, ())) for right in RIGHTS} == guardian, person
        # And a socket joins exactly the groups those rights open.
        member_of = list(user.groups.values_list("pk", flat=True))
        expected = {user_group(user.pk)}
        expected |= {agent_group(a, tier) for tier, right in TIER_RIGHTS.items() for a in guardian[right]}
        expected |= {agent_group(a, 1, g) for a in guardian["review_agent"] for g in member_of}
        expected |= {operator_group(a) for a in guardian["operate_agent"]}
        assert audience(user.pk) == expected, person

    def test_a_missing_action_is_not_found(self):
        user = UserFactory(is_superuser=True)
        assert action_reviewable_by(user, 10**9) is None
