"""Four eyes: a risky configuration change waits, as a tier-0 action, for a second admin.

What is risky is decided by the agents app (`agents.configuration.risky_changes`);
here the change is applied at once, or queued in the changes queue, where it goes
through the same decisions, separation of duties, audit and execution as any
agent's action (the tools `apply_agent_config` and `activate_prompt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from agents.configuration import EVALUATE_PROMPT, active_prompt, apply_change, plan_change, prompt_diff
from agents.models import Agent, PromptVersion
from approvals.config_tools import ACTIVATE_PROMPT, APPLY_AGENT_CONFIG
from approvals.models import ActionRequest, ActionStatus
from approvals.queue import queue_count_add
from audit.services import record
from core.background import enqueue_on_commit
from core.errors import Conflict, InvalidInput
from live.push import ACTION_OPENED, push

CONFIG_REVIEW_HOURS = 24


@dataclass
class ConfigOutcome:
    applied: bool
    proposal: Any = None  # the ActionRequest waiting for a second admin
    risky: list[str] = field(default_factory=list)
    changed: bool = True


def agent_configure(
    *,
    agent: Agent,
    actor: User,
    settings: dict[str, Any],
    tools: dict[str, dict[str, Any]],
    evidence: dict[str, Any] | None = None,
) -> ConfigOutcome:
    """Validate a whole change set; apply it now, or queue it for a second admin if any part is risky.

    `evidence` (what argued for the change, e.g. the threshold advisor's numbers) is audited
    with the change, both when it is proposed and when it is applied.
    """
    plan = plan_change(agent=agent, settings=settings, tools=tools)
    if plan is None:
        return ConfigOutcome(applied=False, changed=False)
    if not plan.risky:
        with transaction.atomic():
            apply_change(agent=agent, change=plan.change, actor=actor, evidence=evidence)
        return ConfigOutcome(applied=True)
    arguments = plan.change | ({"evidence": evidence} if evidence else {})
    proposal = propose_change(
        agent=agent, actor=actor, tool=APPLY_AGENT_CONFIG.name, arguments=arguments, reason="; ".join(plan.risky)
    )
    return ConfigOutcome(applied=False, proposal=proposal, risky=plan.risky)


def propose_change(*, agent: Agent, actor: User, tool: str, arguments: dict[str, Any], reason: str) -> Any:
    """Queue a configuration change for a second admin (an action request in tier 0)."""
    now = timezone.now()
    due = timedelta(hours=CONFIG_REVIEW_HOURS)
    with transaction.atomic():
        proposal = ActionRequest.objects.create(
            agent=agent,
            run=None,
            submitted_by=actor,
            tier=0,
            tool=tool,
            arguments=arguments,
            proposed_arguments=arguments,
            confidence=1.0,
            rationale=f"proposed by {actor.get_username()}",
            impact="write",
            route="review",
            route_reason=f"four eyes: {reason}",
            risk_score=50,
            warn_at=now + due / 2,
            due_at=now + due,
            status=ActionStatus.PENDING,
        )
        queue_count_add(agent_id=agent.pk, tier=0, delta=1)
        record(
            actor=actor,
            event="config.proposed",
            target=proposal,
            agent_id=agent.pk,
            after={"tool": tool, "change": arguments, "reason": reason},
        )
        push(ACTION_OPENED, action_id=proposal.pk)
    return proposal


def prompt_propose(*, agent: Agent, actor: User, text: str, note: str = "") -> tuple[PromptVersion, Any]:
    """A new prompt version, waiting for a second admin before it becomes active."""
    text = text.strip()
    if not text:
        raise InvalidInput("the prompt must not be empty", code="invalid_config")
    active = active_prompt(agent)
    if active is not None and active.text == text:
        raise Conflict("this is the active prompt already", code="no_change")
    with transaction.atomic():
        last = PromptVersion.objects.filter(agent=agent).order_by("-number").values_list("number", flat=True).first()
        version = PromptVersion.objects.create(
            agent=agent, number=(last or 0) + 1, text=text, note=note[:300], created_by=actor
        )
        record(
            actor=actor,
            event="prompt.proposed",
            target=version,
            agent_id=agent.pk,
            after={"number": version.number, "diff": prompt_diff(active.text if active else "", text)},
        )
        proposal = propose_change(
            agent=agent,
            actor=actor,
            tool=ACTIVATE_PROMPT.name,
            arguments={"version": version.pk, "number": version.number},
            reason=f"new prompt version {version.number}",
        )
        # The golden set is replayed against it before the second admin decides (runtime.golden).
        enqueue_on_commit(EVALUATE_PROMPT, version.pk)
    return version, proposal
