"""The push outbox: what changed, written in the transaction that changed it."""

from __future__ import annotations

from django.db import models


class Push(models.Model):
    """One push intent. The relay reads it after commit, renders it once per group and deletes it.

    A change that rolls back leaves no row, so nothing is pushed for it; a change that
    commits always leaves one, so its push survives a crash of the process that made it.
    """

    id = models.BigAutoField(primary_key=True)
    event = models.CharField(max_length=64)
    ids = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.event} {self.ids}"
