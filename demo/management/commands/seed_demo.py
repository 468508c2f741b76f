from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from demo.seed import DEMO_USERS, seed_all


class Command(BaseCommand):
    help = "Create (or refresh) the demo users, roles, agents, orders and contacts."

    def handle(self, *args: Any, **options: Any) -> None:
        password = settings.COUNTERSIGN_DEMO_PASSWORD
        seed_all(password=password)
        self.stdout.write(f"demo users: {', '.join(DEMO_USERS)} (password: {password})")
