from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services import api_token_issue
from audit.services import Actor


class Command(BaseCommand):
    help = "Print a new API bearer token for a user (stored hashed; shown only now)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(username=options["username"], is_active=True)
        except User.DoesNotExist as exc:
            raise CommandError(f"no active user {options['username']!r}") from exc
        raw = api_token_issue(user=user, actor=Actor.system("manage.py issue_token"), name=options["name"])
        self.stdout.write(raw)
