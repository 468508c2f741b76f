from __future__ import annotations

from django.db import models


class ActorType(models.TextChoices):
    USER = "user", "User"
    AGENT = "agent", "Agent"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """One link of the append-only, hash-chained audit trail.

    Written only by `audit.services.record`; never updated or deleted (on
    PostgreSQL a trigger refuses it). There are deliberately no foreign keys:
    deleting a user or an agent must not cascade into, or rewrite, the trail.
    """

    seq = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField()
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_label = models.CharField(max_length=150)
    event = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    agent_id = models.BigIntegerField(null=True, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    # Which AUDIT_CHAIN_KEY made `hash` (an HMAC); empty for rows of the unkeyed legacy chain.
    key_id = models.CharField(max_length=16, blank=True, default="")
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        indexes = [
            # The audit viewer filters by event type and by agent, newest first.
            models.Index(fields=["event", "seq"], name="audit_event_seq_idx"),
            models.Index(fields=["agent_id", "seq"], name="audit_agent_seq_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event} by {self.actor_label}"


# The stored fields of an event, in order: what the writer inserts and an export carries.
CHAIN_FIELDS = (
    "seq",
    "created_at",
    "actor_type",
    "actor_id",
    "actor_label",
    "event",
    "target_type",
    "target_id",
    "agent_id",
    "before",
    "after",
    "request_id",
    "prev_hash",
    "key_id",
    "hash",
)


class AuditCheckpoint(models.Model):
    """The chain's head at a moment, sealed with an HMAC of the chain key.

    Cutting rows off the end of the log leaves the chain itself consistent;
    a checkpoint that names a later seq (or a different hash at its seq) is
    how `audit_verify` notices. Checkpoints are append-only too. Someone who can
    delete rows can delete these as well: the anchors outside the database
    (`audit.anchors`) are what catches that.
    """

    seq = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    mac = models.CharField(max_length=64)
    chain_ok = models.BooleanField(default=True, help_text="Whether the chain verified when the checkpoint was taken.")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"checkpoint at #{self.seq}"
