"""What the MCP gateway keeps of a tools/call: which action answers it, and whether the answer was given."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from agents.models import Agent
from approvals.models import ActionRequest


class GatewayCall(models.Model):
    """One governed tools/call through an agent's MCP endpoint.

    An identical call (same agent, tool and canonical arguments) made before the answer was
    delivered joins this one instead of opening a second action: a client that timed out and
    retries, or two copies of an agent, wait on one request. The unique index on the open
    rows is what makes the join race-free: a concurrent identical call blocks on it, fails,
    and joins.
    """

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="+")
    # SHA-256 of the canonical JSON of (tool, arguments): gateway.services.call_key.
    key = models.CharField(max_length=64)
    # Set in the transaction that opens the call; null only inside it.
    action = models.OneToOneField(
        ActionRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="gateway_call"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # When a caller was given the final answer: from then on an identical call is a new call.
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "key"], condition=models.Q(answered_at__isnull=True), name="gateway_call_open_once"
            )
        ]

    def __str__(self) -> str:
        return f"gateway call {self.pk} ({self.agent_id}, {self.key[:8]})"


class GatewayTask(models.Model):
    """A requestor's MCP task on a gateway call (protocol revision 2025-11-25).

    Bound to who asked (the token's user) and to the agent (through the call): only that user, at
    that agent's endpoint, finds it. Two requestors of one identical call each get a task of their
    own on the one call; the same requestor asking again gets the task it has.
    """

    # Unguessable: secrets.token_urlsafe(24), 192 bits.
    task_id = models.CharField(max_length=64, unique=True)
    call = models.ForeignKey(GatewayCall, on_delete=models.PROTECT, related_name="tasks")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    # created_at + the ttl it was given: after this the task is gone for the client (its call and action stay).
    expires_at = models.DateTimeField()
    # tasks/cancel: it stays cancelled whatever the action does next.
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # tasks/list: a requestor's tasks, newest first, by keyset on the id.
            models.Index(fields=["owner", "-id"], name="gateway_task_owner_newest"),
        ]

    def __str__(self) -> str:
        return f"task {self.task_id[:8]}… on call {self.call_id}"
