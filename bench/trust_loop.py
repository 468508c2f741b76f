"""Benchmark: the trust loop by simulation, with known ground truth, through the real services.

Two agents, two tools each; every proposed call is right or wrong with a known probability
that depends on the agent's stated confidence c: wrong with probability k * (1 - c), where k
is the stream's miscalibration (k = 1: calibrated; k > 1: overconfident; k < 1: underconfident).

    support / sim_refund   k = 3    overconfident (says 0.95, is wrong 15 % of the time)
    support / sim_reply    k = 0.1  underconfident
    crm     / sim_tag      k = 0.1  underconfident
    crm     / sim_merge    k = 1    calibrated

Per seed, in a fresh database:
1. Cold start (learning): every tool in review mode; LEARN calls per tool are routed by
   `approvals.routing.route_tool_call` and decided by a simulated reviewer through
   `approvals.decisions.action_request_decide` (approve when the call is right, reject when
   wrong); `approvals.calibration.calibration_refit` fits the maps from those decisions.
2. Evaluation: every tool in auto mode with a target of 1 % wrong approvals and 5 % spot
   checks; EVAL calls per tool are routed (auto-approved calls execute, for real, inline);
   reviewed ones are decided, spot checks graded (`approvals.spot_checks.spot_check_grade`),
   and the maps refitted every REFIT calls. What calibrated routing let through without
   review, and how much of that was wrong, is counted from the ground truth.
3. Baselines on the same evaluation stream, chosen in hindsight with the ground truth (an
   oracle, with no statistical slack): the best single static threshold (the lowest at
   which the stream's wrong auto-approvals stay at or under 1 %), and the best threshold
   per agent (Agent.review_threshold). The per-tool oracle is printed too, as the ceiling
   of any threshold rule.

Prints, per seed and over seeds (median and min-max), calibrated vs the static baselines:
calls auto-approved, wrong-approval rate with a 95 % Wilson interval, and the gain. Writes
the reliability diagram before (the stated confidence) and after (the calibrated map) of
the overconfident tool to artifacts/trust_loop_reliability.svg.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/countersign_bench REDIS_URL=redis://127.0.0.1:6379/14 \
    SECRET_KEY=bench AUDIT_CHAIN_KEY=bench AUDIT_ANCHOR_FILE=/tmp/bench-anchors.log \
    .venv/bin/python bench/trust_loop.py [--seeds 3] [--learn 2500] [--eval 1500]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from common import ROOT, setup_django

os.environ.setdefault("BACKGROUND_TASKS", "inline")  # auto-approved calls execute in the routing process

STREAMS = {
    ("support", "sim_refund"): (3.0, (10.0, 1.5)),
    ("support", "sim_reply"): (0.1, (10.0, 1.5)),
    ("crm", "sim_tag"): (0.1, (8.0, 1.5)),
    ("crm", "sim_merge"): (1.0, (10.0, 1.5)),
}
TARGET = 0.01
SPOT_RATE = 0.05


def wilson(wrong: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = wrong / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def best_threshold(calls: list[tuple[float, bool]], target: float = TARGET) -> tuple[int, int, float | None]:
    """The most calls a single threshold auto-approves with wrong ones at or under `target`: (auto, wrong, t)."""
    ordered = sorted(calls, key=lambda c: -c[0])
    best = (0, 0, None)
    wrong = 0
    for i, (confidence, right) in enumerate(ordered, start=1):
        wrong += 0 if right else 1
        # Ties: a threshold takes every call at its confidence, so only cut between distinct values.
        if i < len(ordered) and ordered[i][0] == confidence:
            continue
        if wrong / i <= target:
            best = (i, wrong, confidence)
    return best


def register_tools() -> None:
    from pydantic import BaseModel, ConfigDict

    from agents.tools import Impact, Tool, register

    class SimArgs(BaseModel):
        model_config = ConfigDict(extra="forbid")
        ticket: int

    def execute(args: Any, context: Any) -> dict[str, Any]:
        return {"done": args.ticket}

    for _, tool in STREAMS:
        register(
            Tool(name=tool, description=f"Simulated {tool}", args_model=SimArgs, impact=Impact.WRITE, execute=execute)
        )


@dataclass
class Outcome:
    auto: int = 0
    wrong: int = 0
    calls: dict[tuple[str, str], list[tuple[float, bool]]] = field(default_factory=dict)
    seconds: float = 0.0
    spot_checks: int = 0


def run_seed(seed: int, learn: int, evaluate: int, refit_every: int) -> tuple[Outcome, dict[str, Any]]:
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from agents import configuration
    from agents.models import Agent, AgentTool
    from agents.services import agent_create, agent_permission_grant
    from approvals import spot_checks
    from approvals.calibration import calibration_refit
    from approvals.decisions import action_request_decide
    from approvals.models import ActionStatus, CalibrationMap, SpotCheck
    from approvals.routing import route_tool_call
    from approvals.spot_checks import spot_check_grade
    from audit.services import Actor

    rng = np.random.default_rng(seed)
    # Which auto-approved calls are spot-checked is the operating system's randomness in production (an
    # agent cannot predict it); here it is seeded too, so that two runs of a seed route the same calls.
    spot_checks._draw = random.Random(seed)
    actor = Actor.system("bench")
    reviewer = get_user_model().objects.create_user(username=f"sim-reviewer-{seed}")
    agents: dict[str, Agent] = {}
    for slug in {a for a, _ in STREAMS}:
        agents[slug] = agent = agent_create(slug=f"sim-{slug}-{seed}", actor=actor, name=slug, review_threshold=0.8)
        agent_permission_grant(agent=agent, perm="review_agent", to=reviewer, actor=actor)

    def configure(agent: Agent, tool: str, **policy: Any) -> None:
        plan = configuration.plan_change(agent=agent, settings={}, tools={tool: policy})
        if plan is not None:
            with transaction.atomic():
                configuration.apply_change(agent=agent, change=plan.change, actor=actor)

    for (slug, tool), _ in STREAMS.items():
        configure(agents[slug], tool, enabled=True, mode="review")

    def draw(key: tuple[str, str], n: int) -> list[tuple[float, bool]]:
        k, (a, b) = STREAMS[key]
        c = np.round(rng.beta(a, b, n), 4)
        right = rng.random(n) >= np.minimum(1.0, k * (1.0 - c))
        return list(zip(c.tolist(), right.tolist(), strict=True))

    def route(key: tuple[str, str], confidence: float, ticket: int) -> Any:
        slug, tool = key
        return route_tool_call(
            agent=agents[slug], run=None, tool=tool, arguments={"ticket": ticket}, confidence=confidence, rationale=""
        ).action

    def review(action: Any, right: bool) -> None:
        verdict = "approve" if right else "reject"
        action_request_decide(action=action, actor=reviewer, verdict=verdict, comment="" if right else "wrong call")

    def refit() -> None:
        for slug, tool in STREAMS:
            calibration_refit(agent_id=agents[slug].pk, tool=tool)

    # 1. Cold start: everything reviewed.
    ticket = 0
    streams = {key: draw(key, learn) for key in STREAMS}
    for i in range(learn):  # interleaved across tools, as traffic is
        for key in STREAMS:
            confidence, right = streams[key][i]
            ticket += 1
            review(route(key, confidence, ticket), right)
    refit()
    before = {key: CalibrationMap.objects.get(agent=agents[key[0]], tool=key[1]).brier_raw for key in STREAMS}

    # 2. Calibrated routing with spot checks.
    for (slug, tool), _ in STREAMS.items():
        AgentTool.objects.filter(agent=agents[slug], tool=tool).update(
            mode="auto", target_error_rate=TARGET, spot_check_rate=SPOT_RATE
        )
    out = Outcome()
    started = time.perf_counter()
    streams = {key: draw(key, evaluate) for key in STREAMS}
    truth: dict[int, bool] = {}
    for i in range(evaluate):
        for key in STREAMS:
            confidence, right = streams[key][i]
            ticket += 1
            action = route(key, confidence, ticket)
            out.calls.setdefault(key, []).append((confidence, right))
            if action.status == ActionStatus.PENDING:
                review(action, right)
            else:
                out.auto += 1
                out.wrong += 0 if right else 1
                truth[action.pk] = right
        if (i + 1) % refit_every == 0:
            for check in SpotCheck.objects.filter(agent__in=agents.values(), grade=""):
                right = truth[check.action_id]
                grade = "fine" if right else "should_reject"
                spot_check_grade(
                    spot_check_id=check.pk, actor=reviewer, grade=grade, comment="" if right else "wrong call"
                )
                out.spot_checks += 1
            refit()
    out.seconds = time.perf_counter() - started
    maps = {key: CalibrationMap.objects.get(agent=agents[key[0]], tool=key[1]) for key in STREAMS}
    return out, {"before": before, "maps": maps}


def reliability_svg(calls: list[tuple[float, bool]], blocks: list[list[float]], path: Any) -> None:
    """Before: observed agreement per stated-confidence bin; after: the calibrated map (the line)."""
    size, pad = 320, 36
    bins: dict[int, list[bool]] = {}
    for confidence, right in calls:
        bins.setdefault(min(19, int(confidence * 20)), []).append(right)

    def xy(x: float, y: float) -> tuple[float, float]:
        return pad + x * size, pad + (1 - y) * size

    dots = []
    for b, rights in sorted(bins.items()):
        cx, cy = xy((b + 0.5) / 20, sum(rights) / len(rights))
        r = min(10.0, 2 + math.sqrt(len(rights)) / 3)
        dots.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="#d97706" opacity=".7"/>')
    steps = []
    for lo, hi, agreement, *_ in blocks:
        steps += [
            f"{xy(lo, agreement)[0]:.1f},{xy(lo, agreement)[1]:.1f}",
            f"{xy(hi, agreement)[0]:.1f},{xy(hi, agreement)[1]:.1f}",
        ]
    x0, y0 = xy(0, 0)
    x1, y1 = xy(1, 1)
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad}" height="{size + 2 * pad}" '
        f'font-family="sans-serif" font-size="10">'
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#999" stroke-dasharray="4 3"/>'
        + "".join(dots)
        + f'<polyline points="{" ".join(steps)}" fill="none" stroke="#2563eb" stroke-width="2.5"/>'
        f'<text x="{pad}" y="{pad - 16}">support/sim_refund (overconfident): dots = observed agreement by stated</text>'
        f'<text x="{pad}" y="{pad - 4}">confidence (before); line = the calibrated map (after); dashed = perfect</text>'
        f'<text x="{pad}" y="{size + 2 * pad - 8}">stated confidence 0 → 1</text></svg>\n'
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--learn", type=int, default=2500, help="reviewed calls per tool before calibration")
    parser.add_argument("--eval", type=int, default=1500, help="calls per tool routed on calibrated confidence")
    parser.add_argument("--refit", type=int, default=500, help="refit and grade spot checks every N calls per tool")
    args = parser.parse_args()
    setup_django()
    register_tools()
    rows = []
    svg_done = False
    print(
        f"target: ≤ {TARGET:.0%} wrong auto-approvals; spot checks {SPOT_RATE:.0%}; learn {args.learn}, "
        f"evaluate {args.eval} calls per tool, {len(STREAMS)} tools"
    )
    print(f"{'seed':>4} {'rule':<32} {'auto':>6} {'wrong':>6} {'wrong rate (95 % CI)':>28} {'gain':>7}")
    for seed in range(args.seeds):
        out, detail = run_seed(seed, args.learn, args.eval, args.refit)
        every = [c for calls in out.calls.values() for c in calls]
        static = best_threshold(every)
        per_agent = [0, 0]
        for agent in {a for a, _ in STREAMS}:
            a_auto, a_wrong, _ = best_threshold([c for (s, _), calls in out.calls.items() if s == agent for c in calls])
            per_agent[0] += a_auto
            per_agent[1] += a_wrong
        oracle = [0, 0]
        for calls in out.calls.values():
            t_auto, t_wrong, _ = best_threshold(calls)
            oracle[0] += t_auto
            oracle[1] += t_wrong
        line = {
            "calibrated (95 % bound)": (out.auto, out.wrong),
            f"static, one threshold ({static[2]})": (static[0], static[1]),
            "static, one per agent": tuple(per_agent),
            "static, one per tool (ceiling)": tuple(oracle),
        }
        for name, (auto, wrong) in line.items():
            lo, hi = wilson(wrong, auto)
            gain = out.auto / auto - 1 if auto else float("inf")
            rate = f"{wrong / auto:.2%} ({lo:.2%} to {hi:.2%})" if auto else "-"
            shown = f"{gain:+.0%}" if name.startswith("static") else ""
            print(f"{seed:>4} {name:<32} {auto:>6} {wrong:>6} {rate:>28} {shown:>7}")
        routed = args.eval * len(STREAMS)
        print(f"{'':>4} ({out.seconds:.0f} s for {routed} routed calls, {out.spot_checks} spot checks graded)")
        rows.append((out.auto, out.wrong, static[0], static[1], per_agent[0], oracle[0]))
        if not svg_done:
            key = ("support", "sim_refund")
            target = ROOT / "artifacts" / "trust_loop_reliability.svg"
            target.parent.mkdir(exist_ok=True)
            reliability_svg(out.calls[key], detail["maps"][key].blocks, target)
            svg_done = True
    gains = [a / s - 1 for a, _, s, _, _, _ in rows if s] or [float("nan")]
    gains_agent = [a / p - 1 for a, _, _, _, p, _ in rows if p] or [float("nan")]
    rates = [w / a for a, w, *_ in rows if a] or [0.0]
    print()
    print(
        f"over {len(rows)} seeds: calibrated vs one static threshold: gain median {statistics.median(gains):+.0%} "
        f"(min {min(gains):+.0%}, max {max(gains):+.0%}); "
        f"vs one per agent: median {statistics.median(gains_agent):+.0%} "
        f"(min {min(gains_agent):+.0%}, max {max(gains_agent):+.0%})"
    )
    print(
        f"calibrated wrong auto-approval rate: median {statistics.median(rates):.2%} "
        f"(min {min(rates):.2%}, max {max(rates):.2%}); seeds within {TARGET:.0%}: "
        f"{sum(r <= TARGET for r in rates)} of {len(rates)}"
    )


if __name__ == "__main__":
    main()
