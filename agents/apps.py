from __future__ import annotations

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        from agents import builtin_tools  # noqa: F401, PLC0415  (registers the built-in tools once the app registry is ready)
