"""Reads over action requests. Each owns its permission filter and keeps queries flat."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db.models import Case, Count, F, OuterRef, Q, QuerySet, Subquery, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import Agent
from agents.selectors import agent_perms_on, agent_rights
from approvals.models import (
    ActionRequest,
    ActionStatus,
    Approval,
    Decision,
    Notification,
    QueueCount,
    SpotCheck,
    WebhookDelivery,
)
from core.prepared import PreparedRead

User = AbstractBaseUser | AnonymousUser

FAR_FUTURE = datetime(9999, 1, 1, tzinfo=timezone.get_fixed_timezone(0))


# The right each tier asks for on the action's agent (a live socket joins each tier's groups by it too,
# approvals.pushes.audience).
TIER_RIGHTS = {0: "configure_agent", 1: "review_agent", 2: "review_escalated_agent"}


def _reviewable_filter(user: User) -> Q:
    # Tier 0 (configuration changes) goes to those who may configure the agent;
    # tier 1 to its reviewers (only members of the tool's reviewer group, when
    # one is set); tier 2 (escalated) to those who may review its escalations.
    # The user's rights are one prepared query, kept for the request; no per-row checks.
    rights = agent_rights(user)
    groups = Group.objects.filter(user__pk=user.pk) if user.is_authenticated else Group.objects.none()
    return (
        Q(tier=0, agent__in=rights.get(TIER_RIGHTS[0], ()))
        | Q(
            Q(reviewer_group__isnull=True) | Q(reviewer_group__in=groups),
            tier=1,
            agent__in=rights.get(TIER_RIGHTS[1], ()),
        )
        | Q(tier=2, agent__in=rights.get(TIER_RIGHTS[2], ()))
    )


_REVIEW_RELATED = ("agent", "run", "decision__reviewer", "claimed_by", "grant")


def actions_reviewable_by(user: User) -> QuerySet[ActionRequest]:
    """Actions the user may see and decide; anyone else gets an empty set (so 404s)."""
    return ActionRequest.objects.filter(_reviewable_filter(user)).select_related(*_REVIEW_RELATED)


# What deciding reads of an action: its agent (the rights, an edit's guard) and run (who started it).
DECIDE_RELATED = ("agent", "run")


def _action_with(related: tuple[str, ...]) -> PreparedRead[ActionRequest]:
    def action(action_id: int) -> QuerySet[ActionRequest]:
        return ActionRequest.objects.select_related(*related).filter(pk=action_id)

    action.__qualname__ = f"action with {', '.join(related)}"
    return PreparedRead(action)


# One action by id, with what a page shows or what deciding reads. Every API call and page on one action
# reads it: prepared (core.prepared), each shape's SQL compiled once.
_ONE_ACTION: dict[tuple[str, ...], PreparedRead[ActionRequest]] = {
    related: _action_with(related) for related in (_REVIEW_RELATED, DECIDE_RELATED)
}


def action_by_id(action_id: int) -> ActionRequest:
    """One action with all a page or an API answer shows of it (ActionRequest.DoesNotExist if there is none);
    no rights checked: for an answer about an action the caller was just allowed to act on."""
    return _ONE_ACTION[_REVIEW_RELATED].get(action_id=action_id)


def action_reviewable_by(
    user: User, action_id: int, *, related: tuple[str, ...] = _REVIEW_RELATED
) -> ActionRequest | None:
    """One action the user may see and decide, or None (so 404s).

    The same rule as `actions_reviewable_by`, checked on the one row: PostgreSQL spent
    more time planning that filter's permission subqueries than running a whole decision.
    `related`: the relations to load with it (all a page shows, by default).
    """
    action = _ONE_ACTION[related].first(action_id=action_id)
    if action is None or not user.is_authenticated:
        return None
    perm = TIER_RIGHTS.get(action.tier)
    if perm is None or perm not in agent_perms_on(user, action.agent):
        return None
    limited_to = action.reviewer_group_id if action.tier == 1 else None
    if limited_to is not None and not Group.objects.filter(pk=limited_to, user__pk=user.pk).exists():
        return None
    return action


def action_operable_by(user: User, action_id: int) -> ActionRequest | None:
    """One action whose agent the user operates (who submits its calls and acts on its grants); else None."""
    action = _ONE_ACTION[_REVIEW_RELATED].first(action_id=action_id)
    if action is None or not user.is_authenticated or "operate_agent" not in agent_perms_on(user, action.agent):
        return None
    return action


def action_followable_by(user: User, action_id: int) -> ActionRequest | None:
    """One action the user may review, or whose agent they operate (who submitted it may follow it); else None."""
    return action_reviewable_by(user, action_id) or action_operable_by(user, action_id)


@dataclass(frozen=True)
class InboxFilters:
    agent: str = ""
    tool: str = ""
    impact: str = ""
    older_than_minutes: int | None = None
    newer_than_minutes: int | None = None


@dataclass(frozen=True)
class InboxCursor:
    """Keyset position in the inbox order (risk_score desc, due_at asc, id asc)."""

    risk_score: int
    due_at: datetime
    id: int

    def encode(self) -> str:
        return f"{self.risk_score}_{self.due_at.timestamp():.6f}_{self.id}"

    @classmethod
    def decode(cls, raw: str) -> InboxCursor | None:
        try:
            score, due, pk = raw.split("_")
            return cls(int(score), datetime.fromtimestamp(float(due), tz=timezone.get_fixed_timezone(0)), int(pk))
        except (ValueError, OverflowError, OSError):
            return None

    @classmethod
    def after(cls, action: ActionRequest) -> InboxCursor:
        return cls(action.risk_score, action.due_at or FAR_FUTURE, action.pk)


def inbox_for(
    user: User,
    *,
    filters: InboxFilters | None = None,
    cursor: InboxCursor | None = None,
    limit: int = 50,
    filters_tier_min: int = 1,
) -> list[ActionRequest]:
    """Pending actions the user may decide: riskiest first, then the nearest deadline.

    Keyset-paginated on (risk_score, due_at, id), served by the partial index
    over pending rows; one query whatever the page size.
    """
    qs = with_row_data(
        ActionRequest.objects.filter(_reviewable_filter(user), status=ActionStatus.PENDING, tier__gte=filters_tier_min)
    )
    filters = filters or InboxFilters()
    if filters.agent:
        qs = qs.filter(agent__slug=filters.agent)
    if filters.tool:
        qs = qs.filter(tool=filters.tool)
    if filters.impact:
        qs = qs.filter(impact=filters.impact)
    now = timezone.now()
    if filters.older_than_minutes is not None:
        qs = qs.filter(created_at__lte=now - timedelta(minutes=filters.older_than_minutes))
    if filters.newer_than_minutes is not None:
        qs = qs.filter(created_at__gte=now - timedelta(minutes=filters.newer_than_minutes))
    if cursor is not None:
        qs = qs.filter(
            Q(risk_score__lt=cursor.risk_score)
            | Q(risk_score=cursor.risk_score, due_at__gt=cursor.due_at)
            | Q(risk_score=cursor.risk_score, due_at=cursor.due_at, id__gt=cursor.id)
        )
    return list(qs.order_by("-risk_score", "due_at", "id")[:limit])


def _config_queue(user: User) -> QuerySet[ActionRequest]:
    """Configuration changes waiting for a second admin, on agents the user may configure."""
    return ActionRequest.objects.filter(
        tier=0, status=ActionStatus.PENDING, agent__in=agent_rights(user).get("configure_agent", ())
    )


def config_queue_for(user: User, *, limit: int = 100) -> list[ActionRequest]:
    """Configuration changes waiting for a second admin, oldest first."""
    return list(_config_queue(user).select_related("agent", "submitted_by").order_by("id")[:limit])


def config_queue_count(user: User) -> int:
    """How many configuration changes wait for this admin: on agents they may configure, proposed by someone else."""
    return _config_queue(user).exclude(submitted_by_id=user.pk).count()


def with_row_data(qs: QuerySet[ActionRequest]) -> QuerySet[ActionRequest]:
    """What an inbox row shows, fetched with the rows (no query per row)."""
    # A correlated subquery, not a JOIN + GROUP BY: PostgreSQL then evaluates it
    # only for the rows of the page, after the ordered index scan has stopped.
    approvals = Approval.objects.filter(action=OuterRef("pk")).values("action").annotate(n=Count("id")).values("n")
    return qs.select_related("agent", "claimed_by").annotate(approval_count=Coalesce(Subquery(approvals), 0))


def queue_counts(user: User) -> list[dict[str, Any]]:
    """Pending items per agent the user may review, per tier they see, from the maintained counters (one query).

    Every agent they review is listed, waiting or not, so a live count has a place to land (approvals.pushes).
    Items limited to a reviewer group are counted with their agent (the count may include a few the user
    will not see).
    """
    rights = agent_rights(user)
    tier1, tier2 = rights.get("review_agent", frozenset()), rights.get("review_escalated_agent", frozenset())

    def pending(tier: int, seen: frozenset[int]) -> Case:
        count = QueueCount.objects.filter(agent=OuterRef("pk"), tier=tier).values("pending")[:1]
        return Case(When(pk__in=seen, then=Coalesce(Subquery(count), 0)), default=None)

    rows = (
        Agent.objects.filter(Q(pk__in=tier1) | Q(pk__in=tier2))
        .annotate(t1=pending(1, tier1), t2=pending(2, tier2))
        .order_by("slug")
        .values("pk", "slug", "t1", "t2")
    )
    counts = []
    for row in rows:
        tiers = [(tier, n) for tier, n in ((1, row["t1"]), (2, row["t2"])) if n is not None]
        counts.append({"agent_id": row["pk"], "slug": row["slug"], "tiers": tiers, "pending": sum(n for _, n in tiers)})
    return counts


@dataclass(frozen=True)
class DecisionStats:
    sample: int
    approved: int
    edited: int
    rejected: int


def decision_stats(action: ActionRequest, *, sample: int = 500) -> DecisionStats:
    """How people decided this agent's recent calls of this tool (bounded: the latest `sample`)."""
    recent = ActionRequest.objects.filter(agent_id=action.agent_id, tool=action.tool, decision__isnull=False).order_by(
        "-id"
    )[:sample]
    counts = dict(
        Decision.objects.filter(action__in=recent.values("id")).values_list("verdict").annotate(n=Count("id"))
    )
    return DecisionStats(
        sample=sum(counts.values()),
        approved=counts.get("approve", 0),
        edited=counts.get("edit", 0),
        rejected=counts.get("reject", 0),
    )


