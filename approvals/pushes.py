"""What approvals shows live, and to whom: inbox rows, badges, and the groups a user's socket joins.

The renderers run in the relay (live.relay), once per group and batch, never in
the request that made the change: that request only wrote its intent (live.push).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet
from django.template.loader import render_to_string

from agents.selectors import agent_rights, runs_visible_to
from approvals.models import ActionRequest, Notification, QueueCount
from approvals.selectors import TIER_RIGHTS, with_row_data
from core.prepared import PreparedRead
from live.groups import agent_group, operator_group, run_group, user_group
from live.push import (
    ACTION_CHANGED,
    ACTION_CLOSED,
    ACTION_ESCALATED,
    ACTION_OPENED,
    NOTIFICATIONS_CHANGED,
    PERMISSIONS_CHANGED,
    QUEUE_CHANGED,
    SESSIONS_CHECK,
)
from live.relay import Frame, html, renders

# What a removal needs: the row's id, and its group.
ROW_KEY = ("id", "agent_id", "status", "tier", "reviewer_group")


def group_of(action: ActionRequest) -> str:
    return agent_group(action.agent_id, action.tier, action.reviewer_group_id if action.tier == 1 else None)


def audience(user_id: int, page: dict[str, str] | None = None) -> set[str]:
    """Every group the user's socket may join: their agents' inboxes per tier, operators' pages, their own;
    and for a run page (`page["run"]`), that run's group if they may see the run.

    Every open socket re-reads this every SOCKET_RECHECK_SECONDS (live.consumers): three small queries, two
    of them prepared. With guardian's `get_objects_for_user` per right it was eleven, 11.5 ms, and a
    thousand sockets' re-checks took a quarter of a web process (docs/benchmarks-history.md).
    """
    # A fresh row each time: is_superuser and the groups may have changed since the handshake.
    user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None:
        return set()
    rights = agent_rights(user)
    names = {agent_group(agent_id, tier) for tier, right in TIER_RIGHTS.items() for agent_id in rights.get(right, ())}
    if reviewed := rights.get("review_agent", frozenset()):
        member_of = [gid for (gid,) in _groups_of(user_id=user.pk)]
        names |= {agent_group(agent_id, 1, gid) for agent_id in reviewed for gid in member_of}
    names |= {operator_group(agent_id) for agent_id in rights.get("operate_agent", ())}
    names.add(user_group(user.pk))
    run_id = (page or {}).get("run", "")
    if run_id.isdecimal() and runs_visible_to(user).filter(pk=int(run_id)).exists():
        names.add(run_group(int(run_id)))
    return names


@PreparedRead
def _groups_of(user_id: int) -> QuerySet[Any, tuple[int]]:
    return get_user_model().groups.through.objects.filter(user_id=user_id).values_list("group_id")


def _ids(payloads: list[dict[str, Any]], key: str = "action_id") -> list[int]:
    return [int(p[key]) for p in payloads]


def _pending_rows(ids: list[int]) -> Iterator[ActionRequest]:
    by_id = {a.pk: a for a in with_row_data(ActionRequest.objects.filter(pk__in=ids, status="pending"))}
    return (by_id[i] for i in ids if i in by_id)


@renders(ACTION_OPENED)
def action_opened(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    # Still pending when the relay gets to it: one closed meanwhile has its own removal coming.
    for action in _pending_rows(_ids(payloads)):
        yield group_of(action), html(render_to_string("approvals/inbox.html#row_oob", {"action": action}))


@renders(ACTION_CHANGED)
def action_changed(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    """Claims, approvals toward a quorum, SLA warnings: the row is replaced in place."""
    for action in _pending_rows(_ids(payloads)):
        yield group_of(action), html(render_to_string("approvals/inbox.html#row_replaced", {"action": action}))


@renders(ACTION_CLOSED)
def action_closed(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    actions = ActionRequest.objects.filter(pk__in=_ids(payloads)).only(
        "id", "agent_id", "status", "tier", "reviewer_group"
    )
    for action in actions.order_by("id"):
        yield group_of(action), html(render_to_string("approvals/inbox.html#row_removed", {"action": action}))


@renders(ACTION_ESCALATED)
def action_escalated(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    from_tier = {int(p["action_id"]): int(p["from_tier"]) for p in payloads}
    actions = ActionRequest.objects.filter(pk__in=list(from_tier)).only(*ROW_KEY)
    for action in actions.order_by("id"):
        tier = from_tier[action.pk]
        group = agent_group(action.agent_id, tier, action.reviewer_group_id if tier == 1 else None)
        yield group, html(render_to_string("approvals/inbox.html#row_removed", {"action": action}))
    yield from action_opened(payloads)


@renders(NOTIFICATIONS_CHANGED)
def notifications_changed(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    user_ids = sorted({int(u) for p in payloads for u in p["user_ids"]})
    # One grouped count for everyone notified, not a query per user.
    unread = dict(
        Notification.objects.filter(user_id__in=user_ids, read_at__isnull=True)
        .values_list("user_id")
        .annotate(n=Count("id"))
    )
    for user_id in user_ids:
        context = {"unread": unread.get(user_id, 0), "oob": True}
        yield user_group(user_id), html(render_to_string("approvals/_notifications_badge.html", context))


@renders(PERMISSIONS_CHANGED)
def permissions_changed(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    for user_id in sorted({int(u) for p in payloads for u in p["user_ids"]}):
        yield user_group(user_id), {"type": "permissions.changed"}


@renders(SESSIONS_CHECK)
def sessions_check(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    """Open sockets of these users re-validate their session; the one of the `ended` session closes."""
    for payload in payloads:
        message: dict[str, Any] = {"type": "session.check"}
        if payload.get("ended"):
            message["ended"] = payload["ended"]
        for user_id in payload["user_ids"]:
            yield user_group(int(user_id)), message


@renders(QUEUE_CHANGED)
def queue_changed(payloads: list[dict[str, Any]]) -> Iterator[Frame]:
    """The count of each queue that moved, read once after its batch, to that queue's reviewers (app.js sums)."""
    queues = sorted({(int(p["agent_id"]), int(p["tier"])) for p in payloads})
    wanted = Q()
    for agent_id, tier in queues:
        wanted |= Q(agent_id=agent_id, tier=tier)
    counts = dict(
        ((a, t), n) for a, t, n in QueueCount.objects.filter(wanted).values_list("agent_id", "tier", "pending")
    )
    for agent_id, tier in queues:
        context = {"agent_id": agent_id, "tier": tier, "n": counts.get((agent_id, tier), 0), "oob": True}
        yield agent_group(agent_id, tier), html(render_to_string("approvals/_queue_count.html", context))
