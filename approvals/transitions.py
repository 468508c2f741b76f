"""The one writer of every status (action, execution, grant, webhook delivery): compare-and-set, checked.

The action's and the execution's, sent on every decision and execution, are built once per shape
(core.prepared.update_where).

A transition the table does not allow is a bug in the caller (IllegalTransition), raised
before anything is written. One the table allows but the row is no longer in (another
transaction got there first) returns False: the caller decides what that means.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from approvals.models import (
    ACTION_TRANSITIONS,
    DELIVERY_TRANSITIONS,
    EXECUTION_TRANSITIONS,
    GRANT_TRANSITIONS,
    ActionRequest,
    Execution,
    Grant,
    WebhookDelivery,
)
from approvals.settled import notify_changed
from core.errors import IllegalTransition
from core.prepared import update_where


def _allowed(table: dict[str, frozenset[str]], what: str, from_statuses: tuple[str, ...], to: str) -> None:
    for source in from_statuses:
        if to not in table[source]:
            raise IllegalTransition(f"{what} cannot go from {source} to {to}")


def action_transition(
    action: ActionRequest,
    *,
    from_statuses: tuple[str, ...],
    to: str,
    expect: dict[str, Any] | None = None,
    **fields: Any,
) -> bool:
    """Move the action from one of `from_statuses` (and `expect`) to `to`, writing `fields` with it."""
    _allowed(ACTION_TRANSITIONS, "action", from_statuses, to)
    where = {"pk": action.pk, "status__in": list(from_statuses), **(expect or {})}
    if update_where(ActionRequest, where=where, values={"status": to, **fields}) != 1:
        return False
    notify_changed(action.pk, action.agent_id)  # whoever waits on it (a held MCP call) wakes when this commits
    return True


def execution_transition(
    where: dict[str, Any], *, from_status: str, to: str, add: dict[str, Any] | None = None, **fields: Any
) -> bool:
    """Move the execution(s) matching `where` (it says which attempt) that are in `from_status` to `to`,
    writing `fields` and adding `add` to counters."""
    _allowed(EXECUTION_TRANSITIONS, "execution", (from_status,), to)
    changed = update_where(Execution, where={**where, "status": from_status}, values={"status": to, **fields}, add=add)
    return changed > 0


def grant_transition(grants: QuerySet[Grant], *, from_status: str, to: str, **fields: Any) -> bool:
    """Move the grant in `grants` (and whatever else the queryset expects of it) from `from_status` to `to`."""
    _allowed(GRANT_TRANSITIONS, "grant", (from_status,), to)
    return grants.filter(status=from_status).update(status=to, **fields) == 1


def delivery_transition(deliveries: QuerySet[WebhookDelivery], *, from_status: str, to: str, **fields: Any) -> bool:
    """Move the delivery in `deliveries` (and whatever else the queryset expects of it) from `from_status` to `to`."""
    _allowed(DELIVERY_TRANSITIONS, "webhook delivery", (from_status,), to)
    return deliveries.filter(status=from_status).update(status=to, **fields) == 1
