from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase


class ProviderName(models.TextChoices):
    SCRIPTED = "scripted", "Scripted (offline stand-in for an LLM)"


class Agent(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    provider = models.CharField(max_length=32, choices=ProviderName.choices, default=ProviderName.SCRIPTED)
    model = models.CharField(max_length=200, blank=True, help_text="Model name, or the script for `scripted`.")
    system_prompt = models.TextField(blank=True)
    input_schema = models.JSONField(default=dict, blank=True, help_text="JSON Schema every run input must match.")
    review_threshold = models.FloatField(
        default=0.8,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Tool calls with a confidence below this go to a reviewer.",
    )
    max_steps = models.PositiveIntegerField(default=8, validators=[MinValueValidator(1), MaxValueValidator(200)])
    is_paused = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        permissions = [
            ("review_agent", "Review the agent's actions"),
            ("operate_agent", "Start, pause and resume the agent's runs"),
            ("configure_agent", "Change the agent's configuration"),
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


# Allowed run transitions, in one place. Every change goes through
# agents.services.run_transition, a compare-and-set on the current status.
RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset(
        {RunStatus.QUEUED, RunStatus.WAITING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.HALTED}
    ),
    RunStatus.WAITING: frozenset({RunStatus.QUEUED, RunStatus.CANCELLED}),
    RunStatus.HALTED: frozenset({RunStatus.QUEUED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}
RUN_FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class Run(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs")
    input = models.JSONField()
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    step_count = models.PositiveIntegerField(default=0)
    result = models.TextField(blank=True)
    halt_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["agent", "status"], name="run_agent_status_idx")]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.agent_id}"


class StepKind(models.TextChoices):
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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="step_run_seq_unique")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.kind}"
