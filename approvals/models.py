from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from agents.models import Agent, Run
from agents.tools import get_tool
from approvals.risk import RISK_PARTS

# The execution task (approvals.tasks), published by name: the tasks module imports the services.
EXECUTE_ACTION = "approvals.execute_action"


class ActionStatus(models.TextChoices):
    PENDING = "pending"
    AUTO_APPROVED = "auto_approved"
    APPROVED = "approved"
    REJECTED = "rejected"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    EXECUTING = "executing"
    EXECUTED = "executed"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"
    COMPENSATED = "compensated"


# Allowed action transitions, in one place. Each is applied as a compare-and-set
# (UPDATE ... WHERE status = <expected>) in approvals.decisions, .queue and .execution.
ACTION_TRANSITIONS: dict[str, frozenset[str]] = {
    ActionStatus.PENDING: frozenset(
        {ActionStatus.APPROVED, ActionStatus.REJECTED, ActionStatus.EXPIRED, ActionStatus.CANCELLED}
    ),
    # A caller's tool: the agent redeems its grant (executing), or lets it expire unused (expired).
    ActionStatus.AUTO_APPROVED: frozenset({ActionStatus.EXECUTING, ActionStatus.EXPIRED}),
    ActionStatus.APPROVED: frozenset({ActionStatus.EXECUTING, ActionStatus.EXPIRED}),
    ActionStatus.EXECUTING: frozenset({ActionStatus.EXECUTED, ActionStatus.FAILED, ActionStatus.IN_DOUBT}),
    # A person resolves an in-doubt execution by confirming what happened.
    ActionStatus.IN_DOUBT: frozenset({ActionStatus.EXECUTED, ActionStatus.FAILED}),
    ActionStatus.EXECUTED: frozenset({ActionStatus.COMPENSATED}),
    ActionStatus.REJECTED: frozenset(),
    ActionStatus.DENIED: frozenset(),
    ActionStatus.EXPIRED: frozenset(),
    ActionStatus.CANCELLED: frozenset(),
    ActionStatus.FAILED: frozenset(),
    ActionStatus.COMPENSATED: frozenset(),
}


