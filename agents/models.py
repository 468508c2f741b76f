from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase


class ProviderName(models.TextChoices):
    SCRIPTED = "scripted", "Scripted (offline stand-in for an LLM)"
    OPENAI = "openai", "OpenAI-compatible chat completions"


class BreakerPolicy(models.TextChoices):
    HALT = "halt", "Halt the run"
    DEGRADE = "degrade", "Tell the agent the tool is unavailable and go on"


def validate_endpoint_url(value: str) -> None:
    """An endpoint Countersign sends to (a provider, an HTTP tool, an MCP server, a webhook) is http(s) with a
    host that can be looked up: checked when it is configured, not found out at the first call."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError:
        raise ValidationError("Enter an http:// or https:// URL.", code="invalid_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValidationError("Enter an http:// or https:// URL with a host.", code="invalid_url")
    try:
        httpx.URL(value)  # as the calls will parse it
        parts.hostname.encode("idna")  # as the connection will look it up (no label over 63 characters)
    except (httpx.InvalidURL, UnicodeError):
        raise ValidationError("Enter a URL whose host can be looked up.", code="invalid_url") from None


class Agent(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    provider = models.CharField(max_length=32, choices=ProviderName.choices, default=ProviderName.SCRIPTED)
    model = models.CharField(max_length=200, blank=True, help_text="Model name, or the script for `scripted`.")
    base_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_endpoint_url],
        help_text="OpenAI-compatible endpoint, e.g. http://vllm:8000/v1",
    )
    api_key_ref = models.CharField(
        max_length=300,
        blank=True,
        help_text="Where the API key lives: env:VARIABLE or file:/run/secrets/name. Never the key itself.",
    )
    # Below Celery's soft time limit (240 s): a model call must end before its task is killed.
    request_timeout = models.FloatField(default=30.0, validators=[MinValueValidator(0.1), MaxValueValidator(200)])
    system_prompt = models.TextField(blank=True)
    input_schema = models.JSONField(default=dict, blank=True, help_text="JSON Schema every run input must match.")
    review_threshold = models.FloatField(
        default=0.8,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Tool calls with a confidence below this go to a reviewer.",
    )
    max_steps = models.PositiveIntegerField(default=8, validators=[MinValueValidator(1), MaxValueValidator(200)])
    run_timeout_seconds = models.PositiveIntegerField(
        default=900, validators=[MinValueValidator(1)], help_text="Wall-clock limit of one run, waiting excluded."
    )
    max_tokens_per_run = models.PositiveIntegerField(null=True, blank=True)
    max_cost_per_run = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    max_tokens_per_day = models.PositiveIntegerField(null=True, blank=True)
    max_cost_per_day = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    loop_limit = models.PositiveIntegerField(
        default=3, validators=[MinValueValidator(2)], help_text="The same failing call this many times halts the run."
    )
    breaker_threshold = models.PositiveIntegerField(default=5, validators=[MinValueValidator(1)])
    breaker_cooldown_seconds = models.PositiveIntegerField(default=60)
    on_breaker_open = models.CharField(max_length=16, choices=BreakerPolicy.choices, default=BreakerPolicy.HALT)
    prompt_regression_margin = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="A proposed prompt whose agreement with the golden set falls more than this (0.05 is 5 points) "
        "below the active version's cannot be activated in one click.",
    )
    is_paused = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        permissions = [
            ("review_agent", "Review the agent's actions"),
            ("operate_agent", "Start, pause and resume the agent's runs"),
            ("configure_agent", "Change the agent's configuration"),
            ("review_escalated_agent", "Review the agent's escalated actions (second tier)"),
        ]

    def __str__(self) -> str:
        return self.slug


# Direct foreign-key permission tables: guardian then filters with a join on
# agent_id instead of a generic (content_type, object_pk text) lookup.
class AgentUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(Agent, on_delete=models.CASCADE)


class AgentGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Agent, on_delete=models.CASCADE)


class ToolMode(models.TextChoices):
    AUTO = "auto", "Auto when confident and within limits"
    REVIEW = "review", "Always review"
    DENY = "deny", "Deny"


class AgentTool(models.Model):
    """A registry tool enabled for one agent, with its routing policy."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tools")
    tool = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    mode = models.CharField(max_length=16, choices=ToolMode.choices, default=ToolMode.REVIEW)
    auto_max_magnitude = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Above this magnitude (amount, record count) a call goes to review.",
    )
    max_magnitude = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Hard limit: above this magnitude a call is denied or forced to review (see over_limit).",
    )
    over_limit = models.CharField(max_length=16, choices=[("deny", "Deny"), ("review", "Force review")], default="deny")
    timeout_seconds = models.FloatField(default=10.0, validators=[MinValueValidator(0.1)])
    max_retries = models.PositiveIntegerField(default=2, validators=[MaxValueValidator(10)])
    # Review policy: how many distinct people must approve, how long they have,
    # and what happens when nobody decides in time (fail closed unless configured).
    required_approvals = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    min_confidence = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Overrides the agent's review threshold for this tool.",
    )
    reviewer_group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Only members of this group (among the agent's reviewers) review this tool's calls.",
    )
    sla_minutes = models.PositiveIntegerField(default=60, validators=[MinValueValidator(1)])
    on_timeout = models.CharField(
        max_length=16,
        choices=[("reject", "Reject (fail closed)"), ("escalate", "Escalate, then reject"), ("approve", "Approve")],
        default="reject",
    )
    # The trust loop (approvals.calibration, approvals.spot_checks).
    target_error_rate = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0001), MaxValueValidator(0.5)],
        help_text="Route on calibrated confidence: auto only where the 95 % upper bound of the estimated "
        "wrong-approval rate is at most this (0.01 is 1 %). Empty: the static threshold.",
    )
    spot_check_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of auto-approved calls sampled for a reviewer to grade after the fact (0.05 is 5 %).",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "tool"], name="agent_tool_unique")]

    def __str__(self) -> str:
        return f"{self.agent.slug}:{self.tool}"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    HALTED = "halted"


