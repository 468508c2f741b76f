"""Changing an agent's configuration safely: validation, four eyes on risky changes, prompt versions.

A change set (agent settings and tool policies) is validated as a whole, then:
- if nothing in it is risky, it is applied at once (one transaction, audited);
- if anything is risky (lowering a confidence threshold, raising or removing a
  magnitude limit, switching a tool to auto, enabling a destructive tool), the
  whole set waits for a second admin as an action request in the configuration
  queue (tier 0), decided and executed by the same machinery as agents' actions.
Nothing is ever half-applied.

Prompt changes are new versions; a version becomes active only when a second
admin approves it; rollback re-activates an earlier, already approved version.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agents import services
from agents.models import Agent, AgentTool, PromptStatus, PromptVersion
from agents.tools import Impact, get_tool
from audit.services import Actor, record
from core.errors import Conflict, InvalidInput

TOOL_FIELDS = (
    "enabled",
    "mode",
    "min_confidence",
    "auto_max_magnitude",
    "max_magnitude",
    "over_limit",
    "required_approvals",
    "reviewer_group",
    "sla_minutes",
    "on_timeout",
    "timeout_seconds",
    "max_retries",
    "target_error_rate",
    "spot_check_rate",
)
DECIMAL_TOOL_FIELDS = {"auto_max_magnitude", "max_magnitude"}

# The golden-set replay of a proposed prompt version (runtime.tasks), published by name when it is proposed.
EVALUATE_PROMPT = "runtime.evaluate_prompt"


def tool_settings(agent_tool: AgentTool) -> dict[str, Any]:
    """A tool policy as JSON values (decimals as strings, the reviewer group by name)."""
    values: dict[str, Any] = {}
    for name in TOOL_FIELDS:
        value = getattr(agent_tool, name) if name != "reviewer_group" else None
        if name == "reviewer_group":
            value = agent_tool.reviewer_group.name if agent_tool.reviewer_group is not None else None
        elif isinstance(value, Decimal):
            value = str(value)
        values[name] = value
    return values


@dataclass
class ChangePlan:
    """A validated change set: what to write, and why it needs a second admin (empty: it does not)."""

    change: dict[str, Any]
    risky: list[str] = field(default_factory=list)


def plan_change(*, agent: Agent, settings: dict[str, Any], tools: dict[str, dict[str, Any]]) -> ChangePlan | None:
    """Validate a whole change set against the agent as it is now; None if it changes nothing."""
    agent = Agent.objects.get(pk=agent.pk)
    settings = {k: v for k, v in settings.items() if services.agent_settings(agent).get(k) != _json(v)}
    current_tools = {t.tool: t for t in AgentTool.objects.filter(agent=agent).select_related("reviewer_group")}
    tool_changes: dict[str, dict[str, Any]] = {}
    for name, wanted in tools.items():
        tool = get_tool(name)
        if tool is None or tool.internal:
            raise InvalidInput(f"there is no tool named {name!r}", code="unknown_tool")
        before = tool_settings(current_tools[name]) if name in current_tools else None
        diff = {k: _json(v) for k, v in wanted.items() if before is None or before.get(k) != _json(v)}
        if diff:
            tool_changes[name] = diff
    if not settings and not tool_changes:
        return None
    rows = _validate(agent, settings, current_tools, tool_changes)
    risky = risky_changes(agent, settings, current_tools, tool_changes, rows)
    return ChangePlan(change={"agent": _json(settings), "tools": tool_changes}, risky=risky)


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def _decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput(f"{value!r} is not a number", code="invalid_config") from None


def _validate(
    agent: Agent,
    settings: dict[str, Any],
    current_tools: dict[str, AgentTool],
    tool_changes: dict[str, dict[str, Any]],
) -> dict[str, AgentTool]:
    """Check the whole set before anything is written: every error, with its field.

    Returns each changed tool's policy as it would be saved.
    """
    rows: dict[str, AgentTool] = {}
    errors: dict[str, list[str]] = {}
    unknown = set(settings) - set(services.AGENT_CONFIG_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown agent settings: {', '.join(sorted(unknown))}", code="invalid_config")
    candidate = Agent.objects.get(pk=agent.pk)
    for name, value in settings.items():
        setattr(candidate, name, value)
    try:
        services.validate_agent(candidate)
    except InvalidInput as exc:
        for key, messages in (exc.details or {}).items():
            errors[key] = list(messages)
        if not exc.details:
            errors["agent"] = [exc.message]
    for name, changes in tool_changes.items():
        unknown = set(changes) - set(TOOL_FIELDS)
        if unknown:
            errors[f"{name}"] = [f"unknown tool settings: {', '.join(sorted(unknown))}"]
            continue
        row = rows[name] = _tool_row(agent, current_tools.get(name), name, changes)
        try:
            row.full_clean(exclude=["agent"])
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                errors[f"{name}.{key}"] = list(messages)
    if errors:
        summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())
        raise InvalidInput(f"the configuration is not valid: {summary}", code="invalid_config", details=errors)
    return rows


def _tool_row(agent: Agent, existing: AgentTool | None, name: str, changes: dict[str, Any]) -> AgentTool:
    # A deep copy (its own model state and related-object cache): the caller's row
    # stays as it is in the database, since it is the "before".
    row = AgentTool(agent=agent, tool=name) if existing is None else copy.deepcopy(existing)
    for key, value in changes.items():
        if key == "reviewer_group":
            group = Group.objects.filter(name=value).first() if value else None
            if value and group is None:
                raise InvalidInput(f"there is no group named {value!r}", code="invalid_config")
            row.reviewer_group = group
        elif key in DECIMAL_TOOL_FIELDS:
            setattr(row, key, _decimal(value))
        else:
            setattr(row, key, value)
    return row


def risky_changes(
    agent: Agent,
    settings: dict[str, Any],
    current_tools: dict[str, AgentTool],
    tool_changes: dict[str, dict[str, Any]],
    rows: dict[str, AgentTool],
) -> list[str]:
    """The parts of a change set that need a second admin, each said in words."""
    reasons: list[str] = []
    threshold_before = agent.review_threshold
    threshold_after = float(settings.get("review_threshold", threshold_before))
    if threshold_after < threshold_before:
        reasons.append(f"lowers the review threshold from {threshold_before:.2f} to {threshold_after:.2f}")
    margin_before = agent.prompt_regression_margin
    margin_after = float(settings.get("prompt_regression_margin", margin_before))
    if margin_after > margin_before:
        reasons.append(f"lets prompts regress by up to {margin_after:.0%} instead of {margin_before:.0%}")
    for name in ("provider", "base_url", "api_key_ref"):
        if name in settings:
            reasons.append(f"changes {name} (where prompts and the key are sent)")
    for name, changes in tool_changes.items():
        tool = get_tool(name)
        existing = current_tools.get(name)
        after = rows[name]
        before = existing or AgentTool(agent=agent, tool=name, enabled=False, mode="review")
        eff_before = before.min_confidence if before.min_confidence is not None else threshold_before
        eff_after = after.min_confidence if after.min_confidence is not None else threshold_after
        if "min_confidence" in changes and eff_after < eff_before:
            reasons.append(f"{name}: lowers the minimum confidence from {eff_before:.2f} to {eff_after:.2f}")
        for limit in ("auto_max_magnitude", "max_magnitude"):
            if limit not in changes:
                continue
            old, new = getattr(before, limit), getattr(after, limit)
            if new is None and old is not None:
                reasons.append(f"{name}: removes the limit {limit} ({old})")
            elif old is not None and new is not None and new > old:
                reasons.append(f"{name}: raises {limit} from {old} to {new}")
            elif old is None and new is not None and existing is None:
                pass  # a new tool with a limit is not a raise
        if "target_error_rate" in changes:
            old_rate, new_rate = before.target_error_rate, after.target_error_rate
            if new_rate is not None and (old_rate is None or new_rate > old_rate):
                reasons.append(
                    f"{name}: routes on calibrated confidence at {new_rate:.2%} wrong approvals"
                    + (f" (was {old_rate:.2%})" if old_rate is not None else "")
                )
            elif new_rate is None and old_rate is not None:
                reasons.append(f"{name}: goes back from calibrated routing to the static threshold")
        if after.mode == "auto" and after.enabled and (existing is None or before.mode != "auto" or not before.enabled):
            reasons.append(f"{name}: switches to auto" if before.mode != "auto" else f"{name}: enables an auto tool")
        if "on_timeout" in changes and after.on_timeout == "approve" and before.on_timeout != "approve":
            reasons.append(f"{name}: approves on timeout")
        if (
            "required_approvals" in changes
            and existing is not None
            and after.required_approvals < before.required_approvals
        ):
            reasons.append(
                f"{name}: lowers required approvals from {before.required_approvals} to {after.required_approvals}"
            )
        if (
            "reviewer_group" in changes
            and existing is not None
            and before.reviewer_group_id
            and after.reviewer_group is None
        ):
            reasons.append(f"{name}: removes the reviewer group")
        if "over_limit" in changes and before.over_limit == "deny" and after.over_limit != "deny":
            reasons.append(f"{name}: lets calls over the hard limit through to review instead of denying them")
        if (
            tool is not None
            and tool.impact == Impact.DESTRUCTIVE
            and after.enabled
            and not (existing is not None and existing.enabled)
        ):
            reasons.append(f"{name}: enables a destructive tool")
    return reasons


def agent_tool_configure(
    *,
    agent: Agent,
    tool: str,
    actor: Actor | AbstractBaseUser | None,
    enabled: bool = True,
    mode: str = "review",
    auto_max_magnitude: Any = None,
) -> AgentTool:
    """Set one tool's policy directly (the seed, the shell, tests), validated and written as any change is.

    Not for people in the product: their changes go through `plan_change` and four eyes.
    """
    with transaction.atomic():
        plan = plan_change(
            agent=agent,
            settings={},
            tools={tool: {"enabled": enabled, "mode": mode, "auto_max_magnitude": auto_max_magnitude}},
        )
        if plan is not None:
            apply_change(agent=agent, change=plan.change, actor=actor)
    return AgentTool.objects.get(agent=agent, tool=tool)


def apply_change(
    *,
    agent: Agent,
    change: dict[str, Any],
    actor: User | Actor | AbstractBaseUser | None,
    evidence: dict[str, Any] | None = None,
) -> None:
    """Write a validated change set (inside the caller's transaction); `evidence` is what argued for it."""
    if change.get("agent"):
        services.agent_update(agent=agent, actor=actor, **change["agent"])
    for name, changes in change.get("tools", {}).items():
        existing = AgentTool.objects.filter(agent=agent, tool=name).first()
        before = tool_settings(existing) if existing else None
        row = _tool_row(agent, existing, name, changes)
        row.save()
        record(
            actor=actor,
            event="agent.tool_configured",
            target=agent,
            agent_id=agent.pk,
            before=before,
            after={"tool": name, **tool_settings(row)} | ({"evidence": evidence} if evidence else {}),
        )


def active_prompt(agent: Agent) -> PromptVersion | None:
    return PromptVersion.objects.filter(agent=agent, status=PromptStatus.ACTIVE).first()


def prompt_activate(*, version: PromptVersion, actor: User | Actor, event: str = "prompt.activated") -> None:
    """Make `version` the active prompt (inside the caller's transaction)."""
    locked = PromptVersion.objects.select_for_update().get(pk=version.pk)
    previous = PromptVersion.objects.filter(agent_id=locked.agent_id, status=PromptStatus.ACTIVE).exclude(pk=locked.pk)
    before = previous.values_list("number", flat=True).first()
    previous.update(status=PromptStatus.RETIRED)
    PromptVersion.objects.filter(pk=locked.pk).update(status=PromptStatus.ACTIVE, activated_at=timezone.now())
    Agent.objects.filter(pk=locked.agent_id).update(system_prompt=locked.text)
    record(
        actor=actor,
        event=event,
        target=locked,
        agent_id=locked.agent_id,
        before={"active": before},
        after={"active": locked.number},
    )


def prompt_reject(*, version_id: int, actor: User | Actor) -> None:
    """A proposed version whose activation was rejected or expired (inside the caller's transaction)."""
    version = PromptVersion.objects.filter(pk=version_id).first()
    # Compare-and-set: only a version still waiting is marked; an active or retired one keeps its status.
    if version is None or not PromptVersion.objects.filter(pk=version.pk, status=PromptStatus.PROPOSED).update(
        status=PromptStatus.REJECTED
    ):
        return
    record(
        actor=actor,
        event="prompt.rejected",
        target=version,
        agent_id=version.agent_id,
        before={"status": PromptStatus.PROPOSED},
        after={"status": PromptStatus.REJECTED, "number": version.number},
    )


def prompt_rollback(*, agent: Agent, version: PromptVersion, actor: User) -> None:
    """Re-activate an earlier version: it was approved by two admins when it first went live."""
    if version.agent_id != agent.pk:
        raise InvalidInput("that version belongs to another agent", code="invalid_config")
    if version.status != PromptStatus.RETIRED:
        raise Conflict(f"only a retired version can be rolled back to; v{version.number} is {version.status}")
    with transaction.atomic():
        prompt_activate(version=version, actor=actor, event="prompt.rolled_back")


def prompt_diff(before: str, after: str) -> str:
    return "\n".join(
        difflib.unified_diff(before.splitlines(), after.splitlines(), "active", "proposed", lineterm="", n=2)
    )


def agent_set_paused(*, agent: Agent, actor: User, paused: bool) -> Agent:
    """Operators pause and resume agents; this is not a policy change."""
    return services.agent_update(agent=agent, actor=actor, is_paused=paused)
