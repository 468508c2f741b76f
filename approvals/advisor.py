"""The threshold advisor: what each rule would have done on an agent's tool's recorded history.

For each static threshold and each target error rate it replays the tool's samples
(approvals.calibration: reviewed decisions, weight 1; graded spot checks, weight 1 / rate)
and reports the share that would have run without review, the wrong approvals among them
(expected, with a 95 % interval), and the reviewer hours saved against the rule in force.

When the evidence allows wider autonomy (calibrated routing auto-approves more than the
rule in force, within the target) or demands narrower (the rule in force lets wrong
approvals through above the target, at 95 %), it proposes the change. A proposal goes
through four eyes like any other configuration change (approvals.four_eyes), which lets a
narrowing through at once and holds a widening for a second admin; the evidence is
audited with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Sum
from django.utils import timezone

from agents.models import Agent, AgentTool, ToolMode
from approvals import four_eyes
from approvals.calibration import (
    CALIBRATION_WINDOW,
    Sample,
    auto_from,
    fit,
    lower_bound,
    samples_for,
    upper_bound,
    weighted_wrong,
)
from core.errors import Conflict

STATIC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
TARGETS = (0.005, 0.01, 0.02, 0.05)
# The target proposed for a tool that has none yet.
DEFAULT_TARGET = 0.01
# Reviewer time per decision when the agent has no measured review time yet (seconds).
DEFAULT_REVIEW_SECONDS = 60.0
# Below this share of calls running without review, a wider rule is not worth proposing.
MIN_GAIN = 0.02


@dataclass(frozen=True)
class Option:
    kind: str  # static | target
    value: float
    auto_from: float | None
    auto_share: float
    wrong: float  # expected wrong approvals, on the history's scale
    wrong_low: float
    wrong_high: float
    wrong_rate: float
    hours_saved: float
    current: bool = False

    @property
    def label(self) -> str:
        if self.kind == "static":
            return f"confidence ≥ {self.value:.2f}"
        return f"calibrated, ≤ {self.value:.1%} wrong"


@dataclass(frozen=True)
class Proposal:
    change: dict[str, Any]
    widens: bool
    why: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Advice:
    agent_tool: AgentTool
    samples: int
    reviewed: int
    spot_checked: int
    review_seconds: float
    current_rule: str
    options: list[Option]
    proposal: Proposal | None


def _rule_in_force(agent_tool: AgentTool, tail: Sequence[Sequence[float]]) -> tuple[str, float | None]:
    """The rule in force as (its words, the lowest confidence it auto-approves; None: nothing)."""
    if not agent_tool.enabled or agent_tool.mode != ToolMode.AUTO:
        return f"{agent_tool.get_mode_display().lower()}", None
    if agent_tool.target_error_rate is not None:
        found = auto_from(tail, agent_tool.target_error_rate)
        return f"calibrated, ≤ {agent_tool.target_error_rate:.1%} wrong", found[0] if found else None
    threshold = (
        agent_tool.min_confidence if agent_tool.min_confidence is not None else agent_tool.agent.review_threshold
    )
    return f"confidence ≥ {threshold:.2f}", threshold


def review_seconds(agent: Agent) -> float:
    """The agent's reviewers' mean time per decision, claim to decision, over the calibration window."""
    from_stats = agent.hour_stats.filter(hour__gte=timezone.now() - CALIBRATION_WINDOW).aggregate(
        seconds=Sum("review_seconds"),
        decisions=Sum("decisions_approve") + Sum("decisions_edit") + Sum("decisions_reject"),
    )
    seconds, decisions = from_stats["seconds"] or 0.0, from_stats["decisions"] or 0
    return seconds / decisions if decisions and seconds > 0 else DEFAULT_REVIEW_SECONDS


@dataclass(frozen=True)
class History:
    """One tool's samples as arrays, with the rule in force and what a review costs."""

    x: np.ndarray  # stated confidence
    y: np.ndarray  # 1: agreed
    w: np.ndarray  # weight
    current_from: float | None
    review_seconds: float

    @classmethod
    def of(cls, samples: Sequence[Sample], *, current_from: float | None, review_seconds: float) -> History:
        return cls(
            x=np.array([s.confidence for s in samples], dtype=float),
            y=np.array([1.0 if s.agreed else 0.0 for s in samples]),
            w=np.array([s.weight for s in samples], dtype=float),
            current_from=current_from,
            review_seconds=review_seconds,
        )

    def above(self, start: float | None) -> np.ndarray:
        return self.x >= start if start is not None else np.zeros_like(self.x, dtype=bool)

    def wrong_eff(self, start: float | None) -> tuple[float, float]:
        """(wrong approvals, effective samples) above `start`, on the effective scale."""
        auto = self.above(start)
        _, _, n_eff, wrong_eff = weighted_wrong(self.y[auto], self.w[auto])
        return wrong_eff, n_eff

    def option(self, kind: str, value: float, start: float | None) -> Option:
        auto, was_auto = self.above(start), self.above(self.current_from)
        total = float(np.sum(self.w)) or 1.0
        weight, wrong, n_eff, wrong_eff = weighted_wrong(self.y[auto], self.w[auto])
        # Saved: calls the rule in force sends to review that this one lets run; spent: the other way round.
        saved = float(np.sum(self.w[auto & ~was_auto])) - float(np.sum(self.w[~auto & was_auto]))
        return Option(
            kind=kind,
            value=value,
            auto_from=start,
            auto_share=weight / total,
            wrong=wrong,
            wrong_low=lower_bound(wrong_eff, n_eff, level=0.975) * weight,
            wrong_high=upper_bound(wrong_eff, n_eff, level=0.975) * weight if n_eff else 0.0,
            wrong_rate=wrong / weight if weight else 0.0,
            hours_saved=saved * self.review_seconds / 3600.0,
        )


