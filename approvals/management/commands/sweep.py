from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from agents.services import runs_sweep
from approvals.execution import executions_sweep


class Command(BaseCommand):
    help = "Republish stranded executions and settle interrupted ones (what celery beat runs every few seconds)."

    def handle(self, *args: Any, **options: Any) -> None:
        counts = executions_sweep()
        self.stdout.write(", ".join(f"{k}: {v}" for k, v in counts.items()))
        runs = runs_sweep()
        self.stdout.write("runs: " + ", ".join(f"{k}: {v}" for k, v in runs.items()))