def in_declared_order(mapping: Any, names: Sequence[str]) -> list[tuple[str, Any]]:
    """A JSON object's items in the order `names` declares (PostgreSQL's jsonb keeps keys in its own), others last."""
    if not isinstance(mapping, dict):
        return []
    rank = {name: i for i, name in enumerate(names)}
    return sorted(mapping.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


class ActionRequest(models.Model):
    """A tool call an agent proposed, with how policy routed it and what became of it."""

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="actions")
    # Null for actions submitted over the API by an agent running elsewhere.
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.PROTECT, related_name="actions")
    # The sub-run a coordinator's `delegate` action started (at most one); its result finishes the action.
    subrun = models.OneToOneField(Run, null=True, blank=True, on_delete=models.PROTECT, related_name="delegated_by")
    tool = models.CharField(max_length=100)
    # Executed by the agent that asked (a caller's tool): approval gives it a Grant instead of an Execution.
    caller_executes = models.BooleanField(default=False)
    call_id = models.CharField(max_length=100, blank=True, help_text="The model's id for this tool call.")
    arguments = models.JSONField()
    proposed_arguments = models.JSONField(help_text="As the agent proposed them, before any edit.")
    # The tool's argument names in its declared order, taken when the call is routed: lists show the
    # arguments in that order (jsonb keeps keys in its own) without looking the tool up per row.
    argument_order = models.JSONField(default=list, blank=True)
    confidence = models.FloatField()
    rationale = models.TextField(blank=True)
    impact = models.CharField(max_length=16)
    magnitude = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    route = models.CharField(max_length=16)
    route_reason = models.TextField()
    risk_flags = models.JSONField(default=list, blank=True)
    # Inbox order: riskier first, then the nearest deadline. The score is the sum of
    # its parts (approvals.risk: impact, stake, doubt, flags, urgency), kept for people.
    risk_score = models.PositiveSmallIntegerField(default=0)
    risk_parts = models.JSONField(default=dict, blank=True)
    risk_basis = models.CharField(max_length=200, blank=True, help_text="What the stake was measured against.")
    # What the tool found when the call was routed ({"code", "message"}): shown as warnings.
    findings = models.JSONField(default=list, blank=True)
    warn_at = models.DateTimeField(null=True, blank=True, help_text="Half of the SLA: reviewers are warned.")
    due_at = models.DateTimeField(null=True, blank=True)
    warned_at = models.DateTimeField(null=True, blank=True)
    # 0: a configuration change waiting for a second admin; 1: the agent's reviewers; 2: escalated.
    tier = models.PositiveSmallIntegerField(default=1)
    reviewer_group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    required_approvals = models.PositiveSmallIntegerField(default=1)
    on_timeout = models.CharField(max_length=16, default="reject")
    # An advisory lease: others see who is working on it, and until when.
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Who submitted it over the API (separation of duties: they may not approve it).
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=ActionStatus.choices)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "action"
        indexes = [
            models.Index(fields=["status", "agent", "-id"], name="action_status_agent_idx"),
            # The inbox's order and keyset, over pending rows only (a small slice of all history).
            # Scanned in order with the permission filter applied on the way, the
            # scan stops after one page instead of sorting every visible pending row.
            models.Index(
                models.F("risk_score").desc(),
                "due_at",
                "id",
                name="action_inbox_idx",
                condition=models.Q(status="pending"),
            ),
            # Queue counts per agent and the SLA job, also over pending rows only.
            models.Index(
                fields=["agent", "tier"], name="action_pending_agent_idx", condition=models.Q(status="pending")
            ),
            models.Index(fields=["due_at"], name="action_pending_due_idx", condition=models.Q(status="pending")),
            models.Index(
                fields=["warn_at"],
                name="action_pending_warn_idx",
                condition=models.Q(status="pending", warned_at__isnull=True),
            ),
            # Past decisions on one agent's tool, latest first (the reviewer's context).
            models.Index(fields=["agent", "tool", "-id"], name="action_agent_tool_idx"),
        ]

    def __str__(self) -> str:
        return f"action {self.pk} {self.tool} ({self.status})"

    def argument_items(self) -> list[tuple[str, Any]]:
        """The arguments in the order the tool declares them."""
        names = self.argument_order
        if not names and (tool := get_tool(self.tool)) is not None:  # routed before the order was kept
            names = tool.field_names()
        return in_declared_order(self.arguments, names)

    def risk_part_items(self) -> list[tuple[str, int]]:
        """The score's parts in approvals.risk's order."""
        return in_declared_order(self.risk_parts, RISK_PARTS)

    def risk_summary(self) -> str:
        """The score's parts in one line, for a tooltip."""
        parts = " + ".join(f"{name} {points}" for name, points in self.risk_part_items())
        return f"risk {self.risk_score} = {parts}" + (f" (stake: {self.risk_basis})" if self.risk_basis else "")

    def feedback(self, outcome: str, *, arguments: Any = None, **detail: Any) -> dict[str, Any]:
        """What this call came to, in the one shape fed back to the agent as the tool's result."""
        return {
            "action_id": self.pk,
            "call_id": self.call_id,
            "tool": self.tool,
            "arguments": self.arguments if arguments is None else arguments,
            "outcome": outcome,
            **detail,
        }


class QueueCount(models.Model):
    """Pending actions per agent and tier, kept as work happens so queue counts stay O(agents).

    Changed only by approvals.queue.queue_count_add, in the transaction that
    moves an action into or out of `pending`; `manage.py rebuild_queue_counts`
    recomputes it from the actions.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="queue_counts")
    tier = models.PositiveSmallIntegerField()
    pending = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "tier"], name="queue_count_agent_tier_unique")]

    def __str__(self) -> str:
        return f"{self.agent_id}/{self.tier}: {self.pending}"


class Verdict(models.TextChoices):
    APPROVE = "approve"
    REJECT = "reject"
    EDIT = "edit"


class Approval(models.Model):
    """One person's approval toward a quorum; the Decision is written when the quorum is met."""

    action = models.ForeignKey(ActionRequest, on_delete=models.CASCADE, related_name="approvals")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    arguments = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["action", "reviewer"], name="approval_one_per_reviewer"),
        ]

    def __str__(self) -> str:
        return f"approval of {self.action_id} by {self.reviewer_id}"


