"""Grants: how an agent that executes its own tools acts on an approval, once, with exactly what was approved.

A call to a caller's tool (agents.upstream.caller_tool_create) is guarded, routed and reviewed like
any other. When it is approved (by policy, a person, or an SLA default) Countersign does not execute
it: the approval's transaction issues a Grant bound to the SHA-256 of the canonical approved (agent,
tool, arguments) (core.canonical.call_digest), the edited ones if a reviewer edited them. Then the agent:

1. redeems the grant with the arguments it is about to execute (`grant_redeem`): single-use, before
   it expires, and only if they hash to the grant's digest. The action is `executing`;
2. executes, and reports the outcome with the grant (`grant_report`): the action is `executed` or
   `failed`. A second report, or one with other arguments, is refused (409).

Every refusal is audited. A grant never redeemed before it expires is audited as unused (the action
`expired`); a redeemed one whose report does not come in time leaves the action `in_doubt` for a
person (`grants_sweep`), and a late report still settles it unless a person did first.

Lock order: the action (its compare-and-set), then its grant; counters and the audit append last
(core.transactions).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import transaction
from django.utils import timezone

from approvals.models import ActionRequest, ActionStatus, Grant, GrantStatus
from approvals.transitions import action_transition, grant_transition
from audit.services import Actor, record
from core import counters
from core.canonical import NotCanonical, call_digest
from core.errors import Conflict
from live.push import ACTION_CLOSED, OPS_CHANGED, push

SALT = "countersign.grant"
T = TypeVar("T")


def grant_token(grant: Grant) -> str:
    """The grant as the agent holds it: its id and digest, signed (an edited token does not verify)."""
    return signing.dumps({"grant": grant.pk, "digest": grant.digest}, salt=SALT)


def grant_issue(action: ActionRequest) -> Grant:
    """In the transaction that approved a caller's call: leave to execute it, bound to the approved arguments."""
    now = timezone.now()
    grant = Grant.objects.create(
        action=action,
        digest=call_digest(agent=action.agent.slug, tool=action.tool, arguments=action.arguments),
        expires_at=now + timedelta(seconds=settings.GRANT_SECONDS),
    )
    record(
        actor=Actor.system("grants"),
        event="grant.issued",
        target=action,
        agent_id=action.agent_id,
        after={"grant": grant.pk, "digest": grant.digest, "expires_at": grant.expires_at.isoformat()},
    )
    return grant


class GrantRefused(Conflict):
    code = "grant_refused"


def grant_redeem(*, action: ActionRequest, actor: AbstractBaseUser, token: str, arguments: Any) -> Grant:
    """The agent executes the approved call now: single-use, before expiry, with exactly the approved arguments."""

    def redeem() -> Grant:
        grant = _checked(action, token=token, arguments=arguments)
        now = timezone.now()
        if not action_transition(
            action, from_statuses=(ActionStatus.APPROVED, ActionStatus.AUTO_APPROVED), to=ActionStatus.EXECUTING
        ):
            raise _why_not(grant, wanted=GrantStatus.ISSUED)
        # Expiry is part of the compare-and-set: a sweep that expires it at the same moment wins or loses whole.
        if not grant_transition(
            Grant.objects.filter(pk=grant.pk, expires_at__gt=now),
            from_status=GrantStatus.ISSUED,
            to=GrantStatus.REDEEMED,
            redeemed_at=now,
            report_due_at=now + timedelta(seconds=settings.GRANT_REPORT_SECONDS),
        ):
            raise _why_not(grant, wanted=GrantStatus.ISSUED)
        record(
            actor=actor,
            event="grant.redeemed",
            target=action,
            agent_id=action.agent_id,
            after={"grant": grant.pk, "digest": grant.digest},
        )
        grant.refresh_from_db()
        return grant

    return _audited(action, actor, redeem, what="redeem", arguments=arguments)


def grant_report(
    *,
    action: ActionRequest,
    actor: AbstractBaseUser,
    token: str,
    arguments: Any,
    result: Any = None,
    error: str = "",
) -> ActionRequest:
    """What came of a redeemed grant's call: its result, or its error. Once; a late one settles an in-doubt action."""

    def report() -> ActionRequest:
        grant = _checked(action, token=token, arguments=arguments)
        now = timezone.now()
        to = ActionStatus.FAILED if error else ActionStatus.EXECUTED
        late = grant.report_due_at is not None and grant.report_due_at <= now
        if not action_transition(
            action,
            from_statuses=(ActionStatus.EXECUTING, ActionStatus.IN_DOUBT),
            to=to,
            result=None if error else result,
            error=error,
            executed_at=now,
        ):
            raise _why_not(grant, wanted=GrantStatus.REDEEMED)
        if not grant_transition(
            Grant.objects.filter(pk=grant.pk),
            from_status=GrantStatus.REDEEMED,
            to=GrantStatus.REPORTED,
            reported_at=now,
        ):
            raise _why_not(grant, wanted=GrantStatus.REDEEMED)
        record(
            actor=actor,
            event="action.executed" if to == ActionStatus.EXECUTED else "action.failed",
            target=action,
            agent_id=action.agent_id,
            after={
                "by": "caller",
                "grant": grant.pk,
                "result": None if error else result,
                "error": error or None,
                "late": late,
            },
        )
        failed = to == ActionStatus.FAILED
        counters.bump(
            action.agent_id,
            executions=1,
            execution_failures=int(failed),
            auto_executed=int(action.route == "auto" and not failed),
        )
        counters.bump_tool(action.agent_id, action.tool, calls=1, errors=int(failed))
        push(ACTION_CLOSED, action_id=action.pk)
        if late:
            push(OPS_CHANGED, agent_id=action.agent_id)
        return ActionRequest.objects.select_related("agent", "claimed_by", "decision__reviewer", "grant").get(
            pk=action.pk
        )

    return _audited(action, actor, report, what="report", arguments=arguments)


