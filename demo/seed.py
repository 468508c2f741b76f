"""The demo data set: users, roles, the demo agents, orders and contacts. Idempotent, and each piece seeds alone."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
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

# slug -> (how it is created, its one tool's policy)
DEMO_AGENTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "refund-triage": (
        {
            "name": "Refund triage",
            "description": "Reads a support ticket and proposes a refund. Small confident refunds run automatically.",
            "model": "refund_triage",
            "system_prompt": "You triage refund requests. Propose issue_refund with the order and amount asked for.",
            "input_schema": REFUND_INPUT_SCHEMA,
        },
        {"tool": "issue_refund", "mode": "auto", "auto_max_magnitude": Decimal(100)},
    ),
    "crm-cleanup": (
        {
            "name": "CRM clean-up",
            "description": "Removes contacts on request. Destructive: every deletion is reviewed.",
            "model": "crm_cleanup",
            "system_prompt": "You clean up the CRM. Propose delete_contacts for the ids asked for.",
            "input_schema": CRM_INPUT_SCHEMA,
        },
        {"tool": "delete_contacts", "mode": "review"},
    ),
    "support-coordinator": (
        {
            "name": "Support coordinator",
            "description": (
                "Reads a support request and delegates it to a worker agent; continues when the worker finishes."
            ),
            "model": "support_coordinator",
            "system_prompt": "You coordinate support work. Delegate refund requests to refund-triage.",
            "input_schema": COORDINATOR_INPUT_SCHEMA,
        },
        {"tool": "delegate", "mode": "auto"},
    ),
}


ALL_AGENTS = list(DEMO_AGENTS)

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


def seed_agent(slug: str) -> Agent:
    """Create one demo agent (if missing) and set its tool's policy."""
    config, policy = DEMO_AGENTS[slug]
    agent = Agent.objects.filter(slug=slug).first() or agent_create(
        slug=slug, actor=SEED, provider="scripted", review_threshold=0.8, max_steps=6, **config
    )
    agent_tool_configure(agent=agent, actor=SEED, **policy)
    return agent


def seed_user(username: str, *, password: str) -> AbstractBaseUser:
    """Create one demo user (if missing) with its role and its rights on those of its agents that exist."""
    role, review, operate, configure = DEMO_USERS[username]
    User = get_user_model()
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
    agents = {agent.slug: agent for agent in Agent.objects.filter(slug__in=ALL_AGENTS)}
    for perm, slugs in grants:
        for slug in slugs:
            if slug in agents:
                agent_permission_grant(agent=agents[slug], perm=perm, to=user, actor=SEED)
    return user


def seed_orders() -> None:
    Order.objects.bulk_create(
        [
            Order(order_id=f"ORD-{n}", customer=f"Customer {n - 1000}", total=Decimal(40 + (n * 37) % 460))
            for n in range(1001, 1051)
        ],
        ignore_conflicts=True,
    )


def seed_contacts() -> None:
    Contact.objects.bulk_create(
        [Contact(id=i, name=f"Contact {i}", email=f"contact{i}@example.com") for i in range(1, 201)],
        ignore_conflicts=True,
    )


def seed_all(*, password: str) -> None:
    ensure_roles()
    for slug in DEMO_AGENTS:
        seed_agent(slug)
    for username in DEMO_USERS:
        seed_user(username, password=password)
    with transaction.atomic():
        seed_orders()
        seed_contacts()
