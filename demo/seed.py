"""The demo data set: users, roles, the two demo agents, orders and contacts. Idempotent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from accounts.models import Role
from accounts.roles import ensure_roles
from accounts.services import role_assign
from agents.configuration import agent_tool_configure
from agents.models import Agent
from agents.services import agent_create, agent_permission_grant
from audit.services import Actor
from demo.models import Contact, Order

SEED = Actor.system("seed_demo")

REFUND_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ticket", "order_id", "amount"],
    "properties": {
        "ticket": {"type": "string", "minLength": 1, "examples": ["My blender arrived broken, please refund."]},
        "order_id": {"type": "string", "minLength": 1, "examples": ["ORD-1001"]},
        "amount": {"type": "number", "examples": [60]},
    },
    "additionalProperties": False,
}

CRM_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["request", "contact_ids"],
    "properties": {
        "request": {"type": "string", "minLength": 1, "examples": ["Remove these duplicate contacts"]},
        "contact_ids": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "examples": [[11, 12, 13]]},
    },
    "additionalProperties": False,
}

COORDINATOR_INPUT_SCHEMA: dict[str, Any] = {
    **REFUND_INPUT_SCHEMA,
    "properties": {**REFUND_INPUT_SCHEMA["properties"], "urgent": {"type": "boolean", "title": "urgent"}},
}

ALL_AGENTS = ["refund-triage", "crm-cleanup", "support-coordinator"]

# Second-tier reviewers: they also see escalated actions of these agents.
SENIOR_REVIEWERS = {"reviewer": ALL_AGENTS, "admin": ALL_AGENTS}

# username -> (role, agents it may review, agents it may operate, agents it may configure)
DEMO_USERS: dict[str, tuple[Role, list[str], list[str], list[str]]] = {
    "admin": (Role.ADMIN, ALL_AGENTS, ALL_AGENTS, ALL_AGENTS),
    # A second admin, so four-eyes changes can be tried in the demo.
    "admin2": (Role.ADMIN, [], [], ALL_AGENTS),
    "reviewer": (Role.REVIEWER, ALL_AGENTS, [], []),
    "reviewer2": (Role.REVIEWER, ["refund-triage"], [], []),
    "operator": (Role.OPERATOR, [], ALL_AGENTS, []),
    "auditor": (Role.AUDITOR, [], [], []),
}


def seed_agents() -> dict[str, Agent]:
    agents: dict[str, Agent] = {}
    refund = Agent.objects.filter(slug="refund-triage").first() or agent_create(
        slug="refund-triage",
        actor=SEED,
        name="Refund triage",
        description="Reads a support ticket and proposes a refund. Small confident refunds run automatically.",
        provider="scripted",
        model="refund_triage",
        system_prompt="You triage refund requests. Propose issue_refund with the order and amount asked for.",
        input_schema=REFUND_INPUT_SCHEMA,
        review_threshold=0.8,
        max_steps=6,
    )
    agent_tool_configure(agent=refund, tool="issue_refund", actor=SEED, mode="auto", auto_max_magnitude=Decimal(100))
    agents["refund-triage"] = refund
    crm = Agent.objects.filter(slug="crm-cleanup").first() or agent_create(
        slug="crm-cleanup",
        actor=SEED,
        name="CRM clean-up",
        description="Removes contacts on request. Destructive: every deletion is reviewed.",
        provider="scripted",
        model="crm_cleanup",
        system_prompt="You clean up the CRM. Propose delete_contacts for the ids asked for.",
        input_schema=CRM_INPUT_SCHEMA,
        review_threshold=0.8,
        max_steps=6,
    )
    agent_tool_configure(agent=crm, tool="delete_contacts", actor=SEED, mode="review")
    agents["crm-cleanup"] = crm
    coordinator = Agent.objects.filter(slug="support-coordinator").first() or agent_create(
        slug="support-coordinator",
        actor=SEED,
        name="Support coordinator",
        description="Reads a support request and delegates it to a worker agent; continues when the worker finishes.",
        provider="scripted",
        model="support_coordinator",
        system_prompt="You coordinate support work. Delegate refund requests to refund-triage.",
        input_schema=COORDINATOR_INPUT_SCHEMA,
        review_threshold=0.8,
        max_steps=6,
    )
    agent_tool_configure(agent=coordinator, tool="delegate", actor=SEED, mode="auto")
    agents["support-coordinator"] = coordinator
    return agents


def seed_users(agents: dict[str, Agent], password: str) -> None:
    User = get_user_model()
    for username, (role, review, operate, configure) in DEMO_USERS.items():
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_user(username=username, password=password, email=f"{username}@example.com")
            if username == "admin":
                user.is_staff = True
                user.is_superuser = True
                user.save(update_fields=["is_staff", "is_superuser"])
        role_assign(user=user, role=role, actor=SEED)
        grants = (
            ("review_agent", review),
            ("operate_agent", operate),
            ("configure_agent", configure),
            ("review_escalated_agent", SENIOR_REVIEWERS.get(username, [])),
        )
        for perm, slugs in grants:
            for slug in slugs:
                agent_permission_grant(agent=agents[slug], perm=perm, to=user, actor=SEED)


def seed_business_data() -> None:
    with transaction.atomic():
        Order.objects.bulk_create(
            [
                Order(order_id=f"ORD-{n}", customer=f"Customer {n - 1000}", total=Decimal(40 + (n * 37) % 460))
                for n in range(1001, 1051)
            ],
            ignore_conflicts=True,
        )
        Contact.objects.bulk_create(
            [Contact(id=i, name=f"Contact {i}", email=f"contact{i}@example.com") for i in range(1, 201)],
            ignore_conflicts=True,
        )


def seed_all(*, password: str) -> None:
    ensure_roles()
    agents = seed_agents()
    seed_users(agents, password)
    seed_business_data()
