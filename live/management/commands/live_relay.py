"""`manage.py live_relay`: deliver the pushes (one active relay; a second one stands by)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand

from live.relay import run_forever


class Command(BaseCommand):
    help = "Deliver committed pushes to the live sockets (run one beside the workers; extras stand by)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--poll", type=float, default=1.0, help="seconds between outbox reads without a notify")

    def handle(self, *args: Any, poll: float, **options: Any) -> None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write("live relay: delivering pushes")
        run_forever(stop, poll_seconds=poll)
