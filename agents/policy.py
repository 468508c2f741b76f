"""Policy: does a guarded tool call run automatically, wait for a person, or get denied?"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import models

from agents.models import Agent, AgentTool, ToolMode
from agents.tools import Impact, Tool


class Route(models.TextChoices):
    AUTO = "auto"
    REVIEW = "review"
    DENY = "deny"


@dataclass(frozen=True)
class RouteDecision:
    route: Route
    reason: str


@dataclass(frozen=True)
class Calibrated:
    """What the calibration map of one agent's tool says about one call (approvals.calibration.estimate).

    `auto_from` is the lowest stated confidence whose calls, taken together, were wrongly
    approved at a rate whose upper bound (`bound`) is within the tool's target; None if no
    such confidence exists yet. Below `minimum` samples the map is not used (cold start).
    """

    samples: int
    minimum: int
    agreement: float | None = None
    auto_from: float | None = None
    bound: float | None = None

    @property
    def cold(self) -> bool:
        return self.samples < self.minimum


def route_for(
    *,
    agent: Agent,
    agent_tool: AgentTool,
    tool: Tool,
    confidence: float,
    magnitude: Decimal,
    flag_reasons: list[str] | None = None,
    calibrated: Calibrated | None = None,
) -> RouteDecision:
    if agent.is_paused:
        return RouteDecision(Route.DENY, "agent is paused")
    if agent_tool.mode == ToolMode.DENY:
        return RouteDecision(Route.DENY, f"policy for {tool.name} is deny")
    if flag_reasons:
        return RouteDecision(Route.REVIEW, "; ".join(flag_reasons))
    if tool.impact == Impact.DESTRUCTIVE:
        return RouteDecision(Route.REVIEW, f"{tool.name} is destructive: always reviewed")
    if agent_tool.mode == ToolMode.REVIEW:
        return RouteDecision(Route.REVIEW, f"policy for {tool.name} is review")
    target = agent_tool.target_error_rate
    if target is not None and calibrated is not None and not calibrated.cold:
        rule, passed = _calibrated_rule(confidence, target, calibrated)
    else:
        threshold = agent_tool.min_confidence if agent_tool.min_confidence is not None else agent.review_threshold
        passed = confidence >= threshold
        rule = f"confidence {confidence:.2f} {'≥' if passed else 'is below the threshold'} {threshold:.2f}"
        if target is not None:
            seen = f"{calibrated.samples} of {calibrated.minimum}" if calibrated is not None else "no"
            rule = f"static threshold (calibration has {seen} samples): {rule}"
    if not passed:
        return RouteDecision(Route.REVIEW, rule)
    limit = agent_tool.auto_max_magnitude
    if limit is not None and magnitude > limit:
        return RouteDecision(Route.REVIEW, f"magnitude {magnitude} is above the auto limit {limit}")
    return RouteDecision(Route.AUTO, rule + (f" and magnitude {magnitude} ≤ {limit}" if limit is not None else ""))


def _calibrated_rule(confidence: float, target: float, calibrated: Calibrated) -> tuple[str, bool]:
    """Route on calibrated confidence: (the reason, whether the call may run without review)."""
    seen = f"calibrated {calibrated.agreement:.3f}" if calibrated.agreement is not None else "calibrated"
    head = f"{seen} from stated {confidence:.2f} (isotonic, n={calibrated.samples})"
    if calibrated.auto_from is None or calibrated.bound is None:
        return f"{head}: no confidence yet keeps wrong approvals within {target:.2%} (95 % bound)", False
    tail = f"wrong approvals at ≥ {calibrated.auto_from:.2f} ≤ {calibrated.bound:.2%} (95 % bound), target {target:.2%}"
    if confidence >= calibrated.auto_from:
        return f"{head}: {tail}", True
    return f"{head}: below {calibrated.auto_from:.2f}, where {tail}", False