class RunOutcome(models.TextChoices):
    """What a run came to, beyond its lifecycle status: a run that finished without acting did not succeed."""

    DONE = "done", "done"  # it acted (or answered without needing to), as proposed
    DONE_WITH_EDITS = "done_with_edits", "done with edits"  # it acted, on arguments a reviewer changed
    REFUSED = "refused", "refused"  # its last call was refused by the guard, and it did nothing
    REJECTED = "rejected", "rejected"  # a reviewer (or the review deadline) rejected its last call, and it did nothing
    DENIED = "denied", "denied"  # policy denied its last call, and it did nothing
    FAILED = "failed", "failed"
    HALTED = "halted", "halted"
    CANCELLED = "cancelled", "cancelled"


# Allowed run transitions, in one place. Every change goes through
# agents.services.run_transition, a compare-and-set on the current status.
RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset(
        {RunStatus.QUEUED, RunStatus.WAITING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.HALTED}
    ),
    RunStatus.WAITING: frozenset({RunStatus.QUEUED, RunStatus.CANCELLED}),
    # RUNNING -> CANCELLED is not allowed: a step in flight finishes first.
    RunStatus.HALTED: frozenset({RunStatus.QUEUED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}
RUN_FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class RunPriority(models.IntegerChoices):
    ROUTINE = 0
    URGENT = 9


class Run(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs")
    input = models.JSONField()
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    priority = models.PositiveSmallIntegerField(choices=RunPriority.choices, default=RunPriority.ROUTINE)
    prompt_version = models.ForeignKey(
        "agents.PromptVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    # A step in progress holds a lease, renewed by its worker's heartbeat; a run whose
    # lease ran out lost its worker. The token fences a worker whose lease was handed on.
    lease_until = models.DateTimeField(null=True, blank=True)
    step_token = models.CharField(max_length=16, blank=True, default="")
    # When its next step was last published; a queued run not picked up is republished.
    published_at = models.DateTimeField(default=timezone.now)
    tokens_used = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    running_seconds = models.FloatField(default=0.0, help_text="Time spent in steps; waiting for people excluded.")
    # Budgets count from here after an operator resumes a halted run.
    tokens_at_resume = models.PositiveIntegerField(default=0)
    cost_at_resume = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    step_count = models.PositiveIntegerField(default=0)
    result = models.TextField(blank=True)
    # Set with the status by agents.services.run_transition when the run finishes or halts; empty while it goes on.
    outcome = models.CharField(max_length=16, choices=RunOutcome.choices, blank=True)
    halt_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["agent", "status"], name="run_agent_status_idx"),
            # The run sweeper: queued and running runs only.
            models.Index(
                fields=["status", "published_at"],
                name="run_sweep_idx",
                condition=models.Q(status__in=["queued", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.agent_id}"


class StepKind(models.TextChoices):
    LLM_CALL = "llm_call", "Model call"
    PROPOSAL = "proposal", "Model proposal"
    GUARD = "guard", "Guard refusal"
    POLICY = "policy", "Policy decision"
    TOOL_RESULT = "tool_result", "Tool result"
    FINAL = "final", "Final answer"
    HALT = "halt", "Halted"


class Step(models.Model):
    """One entry of a run's trace."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=StepKind.choices)
    payload = models.JSONField(default=dict)
    latency_ms = models.FloatField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="step_run_seq_unique")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.kind}"


class BreakerState(models.TextChoices):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker(models.Model):
    """Consecutive failures of one agent's tool (or of its model calls, tool="")."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="breakers")
    tool = models.CharField(max_length=100, blank=True, help_text="Empty: the agent's model calls.")
    state = models.CharField(max_length=16, choices=BreakerState.choices, default=BreakerState.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "tool"], name="breaker_agent_tool_unique")]
        indexes = [models.Index(fields=["state"], name="breaker_state_idx")]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.tool or '(model)'} {self.state}"


class AgentDailyUsage(models.Model):
    """Tokens and cost per agent per UTC day, maintained as steps are recorded."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="daily_usage")
    day = models.DateField()
    tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    runs = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "day"], name="daily_usage_agent_day_unique")]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.day}"


class PromptStatus(models.TextChoices):
    PROPOSED = "proposed"
    ACTIVE = "active"
    RETIRED = "retired"
    REJECTED = "rejected"


class PromptVersion(models.Model):
    """One version of an agent's system prompt. A new version is active only after a second admin approves it."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="prompt_versions")
    number = models.PositiveIntegerField()
    text = models.TextField()
    note = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=16, choices=PromptStatus.choices, default=PromptStatus.PROPOSED)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["agent", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "number"], name="prompt_version_number_unique"),
            # At most one active version per agent.
            models.UniqueConstraint(
                fields=["agent"], condition=models.Q(status="active"), name="prompt_one_active_per_agent"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} v{self.number} ({self.status})"


