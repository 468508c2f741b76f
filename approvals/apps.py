from __future__ import annotations

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"

    def ready(self) -> None:
        # Modules with models load once the app registry is ready: the socket re-check
        # receivers, the tasks services publish by name, and the pushes.
        from approvals import signals, tasks  # noqa: F401, PLC0415
        from approvals.broadcast import register_pushes  # noqa: PLC0415

        # The pushes lower apps name (core.push): this app owns the sockets and renders them.
        register_pushes()
