from __future__ import annotations

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        # Registered once the app registry is ready: how a halted run's notice looks.
        from agents import pushes, tools, upstream  # noqa: F401, PLC0415  (upstream imports models)

        # The registry also finds the approved tools of upstream MCP servers and HTTP endpoints.
        tools.add_resolver(upstream.resolve, upstream.listing)
