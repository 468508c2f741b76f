from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.selectors import verify_chain


class Command(BaseCommand):
    help = "Recompute the audit hash chain; exit non-zero on any edited, deleted, reordered or missing row."

    def handle(self, *args: Any, **options: Any) -> None:
        report = verify_chain()
        self.stdout.write(f"events: {report.count}")
        self.stdout.write(f"head: {report.head_hash}")
        if not report.ok:
            for problem in report.problems:
                self.stderr.write(problem)
            raise CommandError(f"audit chain BROKEN ({len(report.problems)} problem(s))")
        self.stdout.write("chain: OK")
