"""Reads over agents and runs, with the permission filter built in."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet
from guardian.core import ObjectPermissionChecker
from guardian.shortcuts import get_objects_for_user

from agents.models import (
    Agent,
    AgentGroupObjectPermission,
    AgentUserObjectPermission,
    BreakerState,
    CircuitBreaker,
    Run,
    Step,
)
from core.prepared import PreparedRead


def agents_with_perm(user: AbstractBaseUser | AnonymousUser, perm: str) -> QuerySet[Agent]:
    """Agents on which `user` holds `perm` (directly or through a group): one SQL query."""
    if not user.is_authenticated or not user.is_active:
        return Agent.objects.none()
    return get_objects_for_user(user, f"agents.{perm}", klass=Agent, accept_global_perms=False)


def agent_perms_on(user: AbstractBaseUser | AnonymousUser, agent: Agent) -> frozenset[str]:
    """The rights (codenames) `user` holds on one agent, directly or through a group: the rule of
    `agents_with_perm` for a single agent, without planning its subqueries (one small query).
    """
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    if getattr(user, "is_superuser", False):  # as guardian: a superuser holds every right on every agent
        return frozenset(ObjectPermissionChecker(user).get_perms(agent))
    return frozenset(codename for (codename,) in _codenames_on_agent(user_id=user.pk, agent_id=agent.pk))


@PreparedRead
def _codenames_on_agent(user_id: int, agent_id: int) -> QuerySet[Any, tuple[str]]:
    """The codenames granted to the user or its groups on one agent. Every API call and page on an action reads
    it: prepared (core.prepared)."""
    return _granted(user_id, content_object_id=agent_id)


def _granted(user_id: Any, **on: Any) -> QuerySet[Any, tuple[str]]:
    direct = AgentUserObjectPermission.objects.filter(user_id=user_id, **on).values_list("permission__codename")
    grouped = AgentGroupObjectPermission.objects.filter(group__user=user_id, **on).values_list("permission__codename")
    return direct.union(grouped)


def agent_rights(user: AbstractBaseUser | AnonymousUser) -> dict[str, frozenset[int]]:
    """Every per-agent right `user` holds, with the agents it holds it on ({codename: agent ids}): the rule of
    `agents_with_perm` for every right at once, in one prepared query.

    Read once, then kept on the user object for the rest of the request, as Django keeps its permission cache
    (a page asks several times: the inbox's rows, its counts, the header). Granting or revoking through
    `agents.services` forgets it on the object it was given; another copy of the user reads the rights again.
    """
    if not user.is_authenticated or not user.is_active:
        return {}
    cached: dict[str, frozenset[int]] | None = getattr(user, RIGHTS_CACHE, None)
    if cached is not None:
        return cached
    if getattr(user, "is_superuser", False):  # as guardian: a superuser holds every right on every agent
        every = frozenset(Agent.objects.values_list("pk", flat=True))
        rights = {codename: every for codename, _ in Agent._meta.permissions}
    else:
        granted: dict[str, set[int]] = {}
        for codename, agent_id in _rights_granted(user_id=user.pk):
            granted.setdefault(codename, set()).add(agent_id)
        rights = {codename: frozenset(ids) for codename, ids in granted.items()}
    setattr(user, RIGHTS_CACHE, rights)
    return rights


RIGHTS_CACHE = "_agent_rights"  # the attribute of the user object that keeps them for the request


@PreparedRead
def _rights_granted(user_id: int) -> QuerySet[Any, tuple[str, int]]:
    direct = AgentUserObjectPermission.objects.filter(user_id=user_id)
    grouped = AgentGroupObjectPermission.objects.filter(group__user=user_id)
    columns = ("permission__codename", "content_object_id")
    return direct.values_list(*columns).union(grouped.values_list(*columns))


def agent_perms_held(user: AbstractBaseUser | AnonymousUser) -> frozenset[str]:
    """The per-agent rights (codenames) `user` holds on at least one agent, directly or through a group."""
    return frozenset(agent_rights(user))


def agents_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Agent]:
    """Agents the user may review, operate or configure."""
    if not user.is_authenticated or not user.is_active:
        return Agent.objects.none()
    return get_objects_for_user(
        user,
        ["agents.review_agent", "agents.operate_agent", "agents.configure_agent"],
        klass=Agent,
        any_perm=True,
        accept_global_perms=False,
    )


def runs_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Run]:
    return Run.objects.filter(agent__in=agents_visible_to(user)).select_related("agent", "created_by")


def run_steps(run: Run) -> QuerySet[Step]:
    return Step.objects.filter(run=run).order_by("seq")


def runs_operable_by(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Run]:
    return Run.objects.filter(agent__in=agents_with_perm(user, "operate_agent")).select_related("agent")


def breakers_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[CircuitBreaker]:
    return (
        CircuitBreaker.objects.filter(agent__in=agents_visible_to(user))
        .exclude(state=BreakerState.CLOSED, consecutive_failures=0)
        .select_related("agent")
        .order_by("agent__slug", "tool")
    )


def breakers_operable_by(user: AbstractBaseUser | AnonymousUser) -> QuerySet[CircuitBreaker]:
    return CircuitBreaker.objects.filter(agent__in=agents_with_perm(user, "operate_agent")).select_related("agent")


def users_with_agent_perm(agent: Agent, perm: str) -> QuerySet[Any]:
    """Active users holding `perm` on `agent`, directly or through a group (superusers excluded)."""

    return (
        get_user_model()
        .objects.filter(
            Q(agentuserobjectpermission__content_object=agent, agentuserobjectpermission__permission__codename=perm)
            | Q(
                groups__agentgroupobjectpermission__content_object=agent,
                groups__agentgroupobjectpermission__permission__codename=perm,
            ),
            is_active=True,
        )
        .distinct()
    )


def run_page(run: Run) -> dict[str, Any]:
    """What the live part of a run page shows: the same for everyone who may see the run."""
    return {
        "run": run,
        "steps": run_steps(run),
        "actions": run.actions.select_related("decision__reviewer").order_by("id"),
        "subruns": Run.objects.filter(delegated_by__run=run).select_related("agent").order_by("id"),
        # The coordinator's action that started this run, if it is a sub-run.
        "delegated_by": Run.objects.filter(pk=run.pk).values_list("delegated_by", flat=True).first(),
    }
