from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from audit.services import checkpoint_take


class Command(BaseCommand):
    help = "Seal the audit chain's current head (what beat runs every few minutes)."

    def handle(self, *args: Any, **options: Any) -> None:
        checkpoint = checkpoint_take()
        self.stdout.write(
            "nothing to seal" if checkpoint is None else f"sealed seq {checkpoint.seq} ({checkpoint.hash})"
        )
