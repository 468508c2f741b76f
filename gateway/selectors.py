"""The gateway's reads: who is calling which agent, what it may call, and where a call stands."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.utils import timezone

from accounts.auth import user_for_token
from agents.models import Agent, AgentTool
from agents.selectors import agent_perms_on
from agents.tools import Tool, agent_tools, get_tool
from approvals.models import ActionRequest
from gateway.models import GatewayCall, GatewayTask


@dataclass(frozen=True)
class Caller:
    user: User
    agent: Agent


UNAUTHORIZED = "unauthorized"  # the token is unknown, revoked, or its user inactive (401)
NOT_FOUND = "not_found"  # no such agent, or not one the token may operate (404: the same answer, no hint)


def caller_for(*, token: str, slug: str) -> Caller | str:
    """The holder of `token` driving agent `slug` (the operate right), or why not."""
    user = user_for_token(token)
    if user is None:
        return UNAUTHORIZED
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None or "operate_agent" not in agent_perms_on(user, agent):
        return NOT_FOUND
    return Caller(user=user, agent=agent)


def offered_tools(agent: Agent) -> list[tuple[Tool, AgentTool]]:
    """The tools this agent's MCP endpoint offers: enabled for it, known to the registry, executed here."""
    # The registry's listing reads every approved upstream tool in one query; only a name it does not
    # hold (a suspended tool) is looked up on its own.
    known = {tool.name: tool for tool in agent_tools()}
    offered = []
    for agent_tool in AgentTool.objects.filter(agent=agent, enabled=True).order_by("tool"):
        tool = known.get(agent_tool.tool) or get_tool(agent_tool.tool)
        # A caller's tool is executed by the agent that asks, never through this endpoint.
        if tool is not None and not tool.internal and not tool.caller_executes:
            offered.append((tool, agent_tool))
    return offered


def call_state(call_id: int) -> GatewayCall:
    """A call with its action and the decision behind it (one query)."""
    return GatewayCall.objects.select_related("action__decision__reviewer").get(pk=call_id)


def action_of(call: GatewayCall) -> ActionRequest:
    assert call.action is not None  # set in the transaction that opened the call
    return call.action


def _live_tasks(agent: Agent, owner: User) -> QuerySet[GatewayTask]:
    # A task is its requestor's, at its agent's endpoint; past its ttl it is gone for the client (the
    # MCP spec lets a receiver drop it), its call and action kept.
    return GatewayTask.objects.select_related("call__action__decision__reviewer").filter(
        owner=owner, call__agent=agent, expires_at__gt=timezone.now()
    )


def task_state(task_id: int) -> GatewayTask:
    """A task just opened, with its call, action and decision (one query), whatever its ttl."""
    return GatewayTask.objects.select_related("call__action__decision__reviewer").get(pk=task_id)


def task_for(*, agent: Agent, owner: User, task_id: str) -> GatewayTask | None:
    """The requestor's live task `task_id` at this agent, with its call, action and decision (one query)."""
    return _live_tasks(agent, owner).filter(task_id=task_id).first()


def tasks_page(*, agent: Agent, owner: User, before: int | None, limit: int) -> list[GatewayTask]:
    """The requestor's live tasks at this agent, newest first, by keyset on the id (one query per page)."""
    tasks = _live_tasks(agent, owner)
    if before is not None:
        tasks = tasks.filter(pk__lt=before)
    return list(tasks.order_by("-pk")[:limit])