def unread_notifications(user: User, *, limit: int = 20) -> list[Notification]:
    if not user.is_authenticated:
        return []
    return list(Notification.objects.filter(user_id=user.pk, read_at__isnull=True).order_by("-id")[:limit])


def spot_checks_reviewable_by(user: User) -> QuerySet[SpotCheck]:
    """Spot checks of actions the user may review (the inbox's rule); anyone else gets an empty set (so 404s)."""
    return SpotCheck.objects.filter(
        # Redundant with the action's rule (a spot-checked action is at tier 1), but it lets the
        # open queue be read from its partial index (agent, -id) where grade = ''.
        agent__in=agent_rights(user).get(TIER_RIGHTS[1], ()),
        action__in=ActionRequest.objects.filter(_reviewable_filter(user)).values("pk"),
    )


@dataclass(frozen=True)
class SpotCheckFilters:
    agent: str = ""
    tool: str = ""
    graded: bool = False


def spot_checks_for(
    user: User, *, filters: SpotCheckFilters | None = None, before: int | None = None, limit: int = 50
) -> list[SpotCheck]:
    """Open spot checks the user may grade (or, with `graded`, the latest grades): newest first.

    Keyset-paginated on id (`before`); one query whatever the page size, each row
    carrying its action, agent, grader and who started the work (`started_by`, for
    separation of duties, as the inbox row has its proposer).
    """
    filters = filters or SpotCheckFilters()
    qs = spot_checks_reviewable_by(user).select_related("action", "agent", "graded_by")
    qs = qs.exclude(grade="") if filters.graded else qs.filter(grade="")
    if filters.agent:
        qs = qs.filter(agent__slug=filters.agent)
    if filters.tool:
        qs = qs.filter(tool=filters.tool)
    if before is not None:
        qs = qs.filter(id__lt=before)
    qs = qs.annotate(started_by=Coalesce(F("action__run__created_by_id"), F("action__submitted_by_id")))
    return list(qs.order_by("-id")[:limit])


