"""Calibrated confidence: what an agent's stated confidence on one tool has meant, learned from people.

Samples are the agent's reviewed calls (a person approved unchanged: agreed; edited or
rejected: not) and its graded spot checks (fine: agreed). Reviewed calls are every call
policy sent to review, so each counts once; a spot check stands for the 1 / rate
auto-approved calls it was drawn from, which corrects the bias of learning only from
what was reviewed (the confident calls are the ones nobody looks at).

The map is scikit-learn's isotonic regression of agreement on stated confidence, with
those weights: a step function that never falls as confidence rises. For each step's
lowest confidence c, `tail` keeps the weighted wrong approvals among all samples at or
above c and a one-sided Clopper-Pearson upper bound of their rate, on Kish's effective
sample size (weights make n smaller than the count). Routing with a target error rate
auto-approves a call only if its confidence is at or above the lowest c whose bound is
within the target, so "at most 1 % wrong approvals, at 95 %" is a statement about what
the rule lets through, not about one lucky bin.

The tail is post-stratified on fixed bins of stated confidence (STRATA, 0.01 wide), cells chosen
without looking at outcomes: within a bin every sample stands for an equal share of the bin's
weight, and the bin keeps its Horvitz-Thompson total (how many calls fell there). A reviewed call
and a spot check of nearly the same confidence are taken as draws of the same agreement; that
assumes the agent behaves alike on the calls that were reviewed and those that ran (drift alerts
watch the agent against its own baseline). Without this, a few spot checks of weight 20 joining a
thousand reviewed calls of the same confidences would shrink Kish's effective sample to a few
hundred and the bound would forget what it had seen. Calls of other confidences never share a
bin, so spot checks that go wrong where nothing was reviewed keep their full weight.

Cold start: with fewer than CALIBRATION_MIN_SAMPLES samples (or no map yet) routing uses
the static threshold and says so in its reason.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.models import AgentTool
from agents.policy import Calibrated
from approvals.models import CalibrationMap, Decision, Grade, SpotCheck, Verdict

# STATISTICS_ON_DEMAND: SciPy and scikit-learn are imported where a map is fitted or a bound computed,
# not here. Every web process, worker and relay imports this module (routing reads the maps), and the
# two took about 1 s of each start-up on a 2-core machine; a refit, the advisor's report and the tests
# are the only callers. tests/architecture checks that a process starts without them.

# How far back decisions and grades are learned from.
CALIBRATION_WINDOW = timedelta(days=90)
# Bins of stated confidence the tail is post-stratified on (fit): 0.01 wide.
STRATA = 100


@dataclass(frozen=True)
class Sample:
    confidence: float
    agreed: bool
    weight: float = 1.0
    source: str = "review"  # review | spot_check


def upper_bound(wrong: float, n: float, *, level: float | None = None) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen as `wrong` out of `n` (both may be fractional)."""
    level = settings.CALIBRATION_CONFIDENCE if level is None else level
    if n <= 0:
        return 1.0
    wrong = min(max(wrong, 0.0), n)
    if wrong >= n:
        return 1.0
    from scipy.stats import beta  # noqa: PLC0415  (STATISTICS_ON_DEMAND)

    return float(beta.ppf(level, wrong + 1.0, n - wrong))


def lower_bound(wrong: float, n: float, *, level: float | None = None) -> float:
    """One-sided Clopper-Pearson lower bound of the same rate."""
    level = settings.CALIBRATION_CONFIDENCE if level is None else level
    if n <= 0 or wrong <= 0:
        return 0.0
    wrong = min(wrong, n)
    if wrong >= n:
        return float((1.0 - level) ** (1.0 / n))
    from scipy.stats import beta  # noqa: PLC0415  (STATISTICS_ON_DEMAND)

    return float(beta.ppf(1.0 - level, wrong, n - wrong + 1.0))


def effective(weights: Sequence[float] | np.ndarray) -> float:
    """Kish's effective sample size of weighted samples."""
    w = np.asarray(weights, dtype=float)
    squares = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / squares if squares > 0 else 0.0