def advise(agent_tool: AgentTool, samples: Sequence[Sample] | None = None, *, seconds: float | None = None) -> Advice:
    """Every rule replayed on the history of one agent's tool, and the change the evidence argues for."""
    if samples is None:
        samples = samples_for(agent_id=agent_tool.agent_id, tool=agent_tool.tool)
    tail = fit(samples).tail
    words, current_from = _rule_in_force(agent_tool, tail)
    seconds = review_seconds(agent_tool.agent) if seconds is None else seconds
    history = History.of(samples, current_from=current_from, review_seconds=seconds)
    options = [history.option("static", t, t) for t in STATIC_THRESHOLDS]
    for target in TARGETS:
        found = auto_from(tail, target)
        options.append(history.option("target", target, found[0] if found else None))
    options = [replace(o, current=True) if o.label == words else o for o in options]
    reviewed = sum(1 for s in samples if s.source == "review")
    return Advice(
        agent_tool=agent_tool,
        samples=len(samples),
        reviewed=reviewed,
        spot_checked=len(samples) - reviewed,
        review_seconds=history.review_seconds,
        current_rule=words,
        options=options,
        proposal=_proposal(agent_tool, history, tail) if len(samples) >= settings.CALIBRATION_MIN_SAMPLES else None,
    )


def _proposal(agent_tool: AgentTool, history: History, tail: Sequence[Sequence[float]]) -> Proposal | None:
    if not agent_tool.enabled:
        return None
    target = agent_tool.target_error_rate or DEFAULT_TARGET
    found = auto_from(tail, target)
    current_from = history.current_from
    calibrated = history.option("target", target, found[0] if found else None)
    current = history.option("static", current_from or 1.0, current_from)
    evidence = {
        "samples": int(history.x.size),
        "target": target,
        "rule_in_force": {"auto_from": current_from, "auto_share": round(current.auto_share, 4)}
        | {"wrong_rate": round(current.wrong_rate, 5)},
        "calibrated": {"auto_from": calibrated.auto_from, "auto_share": round(calibrated.auto_share, 4)}
        | {"wrong_rate": round(calibrated.wrong_rate, 5), "bound": found[1] if found else None},
        "hours_saved": round(calibrated.hours_saved, 2),
    }
    if current_from is not None and agent_tool.target_error_rate is None:
        # The static rule in force lets wrong approvals through above the target, at 95 %: narrow now.
        wrong_eff, n_eff = history.wrong_eff(current_from)
        if n_eff and lower_bound(wrong_eff, n_eff) > target:
            change: dict[str, Any] = {"min_confidence": round(found[0], 4)} if found else {"mode": ToolMode.REVIEW}
            return Proposal(
                change=change,
                widens=False,
                why=f"at or above {current_from:.2f}, {current.wrong_rate:.1%} of calls were wrong approvals: "
                f"more than the target {target:.1%} even at the 95 % lower bound",
                evidence=evidence,
            )
    if found is None or calibrated.auto_share < current.auto_share + MIN_GAIN:
        return None
    if agent_tool.mode == ToolMode.AUTO and agent_tool.target_error_rate is not None:
        return None  # calibrated routing already follows the evidence
    change = {"target_error_rate": target} | ({} if agent_tool.mode == ToolMode.AUTO else {"mode": ToolMode.AUTO})
    return Proposal(
        change=change,
        widens=True,
        why=f"calibrated routing would run {calibrated.auto_share:.0%} of calls without review "
        f"(the rule in force: {current.auto_share:.0%}) with wrong approvals within {target:.1%} at 95 %",
        evidence=evidence,
    )


def advice_adopt(
    *, agent_tool: AgentTool, actor: User, samples: Sequence[Sample] | None = None
) -> four_eyes.ConfigOutcome:
    """Submit the advisor's proposal as a configuration change (four eyes decides whether it waits).

    `samples`: the history to advise on; by default the tool's recorded one.
    """
    advice = advise(agent_tool, samples)
    if advice.proposal is None:
        raise Conflict("the evidence argues for no change now", code="no_change")
    evidence = advice.proposal.evidence | {"why": advice.proposal.why, "at": timezone.now().isoformat()}
    return four_eyes.agent_configure(
        agent=agent_tool.agent,
        actor=actor,
        settings={},
        tools={agent_tool.tool: advice.proposal.change},
        evidence=evidence,
    )