SPOT_CHECK_COUNT_CAP = 1000


def open_spot_check_count(user: User) -> int:
    """How many open spot checks the user may grade, counted up to SPOT_CHECK_COUNT_CAP (one bounded query)."""
    return spot_checks_reviewable_by(user).filter(grade="")[:SPOT_CHECK_COUNT_CAP].count()


def spot_check_of(action: ActionRequest) -> SpotCheck | None:
    """The action's spot check, if it was sampled, with who graded it."""
    return SpotCheck.objects.filter(action=action).select_related("graded_by").first()


def agent_for_webhook(user: User, slug: str) -> tuple[Agent, frozenset[str]] | None:
    """The agent and the user's rights on it, if they operate or configure it (its webhook is theirs to see)."""
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None:
        return None
    perms = agent_perms_on(user, agent)
    if not perms & {"operate_agent", "configure_agent"}:
        return None
    return agent, perms


def webhook_deliveries(agent: Agent, *, before: int | None = None, limit: int = 50) -> list[WebhookDelivery]:
    """The agent's webhook deliveries, newest first (keyset on id), in one query."""
    rows = WebhookDelivery.objects.filter(webhook__agent=agent).select_related("requested_by").order_by("-id")
    if before is not None:
        rows = rows.filter(id__lt=before)
    return list(rows[:limit])


def delivery_operable_by(user: User, delivery_id: int) -> WebhookDelivery | None:
    """One delivery, if the user operates or configures its agent; else None (so 404s)."""
    delivery = WebhookDelivery.objects.select_related("webhook__agent").filter(pk=delivery_id).first()
    if delivery is None or not agent_perms_on(user, delivery.webhook.agent) & {"operate_agent", "configure_agent"}:
        return None
    return delivery