class PromptEvaluation(models.Model):
    """A proposed prompt version replayed against the agent's golden set, beside the active version.

    The golden set is recorded runs whose outcome a person confirmed (runtime.golden);
    each case compares the first tool call each version proposes with the call the
    reviewer let run (the edited arguments, if edited).
    """

    version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="evaluations")
    baseline = models.ForeignKey(
        PromptVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="Active then."
    )
    cases = models.PositiveIntegerField(default=0)
    agreed = models.PositiveIntegerField(default=0)
    baseline_agreed = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["version", "-id"], name="prompt_evaluation_latest_idx")]

    def __str__(self) -> str:
        return f"evaluation of {self.version_id}: {self.agreed}/{self.cases}"

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.cases if self.cases else None

    @property
    def baseline_agreement(self) -> float | None:
        return self.baseline_agreed / self.cases if self.cases and self.baseline_id else None


class SourceKind(models.TextChoices):
    MCP_STDIO = "mcp_stdio", "MCP server over stdio"
    MCP_HTTP = "mcp_http", "MCP server over streamable HTTP"
    HTTP = "http", "HTTP tool"
    # Declared here, executed by the agent itself: an approval gives it a grant (approvals.grants).
    CALLER = "caller", "Tool the agent executes itself"


class ToolSource(models.Model):
    """Where tools come from besides Countersign's code: an upstream MCP server, one HTTP endpoint, or one tool
    an agent running elsewhere executes itself.

    Secrets are referenced, never stored: a header or environment value may hold
    `{{env:COUNTERSIGN_SECRET_…}}` or `{{file:/run/secrets/…}}`, resolved when the source is called
    (agents.upstream.resolve_template).
    """

    slug = models.SlugField(max_length=40, unique=True, help_text="Prefixes its tools' names: <slug>__<tool>.")
    kind = models.CharField(max_length=16, choices=SourceKind.choices)
    command = models.CharField(max_length=500, blank=True, help_text="mcp_stdio: the program to start.")
    args = models.JSONField(default=list, blank=True, help_text="mcp_stdio: its arguments, a list of strings.")
    env = models.JSONField(default=dict, blank=True, help_text="mcp_stdio: extra environment (secret references).")
    url = models.URLField(max_length=500, blank=True, help_text="mcp_http: the endpoint.")
    headers = models.JSONField(default=dict, blank=True, help_text="Sent with each request (secret references).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    sync_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.slug


class UpstreamState(models.TextChoices):
    DISABLED = "disabled"  # discovered, never approved: offered to no agent
    ACTIVE = "active"  # approved as it is now
    SUSPENDED = "suspended"  # its definition changed after approval: refused until re-approved


class UpstreamTool(models.Model):
    """One tool of a source, as discovered (or, for an HTTP tool, as configured), and what an admin approved."""

    source = models.ForeignKey(ToolSource, on_delete=models.CASCADE, related_name="tools")
    upstream_name = models.CharField(max_length=128)
    name = models.CharField(max_length=100, unique=True, help_text="Its name in Countersign: <source>__<tool>.")
    description = models.TextField(blank=True)
    input_schema = models.JSONField(default=dict)
    annotations = models.JSONField(default=dict, blank=True)
    impact = models.CharField(max_length=16, help_text="read, write, destructive or financial (agents.tools.Impact).")
    # How a declared tool is called. Any: magnitude_pointer. An HTTP tool: method, url (a template of the
    # arguments), timeout, retries, idempotency_header. A caller's tool: reversible.
    spec = models.JSONField(default=dict, blank=True)
    # SHA-256 of the canonical (description, input schema, annotations): a change after approval suspends it.
    definition_hash = models.CharField(max_length=64)
    approved_hash = models.CharField(max_length=64, blank=True)
    approved_definition = models.JSONField(null=True, blank=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=16, choices=UpstreamState.choices, default=UpstreamState.DISABLED)
    # What the screening for injected instructions found in its description (empty: nothing).
    screening = models.TextField(blank=True)
    discovered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "upstream_name"], name="upstream_tool_once")]

    def __str__(self) -> str:
        return self.name

    def definition(self) -> dict[str, object]:
        return {"description": self.description, "input_schema": self.input_schema, "annotations": self.annotations}
