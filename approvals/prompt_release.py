"""Whether a proposed prompt version may go live: its golden set, its latest evaluation, the regression gate.

The golden set of an agent is its recorded runs whose outcome a person confirmed. The
replay itself needs the provider and the run loop's request building, so it lives in
runtime.golden; what the four-eyes decision needs to know (is there a golden set, what did
the latest evaluation say, does it regress beyond the agent's margin) is read here, below
runtime, from agents' and approvals' own tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef, QuerySet

from agents.models import Agent, PromptEvaluation, PromptStatus, PromptVersion, Run, RunOutcome, RunStatus
from approvals.config_tools import ACTIVATE_PROMPT
from approvals.models import ActionRequest, Decision, Verdict
from audit.services import record
from core.errors import Conflict, InvalidInput

# The newest this many confirmed runs are replayed; fewer than GOLDEN_SET_MIN is no golden set yet
# (a handful of cases says little, and one case would swing agreement by its whole weight).
GOLDEN_SET_MAX = 50
GOLDEN_SET_MIN = 5
CONFIRMING_VERDICTS = (Verdict.APPROVE, Verdict.EDIT)


def confirmed_runs(agent_id: int) -> QuerySet[Run]:
    """The agent's finished runs that acted, where a person approved (or edited) one of their calls: newest first."""
    confirmed = Decision.objects.filter(action__run=OuterRef("pk"), verdict__in=CONFIRMING_VERDICTS)
    return (
        Run.objects.filter(
            agent_id=agent_id,
            status=RunStatus.SUCCEEDED,  # run_agent_status_idx
            outcome__in=[RunOutcome.DONE, RunOutcome.DONE_WITH_EDITS],
        )
        .filter(Exists(confirmed))
        .order_by("-id")
    )


def golden_set_size(agent_id: int) -> int:
    return confirmed_runs(agent_id)[:GOLDEN_SET_MAX].count()


def latest_evaluation(version_id: int) -> PromptEvaluation | None:
    return (
        PromptEvaluation.objects.filter(version_id=version_id).select_related("baseline", "created_by").order_by("-id")
    ).first()


@dataclass(frozen=True)
class PromptStanding:
    """A proposed version beside the active one, on the golden set: what the approver sees, and the gate."""

    version: PromptVersion
    active: PromptVersion | None
    margin: float
    golden_cases: int
    evaluation: PromptEvaluation | None

    @property
    def needed(self) -> int:
        """Confirmed runs still missing before there is a golden set."""
        return max(0, GOLDEN_SET_MIN - self.golden_cases)

    @property
    def stale(self) -> bool:
        """The evaluation compared with a version that is no longer the active one."""
        active_id = self.active.pk if self.active is not None else None
        return self.evaluation is not None and self.evaluation.baseline_id != active_id

    @property
    def drop(self) -> Fraction | None:
        """How far the proposed version's agreement falls below the active one's (negative: it does better)."""
        evaluation = self.evaluation
        if evaluation is None or not evaluation.cases or evaluation.baseline_id is None:
            return None
        return Fraction(evaluation.baseline_agreed - evaluation.agreed, evaluation.cases)

    @property
    def regresses(self) -> bool:
        # Exact: 1 case in 20 is a drop of exactly 5 points, which a margin of 0.05 allows.
        drop = self.drop
        return drop is not None and drop > Fraction(str(self.margin))

    def refusal(self) -> Conflict | None:
        """Why approving this version in one click is refused, or None when it is not."""
        number = self.version.number
        if self.evaluation is None:
            if self.golden_cases < GOLDEN_SET_MIN:
                return None
            return Conflict(
                f"evaluate first: v{number} has not been replayed against the golden set "
                f"({self.golden_cases} confirmed runs) yet",
                code="evaluate_first",
            )
        if self.stale:
            compared = self.evaluation.baseline
            return Conflict(
                f"evaluate first: v{number} was compared with "
                f"{f'v{compared.number}' if compared else 'no active version'}, and "
                f"{f'v{self.active.number}' if self.active else 'no version'} is active now",
                code="evaluate_first",
            )
        if self.regresses:
            return Conflict(
                f"v{number} agrees with {self.summary()}: it falls more than the agent's margin of "
                f"{self.margin:.0%} below the active version; approving it needs an override with a written reason",
                code="prompt_regression",
                details={"regression": self.numbers()},
            )
        return None

    def summary(self) -> str:
        evaluation = self.evaluation
        assert evaluation is not None
        text = f"{evaluation.agreed}/{evaluation.cases} ({percent(evaluation.agreement)}) confirmed outcomes"
        if evaluation.baseline is not None:
            text += (
                f", the active v{evaluation.baseline.number} with {evaluation.baseline_agreed}/{evaluation.cases}"
                f" ({percent(evaluation.baseline_agreement)})"
            )
        return text

    def numbers(self) -> dict[str, Any]:
        evaluation = self.evaluation
        assert evaluation is not None
        return {
            "version": self.version.number,
            "evaluation": evaluation.pk,
            "cases": evaluation.cases,
            "agreed": evaluation.agreed,
            "baseline": evaluation.baseline.number if evaluation.baseline else None,
            "baseline_agreed": evaluation.baseline_agreed,
            "margin": self.margin,
        }


def percent(share: float | None) -> str:
    return "—" if share is None else f"{share:.0%}".replace("%", " %")


def prompt_standing(version: PromptVersion) -> PromptStanding:
    """The golden set's verdict on a version so far (four queries)."""
    agent = Agent.objects.only("prompt_regression_margin").get(pk=version.agent_id)
    return PromptStanding(
        version=version,
        active=PromptVersion.objects.filter(agent_id=version.agent_id, status=PromptStatus.ACTIVE).first(),
        margin=agent.prompt_regression_margin,
        golden_cases=golden_set_size(version.agent_id),
        evaluation=latest_evaluation(version.pk),
    )


def proposed_version(action: ActionRequest) -> PromptVersion | None:
    """The version an activate_prompt change would make active (None for any other change)."""
    if action.tool != ACTIVATE_PROMPT.name or not isinstance(action.arguments, dict):
        return None
    version_id = action.arguments.get("version")
    if not isinstance(version_id, int):
        return None
    return PromptVersion.objects.filter(pk=version_id, agent_id=action.agent_id).first()


def prompt_release_check(*, action: ActionRequest, actor: User, override_reason: str = "") -> None:
    """Refuse approving a prompt version that regresses on the golden set, unless overridden in writing.

    Called in the transaction that records the approval, so an override's audit row (with the
    numbers it overrode) commits with the decision or not at all. Not evaluated yet is not
    overridable: evaluation runs by itself when a version is proposed, or again from its page.
    """
    version = proposed_version(action)
    if version is None or version.status != PromptStatus.PROPOSED:
        return  # the tool itself refuses a version that is gone or no longer proposed
    standing = prompt_standing(version)
    refusal = standing.refusal()
    if refusal is None:
        return
    reason = (override_reason or "").strip()
    if refusal.code != "prompt_regression" or not reason:
        raise refusal
    if len(reason) > OVERRIDE_REASON_MAX:
        raise InvalidInput(f"the override reason is longer than {OVERRIDE_REASON_MAX} characters", code="too_long")
    record(
        actor=actor,
        event="prompt.regression_overridden",
        target=version,
        agent_id=version.agent_id,
        after={**standing.numbers(), "action": action.pk, "reason": reason},
    )


OVERRIDE_REASON_MAX = 5000