class Notification(models.Model):
    """An in-app notice for one user (SLA warnings, escalations, halted runs)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    text = models.CharField(max_length=500)
    url = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "read_at", "-id"], name="notification_unread_idx")]

    def __str__(self) -> str:
        return self.text


class Decision(models.Model):
    """A person's decision on a pending action. One per action (the unique key is the race's backstop)."""

    action = models.OneToOneField(ActionRequest, on_delete=models.PROTECT, related_name="decision")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions")
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    arguments_before = models.JSONField()
    arguments_after = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.verdict} on {self.action_id} by {self.reviewer_id}"


class ExecutionStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"


# Every status write of an Execution (approvals.transitions.execution_transition) is checked against this.
EXECUTION_TRANSITIONS: dict[str, frozenset[str]] = {
    # A delivery claims it; only one wins.
    ExecutionStatus.PENDING: frozenset({ExecutionStatus.RUNNING}),
    # Finished, failed, handed back for a retry, or interrupted with an effect nobody can confirm.
    ExecutionStatus.RUNNING: frozenset(
        {ExecutionStatus.DONE, ExecutionStatus.FAILED, ExecutionStatus.PENDING, ExecutionStatus.IN_DOUBT}
    ),
    # A person who checked the outside system says whether it happened.
    ExecutionStatus.IN_DOUBT: frozenset({ExecutionStatus.DONE, ExecutionStatus.FAILED}),
    ExecutionStatus.DONE: frozenset(),
    ExecutionStatus.FAILED: frozenset(),
}


class Execution(models.Model):
    """The one execution of an approved action; its key makes the effect idempotent."""

    action = models.OneToOneField(ActionRequest, on_delete=models.PROTECT, related_name="execution")
    idempotency_key = models.CharField(max_length=80, unique=True)
    status = models.CharField(max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When its task was last published; the sweeper republishes a pending
    # execution only if this is old, so a slow queue is not flooded with copies.
    published_at = models.DateTimeField(default=timezone.now)
    # A claimed execution whose lease ran out was interrupted (its worker died).
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "published_at"], name="execution_status_published_idx")]

    def __str__(self) -> str:
        return f"execution {self.idempotency_key} ({self.status})"


class Grade(models.TextChoices):
    FINE = "fine", "Fine as it ran"
    SHOULD_EDIT = "should_edit", "Should have been edited"
    SHOULD_REJECT = "should_reject", "Should have been rejected"


class SpotCheck(models.Model):
    """An auto-approved action sampled for a person to grade after the fact (it never waits for the grade).

    Sampled with probability `rate` (the tool's spot_check_rate then), so a grade stands for
    1 / rate auto-approved actions when calibration is fitted (approvals.calibration).
    """

    action = models.OneToOneField(ActionRequest, on_delete=models.CASCADE, related_name="spot_check")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="spot_checks")
    tool = models.CharField(max_length=100)
    rate = models.FloatField()
    grade = models.CharField(max_length=16, choices=Grade.choices, blank=True)
    comment = models.TextField(blank=True)
    graded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    graded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # The spot-check queue: ungraded, newest first, keyset on id.
            models.Index(fields=["agent", "-id"], name="spot_check_open_idx", condition=models.Q(grade="")),
            models.Index(fields=["agent", "tool", "-id"], name="spot_check_agent_tool_idx"),
        ]

    def __str__(self) -> str:
        return f"spot check of {self.action_id} ({self.grade or 'open'})"

    @property
    def weight(self) -> float:
        return 1.0 / self.rate if self.rate > 0 else 1.0


class CalibrationMap(models.Model):
    """Per agent and tool: stated confidence mapped to observed agreement (isotonic), refitted periodically.

    `blocks` are the isotonic fit's steps, ascending: [lowest confidence, highest, agreement,
    weight, effective samples]. `tail` holds, for each step's lowest confidence c, the
    weighted wrong approvals and the one-sided upper bound of their rate among all samples
    with confidence >= c: [c, weight, wrong weight, effective samples, upper bound].
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="calibration_maps")
    tool = models.CharField(max_length=100)
    samples = models.PositiveIntegerField(default=0)
    reviewed = models.PositiveIntegerField(default=0)
    spot_checked = models.PositiveIntegerField(default=0)
    effective_samples = models.FloatField(default=0.0)
    blocks = models.JSONField(default=list, blank=True)
    tail = models.JSONField(default=list, blank=True)
    brier_raw = models.FloatField(null=True, blank=True, help_text="Brier score of the stated confidence.")
    brier_calibrated = models.FloatField(null=True, blank=True, help_text="Brier score of the calibrated one.")
    fitted_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "tool"], name="calibration_map_unique")]

    def __str__(self) -> str:
        return f"calibration of {self.agent_id}:{self.tool} (n={self.samples})"


