"""Small rows for tests that need one agent, one run or one action, not the whole demo (factory_boy).

These build rows directly, as fixtures: a behaviour under test still goes through its service.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import factory
from django.contrib.auth import get_user_model
from factory.django import DjangoModelFactory

from agents import upstream
from agents.models import Agent, AgentTool, Run
from approvals.models import ActionRequest, ActionStatus, Execution


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("test-password-1")


class AgentFactory(DjangoModelFactory):
    class Meta:
        model = Agent
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"agent-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())


class RunFactory(DjangoModelFactory):
    class Meta:
        model = Run

    agent = factory.SubFactory(AgentFactory)
    input = factory.LazyFunction(dict)


class ActionFactory(DjangoModelFactory):
    class Meta:
        model = ActionRequest

    run = factory.SubFactory(RunFactory)
    agent = factory.SelfAttribute("run.agent")
    tool = "issue_refund"
    arguments = factory.LazyFunction(lambda: {"order_id": "ORD-1001", "amount": 40})
    proposed_arguments = factory.SelfAttribute("arguments")
    confidence = 0.9
    impact = "financial"
    magnitude = Decimal(40)
    route = "review"
    route_reason = "a factory's action"
    status = ActionStatus.PENDING


class ExecutionFactory(DjangoModelFactory):
    class Meta:
        model = Execution

    action = factory.SubFactory(ActionFactory, status=ActionStatus.APPROVED)
    idempotency_key = factory.LazyAttribute(lambda o: f"action-{o.action.pk}")


INVOICE_SCHEMA = {
    "type": "object",
    "properties": {"customer": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["customer", "amount"],
}


def enabled_caller_tool(agent: Agent, *, admin: Any, mode: str = "review", **declared: Any) -> str:
    """`send_invoice`, a tool the agent executes itself: declared and approved by `admin`, enabled for `agent`
    directly, as the configuration's four eyes would (tests/agents/test_configuration.py covers those)."""
    tool = upstream.caller_tool_create(
        actor=admin,
        **{
            "slug": "send_invoice",
            "description": "Send an invoice.",
            "input_schema": INVOICE_SCHEMA,
            "impact": "financial",
            **declared,
        },
    )
    upstream.upstream_tool_approve(tool=tool, actor=admin, definition_hash_seen=tool.definition_hash)
    AgentTool.objects.create(agent=agent, tool=tool.name, mode=mode)
    return tool.name
