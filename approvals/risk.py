"""How risky a routed call is, 0-100, from what it puts at stake. The inbox shows the riskiest first.

The score is the sum of five parts, each kept on the action so a reviewer can see why:

- impact: what kind of effect (read 0, write 15, financial 25, destructive 30);
- stake (up to 30): the magnitude against the tool's limits and the object it touches, the
  largest of: its share of the hard limit; its multiple of the auto-approve limit (log scale,
  20x scores all 30); its share of the affected object (a refund against its order's total);
  with none of these to compare against, its size on a log scale up to 10,000;
- doubt (up to 20): one minus the agent's confidence;
- flags (up to 20): 10 for each risk flag (over the hard limit, suspected injection) and each
  finding of the tool (above the order's total, contacts already gone);
- urgency (up to 10): a short review deadline (15 minutes or less 10, an hour or less 5).

Each part grows with what it measures, so within one tool and agent a larger call never ranks
below a smaller one that is otherwise alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from agents.tools import Stake

# The parts, in the order people read them (approvals.models.ActionRequest.risk_part_items).
RISK_PARTS = ("impact", "stake", "doubt", "flags", "urgency")
IMPACT_POINTS = {"read": 0, "write": 15, "financial": 25, "destructive": 30}
UNKNOWN_IMPACT_POINTS = 30  # an impact nobody declared counts as destructive
STAKE_POINTS = 30
AUTO_LIMIT_SPAN = 20  # this many times the auto-approve limit scores the whole stake
ABSOLUTE_SPAN = 10_000  # with nothing to compare against, this magnitude scores the whole stake
DOUBT_POINTS = 20
FLAG_POINTS = 10
FLAGS_MAX = 20
URGENT_MINUTES = ((15, 10), (60, 5))
BASIS_MAX = 200  # ActionRequest.risk_basis


@dataclass(frozen=True)
class Risk:
    score: int
    parts: dict[str, int]
    # Which comparison set the stake part, for people: "93% of order ORD-1001's total 540.00".
    basis: str


def assess(
    *,
    impact: str,
    magnitude: Decimal,
    confidence: float,
    flags: int,
    stake: Stake | None,
    hard_limit: Decimal | None,
    auto_limit: Decimal | None,
    sla_minutes: int,
) -> Risk:
    stake_part, basis = _stake(magnitude, stake, hard_limit=hard_limit, auto_limit=auto_limit)
    parts = {
        "impact": IMPACT_POINTS.get(impact, UNKNOWN_IMPACT_POINTS),
        "stake": stake_part,
        "doubt": round((1 - max(0.0, min(1.0, confidence))) * DOUBT_POINTS),
        "flags": min(FLAGS_MAX, FLAG_POINTS * (flags + (len(stake.findings) if stake else 0))),
        "urgency": next((points for minutes, points in URGENT_MINUTES if sla_minutes <= minutes), 0),
    }
    return Risk(score=min(100, sum(parts.values())), parts=parts, basis=basis[:BASIS_MAX])


def _stake(
    magnitude: Decimal, stake: Stake | None, *, hard_limit: Decimal | None, auto_limit: Decimal | None
) -> tuple[int, str]:
    """The largest of the comparisons there is something to compare with, and which one it was."""
    m = float(max(magnitude, Decimal(0)))
    bases: list[tuple[float, str]] = []
    if hard_limit is not None and hard_limit > 0:
        bases.append((m / float(hard_limit), f"{m / float(hard_limit):.0%} of the hard limit {hard_limit}"))
    if auto_limit is not None and auto_limit > 0:
        times = m / float(auto_limit)
        bases.append((_log_share(times, AUTO_LIMIT_SPAN), f"{times:.3g}x the auto-approve limit {auto_limit}"))
    if stake is not None and stake.share is not None:
        bases.append((max(0.0, stake.share), f"{stake.share:.0%} of {stake.of}" if stake.of else f"{stake.share:.0%}"))
    if not bases:
        bases.append((_log_share(m, ABSOLUTE_SPAN), f"magnitude {magnitude} (nothing to compare it with)"))
    share, basis = max(bases, key=lambda b: b[0])
    return round(STAKE_POINTS * min(1.0, share)), basis


def _log_share(value: float, span: float) -> float:
    return math.log1p(max(0.0, value)) / math.log1p(span)
