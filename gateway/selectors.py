"""The gateway's reads: who is calling which agent, what it may call, and where a call stands."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from accounts.auth import user_for_token
from agents.models import Agent, AgentTool
from agents.selectors import agent_perms_on
from agents.tools import Tool, agent_tools, get_tool
from approvals.models import ActionRequest
from gateway.models import GatewayCall


@dataclass(frozen=True)
class Caller:
    user: AbstractBaseUser
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


def _live_tasks(agent: Agent) -> QuerySet[GatewayCall]:
    # A task past its ttl is gone for the client (the MCP spec lets a receiver drop it), its call kept.
    return GatewayCall.objects.select_related("action__decision__reviewer").filter(
        agent=agent, task_id__isnull=False, task_expires_at__gt=timezone.now()
    )


def task_for(*, agent: Agent, task_id: str) -> GatewayCall | None:
    """The agent's live call carrying MCP task `task_id`, with its action and decision (one query)."""
    return _live_tasks(agent).filter(task_id=task_id).first()


def tasks_page(*, agent: Agent, before: int | None, limit: int) -> list[GatewayCall]:
    """The agent's live tasks, newest first, by keyset on the id (one query per page)."""
    calls = _live_tasks(agent)
    if before is not None:
        calls = calls.filter(pk__lt=before)
    return list(calls.order_by("-pk")[:limit])
