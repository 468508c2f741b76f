"""Aggregates kept as work happens, so dashboards never scan history; and alert rules."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from agents.models import Agent, RunOutcome

# Runs that came to an end, counted apart by how (halted counts too: an operator must act).
RUN_ENDS = tuple(f"runs_{outcome.value}" for outcome in RunOutcome)

# Counters per agent per UTC hour. Each is incremented by core.counters.bump in the
# transaction of the event it counts (written by ops.stats).
HOUR_COUNTERS = (
    "runs_started",
    # One per agents.models.RunOutcome, counted when a run finishes or halts.
    "runs_done",
    "runs_done_with_edits",
    "runs_refused",
    "runs_rejected",
    "runs_denied",
    "runs_failed",
    "runs_halted",
    "runs_cancelled",
    "actions_routed",
    "routed_auto",
    "routed_review",
    "routed_deny",
    "guard_refusals",
    "decisions_approve",
    "decisions_edit",
    "decisions_reject",
    "decisions_expired",
    "escalations",
    "executions",
    "execution_failures",
    "auto_executed",
    "undos",
    "tokens",
)


class AgentHourStat(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="hour_stats")
    hour = models.DateTimeField()
    runs_started = models.PositiveIntegerField(default=0)
    runs_done = models.PositiveIntegerField(default=0)
    runs_done_with_edits = models.PositiveIntegerField(default=0)
    runs_refused = models.PositiveIntegerField(default=0)
    runs_rejected = models.PositiveIntegerField(default=0)
    runs_denied = models.PositiveIntegerField(default=0)
    runs_failed = models.PositiveIntegerField(default=0)
    runs_halted = models.PositiveIntegerField(default=0)
    runs_cancelled = models.PositiveIntegerField(default=0)
    actions_routed = models.PositiveIntegerField(default=0)
    routed_auto = models.PositiveIntegerField(default=0)
    routed_review = models.PositiveIntegerField(default=0)
    routed_deny = models.PositiveIntegerField(default=0)
    guard_refusals = models.PositiveIntegerField(default=0)
    decisions_approve = models.PositiveIntegerField(default=0)
    decisions_edit = models.PositiveIntegerField(default=0)
    decisions_reject = models.PositiveIntegerField(default=0)
    decisions_expired = models.PositiveIntegerField(default=0)
    escalations = models.PositiveIntegerField(default=0)
    executions = models.PositiveIntegerField(default=0)
    execution_failures = models.PositiveIntegerField(default=0)
    auto_executed = models.PositiveIntegerField(default=0)
    undos = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    review_seconds = models.FloatField(default=0.0, help_text="Reviewer time: claim to decision.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "hour"], name="hour_stat_agent_hour_unique")]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.hour:%Y-%m-%d %H}:00"


class ToolHourStat(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tool_hour_stats")
    tool = models.CharField(max_length=100)
    hour = models.DateTimeField()
    calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "tool", "hour"], name="tool_hour_stat_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.tool} {self.hour:%Y-%m-%d %H}:00"


# Log-scale upper bounds (seconds) of the latency histograms; the last is open.


class LatencyBucket(models.Model):
    """How many runs (or decisions) of an agent in an hour took at most LATENCY_BOUNDS[bucket] seconds."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="latency_buckets")
    hour = models.DateTimeField()
    metric = models.CharField(max_length=32)  # run_duration | decision_latency
    bucket = models.PositiveSmallIntegerField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "metric", "hour", "bucket"], name="latency_bucket_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.metric} {self.hour:%Y-%m-%d %H} b{self.bucket}"


class CalibrationBucket(models.Model):
    """Reviewed actions by the agent's stated confidence (tenths) and how people decided them."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="calibration")
    tool = models.CharField(max_length=100)
    day = models.DateField()
    bin = models.PositiveSmallIntegerField(help_text="floor(confidence * 10), 0..9")
    reviewed = models.PositiveIntegerField(default=0)
    agreed = models.PositiveIntegerField(default=0, help_text="Approved unchanged.")
    edited = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    confidence_sum = models.FloatField(default=0.0)
    brier_sum = models.FloatField(default=0.0, help_text="Sum of (confidence - agreed)^2.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "tool", "day", "bin"], name="calibration_bucket_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.tool} {self.day} bin {self.bin}"


class AlertKind(models.TextChoices):
    ESCALATION_SPIKE = "escalation_spike", "Escalation rate above its 7-day baseline (times the threshold)"
    FAILURE_RATE = "failure_rate", "Run failure rate in the last 24 h above threshold (0-1)"
    COST_BURN = "cost_burn", "Projected daily cost above threshold times the daily budget"
    SLA_BREACHES = "sla_breaches", "Pending actions past their SLA above threshold"
    BREAKER_OPEN = "breaker_open", "Any circuit breaker open"
    DRIFT = "drift", "Agreement, edit rate or confidence gap shifted from the agent's own baseline (z bound)"


# The thresholds each kind can use, so a rule that could never (or would always) fire is
# refused: (lowest, highest, whole numbers only), inclusive. Rates are fractions (0.25 is
# 25 %), as the kind labels say; factors multiply a baseline or a budget; counts count.
ALERT_THRESHOLDS: dict[str, tuple[float, float, bool]] = {
    AlertKind.ESCALATION_SPIKE: (1.0, 1000.0, False),
    AlertKind.FAILURE_RATE: (0.001, 1.0, False),
    AlertKind.COST_BURN: (0.01, 1000.0, False),
    AlertKind.SLA_BREACHES: (1.0, 1_000_000.0, True),
    AlertKind.BREAKER_OPEN: (0.0, 1_000_000.0, False),  # not used: any open breaker fires
    AlertKind.DRIFT: (1.0, 20.0, False),  # standard errors between the last day and the baseline
}


class AlertRule(models.Model):
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules", help_text="Empty: all."
    )
    threshold = models.FloatField(default=1.0)
    enabled = models.BooleanField(default=True)
    email = models.BooleanField(default=False, help_text="Also e-mail the agent's operators.")
    webhook_url = models.URLField(blank=True)
    webhook_secret_ref = models.CharField(
        max_length=300, blank=True, help_text="env:NAME or file:/path of the HMAC-SHA256 signing secret."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Alert(models.Model):
    """One firing of a rule for one agent; while it stays firing it is not sent again."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="alerts")
    message = models.CharField(max_length=500)
    value = models.FloatField(default=0.0)
    fired_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    webhook_status = models.CharField(max_length=100, blank=True)

    class Meta:
        constraints = [
            # Deduplication: one open alert per rule and agent.
            models.UniqueConstraint(
                fields=["rule", "agent"], condition=models.Q(resolved_at__isnull=True), name="alert_one_open"
            ),
        ]

    def __str__(self) -> str:
        return self.message
