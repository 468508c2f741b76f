from __future__ import annotations

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"

    def ready(self) -> None:
        from approvals import signals  # noqa: F401  (connects the socket re-check receivers)
        from approvals.broadcast import register_pushes

        # The pushes lower apps name (core.push): this app owns the sockets and renders them.
        register_pushes()
