"""The gateway's writes: open a tools/call (or join the identical one still open), and close it once answered."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.guard import GuardRefusal
from agents.models import Agent
from approvals import routing
from audit.chain import canonical_value
from gateway.models import GatewayCall


def call_key(tool: str, arguments: Any) -> str:
    """SHA-256 of the canonical (tool, arguments): key order, 1.0 against 1 and the like do not matter."""
    body = json.dumps(
        {"tool": tool, "arguments": canonical_value(arguments)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Opened:
    call: GatewayCall | None
    joined: bool = False
    refusal: GuardRefusal | None = None


def gateway_call_open(
    *,
    agent: Agent,
    actor: AbstractBaseUser,
    tool: str,
    arguments: dict[str, Any],
    confidence: float,
    rationale: str,
) -> Opened:
    """Route a tools/call like any proposed call, or join the identical call whose answer is still owed.

    Lock order: the open call's row (or its slot in the unique index) first, then what routing
    takes (domain rows, counters, the audit append last).
    """
    key = call_key(tool, arguments)
    for attempt in range(2):
        try:
            with transaction.atomic():
                open_call = (
                    GatewayCall.objects.select_for_update()
                    .filter(agent=agent, key=key, answered_at__isnull=True)
                    .first()
                )
                if open_call is not None:
                    return Opened(call=open_call, joined=True)
                # A concurrent identical call blocks on this insert until we commit, then fails and joins.
                call = GatewayCall.objects.create(agent=agent, key=key)
                outcome = routing.route_tool_call(
                    agent=agent,
                    run=None,
                    tool=tool,
                    arguments=arguments,
                    confidence=confidence,
                    rationale=rationale,
                    actor=actor,
                    call_id=f"mcp-{call.pk}",
                )
                if outcome.refusal is not None:
                    transaction.set_rollback(True)  # a refused call leaves nothing behind, the claim included
                    return Opened(call=None, refusal=outcome.refusal)
                call.action = outcome.action
                call.save(update_fields=["action"])
                return Opened(call=call)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def gateway_call_answered(*, call_id: int) -> bool:
    """Close the call once a caller got its final answer; False if another caller closed it first."""
    # Compare-and-set: two callers waiting on one call both get the answer, one closes it.
    return GatewayCall.objects.filter(pk=call_id, answered_at__isnull=True).update(answered_at=timezone.now()) == 1
