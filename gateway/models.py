"""What the MCP gateway keeps of a tools/call: which action answers it, and whether the answer was given."""

from __future__ import annotations

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
    # MCP Tasks (gateway.mcp_tasks): set when a client asked for the call as a task. One task per call:
    # an identical task-augmented call joins the call and is given the same task.
    task_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    task_created_at = models.DateTimeField(null=True, blank=True)
    # task_created_at + the ttl it was given: after this, the task is gone (its call and action stay).
    task_expires_at = models.DateTimeField(null=True, blank=True)
    # The requestor cancelled the task (tasks/cancel): it stays cancelled whatever the action does next.
    task_cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "key"], condition=models.Q(answered_at__isnull=True), name="gateway_call_open_once"
            )
        ]
        indexes = [
            # tasks/list: an agent's tasks, newest first, by keyset on the id.
            models.Index(
                fields=["agent", "-id"], condition=models.Q(task_id__isnull=False), name="gateway_call_agent_tasks"
            ),
        ]

    def __str__(self) -> str:
        return f"gateway call {self.pk} ({self.agent_id}, {self.key[:8]})"
