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


def route_for(
    *,
    agent: Agent,
    agent_tool: AgentTool,
    tool: Tool,
    confidence: float,
    magnitude: Decimal,
    flag_reasons: list[str] | None = None,
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
    threshold = agent_tool.min_confidence if agent_tool.min_confidence is not None else agent.review_threshold
    if confidence < threshold:
        return RouteDecision(Route.REVIEW, f"confidence {confidence:.2f} is below the threshold {threshold:.2f}")
    limit = agent_tool.auto_max_magnitude
    if limit is not None and magnitude > limit:
        return RouteDecision(Route.REVIEW, f"magnitude {magnitude} is above the auto limit {limit}")
    return RouteDecision(
        Route.AUTO,
        f"confidence {confidence:.2f} ≥ {threshold:.2f}"
        + (f" and magnitude {magnitude} ≤ {limit}" if limit is not None else ""),
    )
