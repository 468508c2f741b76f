from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from approvals.sla import sla_tick


class Command(BaseCommand):
    help = "Warn at half the SLA; escalate or apply the timeout default to overdue actions (what beat runs)."

    def handle(self, *args: Any, **options: Any) -> None:
        counts = sla_tick()
        self.stdout.write(", ".join(f"{k}: {v}" for k, v in counts.items()))