class GrantStatus(models.TextChoices):
    ISSUED = "issued"  # the agent may execute the approved call, once, until it expires
    REDEEMED = "redeemed"  # the agent said it executes it now; its report is owed
    REPORTED = "reported"  # the outcome came back
    EXPIRED = "expired"  # never redeemed in time: audited as unused


# Every status write of a Grant (approvals.grants) is checked against this.
GRANT_TRANSITIONS: dict[str, frozenset[str]] = {
    GrantStatus.ISSUED: frozenset({GrantStatus.REDEEMED, GrantStatus.EXPIRED}),
    GrantStatus.REDEEMED: frozenset({GrantStatus.REPORTED}),
    GrantStatus.REPORTED: frozenset(),
    GrantStatus.EXPIRED: frozenset(),
}


class Grant(models.Model):
    """Leave for the agent that asked to execute an approved call itself: once, before it expires, and only
    with the arguments whose digest it holds (approvals.grants.call_digest)."""

    action = models.OneToOneField(ActionRequest, on_delete=models.PROTECT, related_name="grant")
    digest = models.CharField(max_length=64, help_text="SHA-256 of the canonical approved (agent, tool, arguments).")
    status = models.CharField(max_length=16, choices=GrantStatus.choices, default=GrantStatus.ISSUED)
    issued_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(help_text="Redeemed by then, or never.")
    redeemed_at = models.DateTimeField(null=True, blank=True)
    # A redeemed grant whose report has not come by then leaves its action in doubt for a person.
    report_due_at = models.DateTimeField(null=True, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The sweep: issued grants past their expiry, redeemed ones past their report.
            models.Index(fields=["expires_at"], name="grant_issued_idx", condition=models.Q(status="issued")),
            models.Index(fields=["report_due_at"], name="grant_redeemed_idx", condition=models.Q(status="redeemed")),
        ]

    def __str__(self) -> str:
        return f"grant for action {self.action_id} ({self.status})"


class DecisionWebhook(models.Model):
    """Where an agent running elsewhere is told of its decisions: each POST signed (HMAC-SHA256) and timestamped,
    retried with backoff until it is answered 2xx (approvals.webhooks). The secret is referenced, never stored."""

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, related_name="webhook")
    url = models.URLField(max_length=500)
    secret_ref = models.CharField(max_length=300, help_text="env:COUNTERSIGN_SECRET_… or file:/run/secrets/…")
    active = models.BooleanField(default=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"webhook of {self.agent_id}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # to be sent at next_attempt_at
    SENDING = "sending"  # claimed by a worker until lease_until
    DELIVERED = "delivered"  # answered 2xx
    FAILED = "failed"  # not answered 2xx after every attempt: an operator may send it again


# Every status write of a WebhookDelivery (approvals.webhooks) goes through these.
DELIVERY_TRANSITIONS: dict[str, frozenset[str]] = {
    DeliveryStatus.PENDING: frozenset({DeliveryStatus.SENDING}),
    DeliveryStatus.SENDING: frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.PENDING, DeliveryStatus.FAILED}),
    DeliveryStatus.DELIVERED: frozenset(),
    DeliveryStatus.FAILED: frozenset(),
}


class WebhookDelivery(models.Model):
    """One event for a webhook, and how sending it went: the delivery log operators read."""

    webhook = models.ForeignKey(DecisionWebhook, on_delete=models.CASCADE, related_name="deliveries")
    action = models.ForeignKey(ActionRequest, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=40)
    payload = models.JSONField(help_text="The action as the API showed it when the event happened.")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # A delivery an operator sent again points to the event's first delivery (approvals.webhooks.webhook_redeliver).
    redelivery_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        indexes = [
            # The delivery log, newest first, keyset on id.
            models.Index(fields=["webhook", "-id"], name="delivery_log_idx"),
            # The sweep: deliveries due (pending) or whose claim ran out (sending).
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due_idx",
                condition=models.Q(status__in=["pending", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.event} ({self.status})"

    @property
    def event_id(self) -> str:
        """The event's id in the body: its first delivery's, so a receiver can drop what it has seen."""
        return f"evt_{self.redelivery_of_id or self.pk}"
