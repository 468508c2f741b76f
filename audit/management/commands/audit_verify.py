from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.selectors import verify_chain


class Command(BaseCommand):
    help = (
        "Recompute the keyed audit hash chain and compare it with the sealed checkpoints and the anchors outside "
        "the database; exit non-zero on any edited, deleted, reordered, forged or missing row, or a cut-off tail."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = verify_chain()
        self.stdout.write(f"events: {report.count}")
        self.stdout.write(f"head: {report.head_hash}")
        self.stdout.write(f"checkpoints checked: {report.checkpoints_checked}")
        self.stdout.write(f"anchors checked: {report.anchors_checked}")
        if report.reanchored:
            self.stdout.write(f"rows accepted by an audited re-anchoring: {report.reanchored}")
        if not report.ok:
            for problem in report.problems:
                self.stderr.write(problem)
            raise CommandError(f"audit chain BROKEN ({len(report.problems)} problem(s))")
        self.stdout.write("chain: OK")
