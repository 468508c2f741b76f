from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from approvals.queue import queue_counts_rebuild


class Command(BaseCommand):
    help = "Recompute the per-agent pending counts from the actions (a repair tool)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"queues: {queue_counts_rebuild()}")
