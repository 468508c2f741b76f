from __future__ import annotations

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"

    def ready(self) -> None:
        # Modules with models load once the app registry is ready: the socket re-check
        # receivers, the tasks services publish by name, and the renderers of the pushes.
        from approvals import pushes, signals, tasks  # noqa: F401, PLC0415