def _audited(
    action: ActionRequest, actor: AbstractBaseUser, attempt: Callable[[], T], *, what: str, arguments: Any
) -> T:
    """Run `attempt` in a savepoint; a refusal it raises is audited (that much commits) and raised."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                return attempt()
        except GrantRefused as refusal:
            record(
                actor=actor,
                event=f"grant.{what}_refused",
                target=action,
                agent_id=action.agent_id,
                after={"code": refusal.code, "reason": refusal.message, "arguments": arguments},
            )
            refused = refusal
    raise refused


def _checked(action: ActionRequest, *, token: str, arguments: Any) -> Grant:
    """The action's grant, if `token` is it and `arguments` are the ones it was issued for."""
    grant = Grant.objects.filter(action_id=action.pk).first()
    if grant is None:
        raise GrantRefused(
            f"action {action.pk} has no grant (it is {action.status}): "
            "only an approved call to a caller's tool has one",
            code="no_grant",
        )
    try:
        signed = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        signed = None
    if not isinstance(signed, dict) or signed.get("grant") != grant.pk or signed.get("digest") != grant.digest:
        raise GrantRefused("this is not the grant of this action (or it was altered)", code="grant_invalid")
    try:
        digest = call_digest(agent=action.agent.slug, tool=action.tool, arguments=arguments)
    except NotCanonical:
        digest = "none: the arguments hold a number no JSON double is"
    if digest != grant.digest:
        raise GrantRefused(
            "these arguments are not the approved ones: execute exactly the grant's arguments",
            code="arguments_mismatch",
            details={"grant_digest": grant.digest, "digest": digest},
        )
    return grant


def _why_not(grant: Grant, *, wanted: str) -> GrantRefused:
    """Why a grant in `wanted` state could not move on: what it is in now."""
    grant.refresh_from_db()
    if grant.status == GrantStatus.ISSUED and grant.expires_at <= timezone.now():
        return GrantRefused("the grant expired before it was redeemed", code="grant_expired")
    if grant.status == GrantStatus.REDEEMED and wanted == GrantStatus.REDEEMED:
        status = ActionRequest.objects.filter(pk=grant.action_id).values_list("status", flat=True).get()
        return GrantRefused(f"a person already recorded what happened ({status})", code="already_resolved")
    if grant.status == GrantStatus.REDEEMED:
        return GrantRefused(
            f"the grant was already redeemed at {grant.redeemed_at}: it is single-use", code="grant_used"
        )
    if grant.status == GrantStatus.REPORTED:
        return GrantRefused("the outcome was already reported: it is reported once", code="already_reported")
    if grant.status == GrantStatus.EXPIRED:
        return GrantRefused("the grant expired before it was redeemed", code="grant_expired")
    return GrantRefused("the grant was not redeemed: redeem it before executing", code="grant_not_redeemed")


def grants_sweep() -> dict[str, int]:
    """Expire grants never redeemed (audited as unused); put actions whose report is overdue in doubt. Idempotent."""
    now = timezone.now()
    counts = {"unused": 0, "in_doubt": 0}
    for grant in Grant.objects.filter(status=GrantStatus.ISSUED, expires_at__lte=now).select_related("action")[:500]:
        with transaction.atomic():
            action = grant.action
            if not action_transition(
                action, from_statuses=(ActionStatus.APPROVED, ActionStatus.AUTO_APPROVED), to=ActionStatus.EXPIRED
            ):
                continue  # redeemed meanwhile
            grant_transition(Grant.objects.filter(pk=grant.pk), from_status=GrantStatus.ISSUED, to=GrantStatus.EXPIRED)
            record(
                actor=Actor.system("grants"),
                event="grant.unused",
                target=action,
                agent_id=action.agent_id,
                after={"grant": grant.pk, "expired_at": grant.expires_at.isoformat()},
            )
            push(ACTION_CLOSED, action_id=action.pk)
            counts["unused"] += 1
    overdue = Grant.objects.filter(status=GrantStatus.REDEEMED, report_due_at__lte=now).select_related("action")
    for grant in overdue.filter(action__status=ActionStatus.EXECUTING)[:500]:
        with transaction.atomic():
            if not action_transition(grant.action, from_statuses=(ActionStatus.EXECUTING,), to=ActionStatus.IN_DOUBT):
                continue  # reported meanwhile
            record(
                actor=Actor.system("grants"),
                event="action.in_doubt",
                target=grant.action,
                agent_id=grant.action.agent_id,
                after={"grant": grant.pk, "reason": "the agent redeemed the grant but reported no outcome in time"},
            )
            push(OPS_CHANGED, agent_id=grant.action.agent_id)
            counts["in_doubt"] += 1
    return counts
