"""Live updates: rendered inbox rows pushed to the reviewers of one agent.

Called from `transaction.on_commit` only, so nothing is pushed for a change
that did not commit. Each agent has its own small group; a reviewer's socket
joins only the groups of agents the reviewer may review.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db.models import Count
from django.template.loader import render_to_string

from agents.models import Run
from approvals.models import ActionRequest, Notification
from approvals.selectors import with_row_data
from core import push

logger = logging.getLogger(__name__)


def agent_group(agent_id: int, tier: int = 1, reviewer_group_id: int | None = None) -> str:
    base = f"reviewers.agent.{agent_id}.tier.{tier}"
    # Items limited to a reviewer group go only to that group's members.
    return base if reviewer_group_id is None else f"{base}.group.{reviewer_group_id}"


def group_of(action: ActionRequest) -> str:
    return agent_group(action.agent_id, action.tier, action.reviewer_group_id if action.tier == 1 else None)


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        # A push is a convenience: clients resync over HTTP when they reconnect.
        logger.exception("channel layer send to %s failed", group)


def _row(action_id: int) -> ActionRequest | None:

    return with_row_data(ActionRequest.objects.filter(pk=action_id)).first()


def action_opened(action_id: int) -> None:
    action = _row(action_id)
    if action is None:
        return
    html = render_to_string("approvals/inbox.html#row_oob", {"action": action})
    _send(group_of(action), {"type": "inbox.html", "html": html, "action_id": action.pk})


def action_changed(action_id: int) -> None:
    """Claims, approvals toward a quorum, SLA warnings: the row is replaced in place."""
    action = _row(action_id)
    if action is None or action.status != "pending":
        return
    html = render_to_string("approvals/inbox.html#row_replaced", {"action": action})
    _send(group_of(action), {"type": "inbox.html", "html": html, "action_id": action.pk})


def action_closed(action_id: int) -> None:
    action = (
        ActionRequest.objects.filter(pk=action_id).only("id", "agent_id", "status", "tier", "reviewer_group").first()
    )
    if action is None:
        return
    html = render_to_string("approvals/inbox.html#row_removed", {"action": action})
    _send(group_of(action), {"type": "inbox.html", "html": html, "action_id": action.pk})


def action_escalated(action_id: int, *, from_tier: int) -> None:
    action = ActionRequest.objects.filter(pk=action_id).only("id", "agent_id", "reviewer_group").first()
    if action is None:
        return
    html = render_to_string("approvals/inbox.html#row_removed", {"action": action})
    group = agent_group(action.agent_id, from_tier, action.reviewer_group_id if from_tier == 1 else None)
    _send(group, {"type": "inbox.html", "html": html, "action_id": action.pk})
    action_opened(action_id)


def notifications_changed(user_ids: list[int]) -> None:

    # One grouped count for everyone notified, not a query per user.
    unread = dict(
        Notification.objects.filter(user_id__in=user_ids, read_at__isnull=True)
        .values_list("user_id")
        .annotate(n=Count("id"))
    )
    for user_id in user_ids:
        context = {"unread": unread.get(user_id, 0), "oob": True}
        html = render_to_string("approvals/_notifications_badge.html", context)
        _send(user_group(user_id), {"type": "inbox.html", "html": html})


def actions_closed(action_ids: list[int]) -> None:
    for action_id in action_ids:
        action_closed(action_id)


def permissions_changed(user_ids: list[int]) -> None:
    for user_id in user_ids:
        _send(user_group(user_id), {"type": "permissions.changed"})


def session_tag(session_key: str) -> str:
    # Messages name a session by a digest: the key itself is a credential and
    # should not travel through (or sit in) the channel layer.
    return hashlib.sha256(session_key.encode()).hexdigest()


def sessions_check(user_ids: list[int], *, ended_session_key: str | None = None) -> None:
    """Open sockets of these users re-validate their session now; the one on `ended_session_key` closes."""
    message: dict[str, Any] = {"type": "session.check"}
    if ended_session_key:
        message["ended"] = session_tag(ended_session_key)
    for user_id in user_ids:
        _send(user_group(user_id), message)


def operator_group(agent_id: int) -> str:
    return f"operators.agent.{agent_id}"


def run_needs_operator(run_id: int) -> None:
    """A halted run: tell the operators of its agent (rendered into their open pages)."""

    run = Run.objects.select_related("agent").filter(pk=run_id).first()
    if run is None:
        return
    html = render_to_string("agents/_run_notice.html", {"run": run})
    _send(operator_group(run.agent_id), {"type": "inbox.html", "html": html, "run_id": run.pk})
    ops_changed(run.agent_id)


def ops_changed(agent_id: int) -> None:
    """Something on the operators' exceptions page changed: open pages refetch it."""
    html = '<div id="ops-refresh" hx-swap-oob="true" hidden></div>'
    _send(operator_group(agent_id), {"type": "inbox.html", "html": html})


def register_pushes() -> None:
    """How the events lower apps push (core.push) reach the sockets."""
    push.handle(push.PERMISSIONS_CHANGED, lambda *, user_ids: permissions_changed(user_ids))
    push.handle(push.RUN_NEEDS_OPERATOR, lambda *, run_id: run_needs_operator(run_id))
    push.handle(push.OPS_CHANGED, lambda *, agent_id: ops_changed(agent_id))
    push.handle(push.ACTIONS_CLOSED, lambda *, action_ids: actions_closed(action_ids))
