from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ops.alerts import alerts_evaluate


class Command(BaseCommand):
    help = "Evaluate every alert rule once (what beat runs every minute)."

    def handle(self, *args: Any, **options: Any) -> None:
        counts = alerts_evaluate()
        self.stdout.write(", ".join(f"{k}: {v}" for k, v in counts.items()))
