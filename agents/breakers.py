"""Circuit breakers per agent tool (and per agent's model calls, tool="").

N consecutive failures open a breaker; after the agent's cool-down it lets one
probe through (half-open); the probe's success closes it, its failure opens it
again. Operators reset breakers by hand. Every trip and reset is audited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, Expression, OuterRef, QuerySet
from django.utils import timezone

from agents.models import Agent, AgentTool, BreakerState, CircuitBreaker
from audit.services import Actor, record
from core.prepared import PreparedRead
from live.push import OPS_CHANGED, push

if TYPE_CHECKING:  # django-stubs' annotated-model type, a development dependency
    from django_stubs_ext import WithAnnotations

MODEL = ""  # the breaker of the agent's model calls


def breaker_for(agent: Agent, tool: str = MODEL) -> CircuitBreaker:
    breaker, _ = CircuitBreaker.objects.get_or_create(agent=agent, tool=tool)
    return breaker


def breaker_allows(agent: Agent, tool: str = MODEL) -> bool:
    """Whether a call may go ahead; moves an open breaker past its cool-down to half-open."""
    breaker = CircuitBreaker.objects.filter(agent=agent, tool=tool).first()
    if breaker is None or breaker.state == BreakerState.CLOSED:
        return True
    # Open: wait for the cool-down. Half-open: one probe is under way; if it has
    # not settled within another cool-down (rejected in review, cancelled...),
    # let a new probe through rather than refusing the tool forever.
    now = timezone.now()
    cooled = breaker.opened_at is not None and now >= breaker.opened_at + timedelta(
        seconds=agent.breaker_cooldown_seconds
    )
    if not cooled:
        return False
    # Compare-and-set: of several callers after the cool-down, one becomes the probe.
    with transaction.atomic():
        became_probe = (
            CircuitBreaker.objects.filter(pk=breaker.pk, state=breaker.state, opened_at=breaker.opened_at).update(
                state=BreakerState.HALF_OPEN, opened_at=now
            )
            == 1
        )
        if became_probe:
            record(
                actor=Actor.system("breaker"),
                event="breaker.half_open",
                target=breaker,
                agent_id=agent.pk,
                before={"state": breaker.state},
                after={"state": BreakerState.HALF_OPEN, "tool": tool},
            )
    return became_probe


def _breaker_quiet(agent: Any, tool: Any) -> Expression:
    """An annotation for a read of what the call needs anyway: True when the breaker of `agent` and `tool`
    (values or OuterRefs) is closed with no failures, or was never written.

    A quiet breaker lets a call through without another read, and a call that began with it quiet has
    nothing to reset when it succeeds: failures recorded meanwhile are other calls', and an older call's
    success does not erase them (as it must not close a breaker that opened again meanwhile).
    """
    return ~Exists(
        CircuitBreaker.objects.filter(agent=agent, tool=tool).exclude(state=BreakerState.CLOSED, consecutive_failures=0)
    )


# Built once (the ORM spends more building a subquery than PostgreSQL running it): for a read of an
# agent's tool (AgentTool), and for a read of a run, its agent's model calls.
TOOL_QUIET = _breaker_quiet(OuterRef("agent_id"), OuterRef("tool"))
MODEL_QUIET = _breaker_quiet(OuterRef("agent_id"), MODEL)


class Quiet(TypedDict):
    breaker_quiet: bool


class ModelQuiet(TypedDict):
    model_breaker_quiet: bool


@PreparedRead
def tool_settings(agent_id: int, tool: str) -> QuerySet[WithAnnotations[AgentTool, Quiet]]:
    """An agent's tool (its row, enabled or not) with whether its breaker is quiet (`breaker_quiet`).

    Every routed call and every execution reads it: prepared (core.prepared), its SQL is compiled once.
    """
    return AgentTool.objects.filter(agent_id=agent_id, tool=tool).annotate(breaker_quiet=TOOL_QUIET)


def breaker_current(agent: Agent, tool: str = MODEL) -> CircuitBreaker | None:
    """The breaker as it is now (None: never written): what a call that found it not quiet compares against."""
    return CircuitBreaker.objects.filter(agent=agent, tool=tool).first()


def breaker_record_success(agent: Agent, tool: str = MODEL, *, seen: CircuitBreaker | None = None) -> None:
    """A call succeeded: close the breaker (a probe's) or reset its failures.

    `seen`: the breaker as the call found it when it began. The success compares against that, so failures
    recorded while the call ran are kept, and a breaker that opened again meanwhile stays open. Without it,
    against the breaker as it is now.
    """
    breaker = seen if seen is not None else breaker_current(agent, tool)
    if breaker is None or (breaker.state == BreakerState.CLOSED and breaker.consecutive_failures == 0):
        return
    with transaction.atomic():
        was = breaker.state
        # Compare-and-set on what was read: a failure (or a reset) since then wins, and this
        # success of an older call must not close a breaker that opened again meanwhile.
        closed = CircuitBreaker.objects.filter(
            pk=breaker.pk,
            state=was,
            opened_at=breaker.opened_at,
            consecutive_failures=breaker.consecutive_failures,
        ).update(state=BreakerState.CLOSED, consecutive_failures=0, opened_at=None)
        if closed and was != BreakerState.CLOSED:
            record(
                actor=Actor.system("breaker"),
                event="breaker.closed",
                target=breaker,
                agent_id=agent.pk,
                before={"state": was},
                after={"state": BreakerState.CLOSED, "tool": tool},
            )


def breaker_record_failure(agent: Agent, error: str, tool: str = MODEL) -> bool:
    """Count a failure; returns True when this failure opened (or re-opened) the breaker."""
    with transaction.atomic():
        breaker = breaker_for(agent, tool)
        breaker = CircuitBreaker.objects.select_for_update().get(pk=breaker.pk)
        breaker.consecutive_failures += 1
        breaker.last_error = error[:2000]
        tripped = breaker.state == BreakerState.HALF_OPEN or (
            breaker.state == BreakerState.CLOSED and breaker.consecutive_failures >= agent.breaker_threshold
        )
        before = breaker.state
        if tripped:
            breaker.state = BreakerState.OPEN
            breaker.opened_at = timezone.now()
        breaker.save()
        if tripped:
            record(
                actor=Actor.system("breaker"),
                event="breaker.opened",
                target=breaker,
                agent_id=agent.pk,
                before={"state": before},
                after={
                    "state": BreakerState.OPEN,
                    "tool": tool,
                    "failures": breaker.consecutive_failures,
                    "error": error,
                },
            )
    return tripped


def breaker_reset(*, breaker: CircuitBreaker, actor: User | Actor) -> None:
    """An operator closes a breaker by hand."""
    with transaction.atomic():
        locked = CircuitBreaker.objects.select_for_update().get(pk=breaker.pk)
        before = {"state": locked.state, "failures": locked.consecutive_failures}
        locked.state = BreakerState.CLOSED
        locked.consecutive_failures = 0
        locked.opened_at = None
        locked.save()
        record(
            actor=actor,
            event="breaker.reset",
            target=locked,
            agent_id=locked.agent_id,
            before=before,
            after={"state": BreakerState.CLOSED, "tool": locked.tool},
        )
        push(OPS_CHANGED, agent_id=locked.agent_id)
