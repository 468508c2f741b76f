from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.selectors import reanchor_plan
from audit.services import chain_reanchor


class Command(BaseCommand):
    help = (
        "Re-anchor a chain broken only by the number round trip (before the canonical form existed, a float such "
        "as 1e16 came back from PostgreSQL as an integer): the accepted rows are named in an audited event. Any "
        "other problem refuses."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reason", required=True, help="Why, for the audit trail (e.g. a ticket number).")
        parser.add_argument("--dry-run", action="store_true", help="Only say what would be accepted.")

    def handle(self, *args: Any, reason: str, dry_run: bool, **options: Any) -> None:
        plan = reanchor_plan() if dry_run else chain_reanchor(reason=reason, actor=None)
        for item in plan.explained:
            self.stdout.write(f"seq {item['seq']}: broken only by number forms; restated as {item['restated']}")
        if plan.unexplained:
            for problem in plan.unexplained:
                self.stderr.write(problem)
            raise CommandError("refused: the chain has problems a re-anchoring cannot explain")
        if not plan.explained:
            self.stdout.write("nothing to re-anchor")
        elif dry_run:
            self.stdout.write(f"{len(plan.explained)} row(s) would be accepted (dry run)")
        else:
            self.stdout.write(f"re-anchored: {len(plan.explained)} row(s) accepted in an audit.reanchored event")