def weighted_wrong(y: np.ndarray, w: np.ndarray) -> tuple[float, float, float, float]:
    """Of some samples: (weight, wrong weight, effective samples, wrong approvals on the effective scale)."""
    weight = float(np.sum(w))
    if not weight:
        return 0.0, 0.0, 0.0, 0.0
    wrong = float(np.sum(w * (1.0 - y)))
    n_eff = effective(w)
    return weight, wrong, n_eff, wrong / weight * n_eff


@dataclass(frozen=True)
class Fit:
    samples: int
    reviewed: int
    spot_checked: int
    effective_samples: float
    # [lowest confidence, highest, agreement, weight, effective samples], ascending
    blocks: list[list[float]]
    # [lowest confidence, weight, wrong weight, effective samples, upper bound], ascending (post-stratified)
    tail: list[list[float]]
    brier_raw: float | None
    brier_calibrated: float | None


def fit(samples: Sequence[Sample]) -> Fit:
    """Fit the isotonic map and its tail bounds (pure: no database)."""
    reviewed = sum(1 for s in samples if s.source == "review")
    if not samples:
        return Fit(0, 0, 0, 0.0, [], [], None, None)
    x = np.clip(np.array([s.confidence for s in samples], dtype=float), 0.0, 1.0)
    y = np.array([1.0 if s.agreed else 0.0 for s in samples])
    w = np.array([s.weight for s in samples], dtype=float)
    order = np.argsort(x, kind="stable")
    x, y, w = x[order], y[order], w[order]
    from sklearn.isotonic import IsotonicRegression  # noqa: PLC0415  (STATISTICS_ON_DEMAND)

    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    fitted = model.fit(x, y, sample_weight=w).predict(x)
    blocks: list[list[float]] = []
    start = 0
    for i in range(1, len(x) + 1):
        if i == len(x) or not math.isclose(fitted[i], fitted[start], abs_tol=1e-12):
            seg = slice(start, i)
            blocks.append(
                [float(x[start]), float(x[i - 1]), float(fitted[start]), float(np.sum(w[seg])), effective(w[seg])]
            )
            start = i
    cell = np.minimum((x * STRATA).astype(int), STRATA - 1)
    tail: list[list[float]] = []
    for lo, *_ in blocks:
        at = int(np.searchsorted(x, lo, side="left"))
        # Post-stratified weights of the tail's samples: within a fixed confidence bin (cut at `lo`), each
        # stands for an equal share of the bin's Horvitz-Thompson weight, which the bin keeps. The bins do
        # not depend on the outcomes, unlike the map's steps.
        here = cell[at:]
        totals = np.bincount(here, weights=w[at:], minlength=STRATA)
        counts = np.bincount(here, minlength=STRATA).clip(1)
        weight, wrong, n_eff, wrong_eff = weighted_wrong(y[at:], (totals / counts)[here])
        tail.append([lo, weight, wrong, n_eff, upper_bound(wrong_eff, n_eff)])
    total = float(np.sum(w))
    return Fit(
        samples=len(samples),
        reviewed=reviewed,
        spot_checked=len(samples) - reviewed,
        effective_samples=effective(w),
        blocks=blocks,
        tail=tail,
        brier_raw=float(np.sum(w * (x - y) ** 2) / total),
        brier_calibrated=float(np.sum(w * (fitted - y) ** 2) / total),
    )


def agreement_at(blocks: Sequence[Sequence[float]], confidence: float) -> float | None:
    """The calibrated agreement of a stated confidence (the step it falls on; clipped at the ends)."""
    if not blocks:
        return None
    starts = [b[0] for b in blocks]
    i = max(0, bisect.bisect_right(starts, confidence) - 1)
    return float(blocks[i][2])


def auto_from(tail: Sequence[Sequence[float]], target: float) -> tuple[float, float] | None:
    """The lowest stated confidence whose tail's error bound is within `target`, with that bound."""
    for lo, _weight, _wrong, _n, bound in tail:
        if bound <= target:
            return float(lo), float(bound)
    return None


def estimate(cal: CalibrationMap | None, *, confidence: float, target: float) -> Calibrated:
    """What routing needs from a map for one call (agents.policy decides with it)."""
    minimum = settings.CALIBRATION_MIN_SAMPLES
    if cal is None or cal.samples < minimum:
        return Calibrated(samples=cal.samples if cal else 0, minimum=minimum)
    found = auto_from(cal.tail, target)
    return Calibrated(
        samples=cal.samples,
        minimum=minimum,
        agreement=agreement_at(cal.blocks, confidence),
        auto_from=found[0] if found else None,
        bound=found[1] if found else None,
    )


def calibration_for(*, agent_id: int, tool: str) -> CalibrationMap | None:
    return CalibrationMap.objects.filter(agent_id=agent_id, tool=tool).first()


# --- learning from history ---------------------------------------------------------


def samples_by_tool(*, agent_id: int, tools: Iterable[str] | None = None) -> dict[str, list[Sample]]:
    """Reviewed decisions and graded spot checks of one agent, by tool (two queries, whatever the tools)."""
    since = timezone.now() - CALIBRATION_WINDOW
    decided = Decision.objects.filter(action__agent_id=agent_id, action__tier__gte=1, created_at__gte=since)
    graded = SpotCheck.objects.filter(agent_id=agent_id, graded_at__gte=since).exclude(grade="")
    if tools is not None:
        decided, graded = decided.filter(action__tool__in=list(tools)), graded.filter(tool__in=list(tools))
    found: dict[str, list[Sample]] = {}
    for tool, confidence, verdict in decided.values_list("action__tool", "action__confidence", "verdict"):
        found.setdefault(tool, []).append(Sample(confidence, verdict == Verdict.APPROVE))
    for tool, confidence, grade, rate in graded.values_list("tool", "action__confidence", "grade", "rate"):
        weight = 1.0 / rate if rate > 0 else 1.0
        found.setdefault(tool, []).append(Sample(confidence, grade == Grade.FINE, weight, "spot_check"))
    return found


def samples_for(*, agent_id: int, tool: str) -> list[Sample]:
    return samples_by_tool(agent_id=agent_id, tools=[tool]).get(tool, [])


def calibration_refit(*, agent_id: int, tool: str, samples: Iterable[Sample] | None = None) -> CalibrationMap:
    """Fit one agent's tool from its history (or the samples given) and store the map."""
    found = fit(list(samples) if samples is not None else samples_for(agent_id=agent_id, tool=tool))
    with transaction.atomic():
        cal, _ = CalibrationMap.objects.update_or_create(
            agent_id=agent_id,
            tool=tool,
            defaults={
                "samples": found.samples,
                "reviewed": found.reviewed,
                "spot_checked": found.spot_checked,
                "effective_samples": found.effective_samples,
                "blocks": found.blocks,
                "tail": found.tail,
                "brier_raw": found.brier_raw,
                "brier_calibrated": found.brier_calibrated,
                "fitted_at": timezone.now(),
            },
        )
    return cal


def calibration_refit_agent(*, agent_id: int, tools: Iterable[str]) -> None:
    """Refit the given tools of one agent from its history, read once for all of them."""
    tools = list(tools)
    samples = samples_by_tool(agent_id=agent_id, tools=tools)
    for tool in tools:
        calibration_refit(agent_id=agent_id, tool=tool, samples=samples.get(tool, []))


def calibration_refit_all() -> int:
    """Refit every enabled agent tool (the periodic job), one history read per agent; returns how many."""
    by_agent: dict[int, list[str]] = {}
    for agent_id, tool in AgentTool.objects.filter(enabled=True).values_list("agent_id", "tool"):
        by_agent.setdefault(agent_id, []).append(tool)
    for agent_id, tools in by_agent.items():
        calibration_refit_agent(agent_id=agent_id, tools=tools)
    return sum(len(tools) for tools in by_agent.values())


def reliability(cal: CalibrationMap | None) -> list[dict[str, Any]]:
    """The calibrated map as points for a chart: stated confidence (mid-step) against agreement."""
    if cal is None:
        return []
    return [
        {"low": lo, "high": hi, "agreement": agree, "weight": weight, "effective": n}
        for lo, hi, agree, weight, n in cal.blocks
    ]
