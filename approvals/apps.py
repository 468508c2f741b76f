from __future__ import annotations

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"

    def ready(self) -> None:
        # Modules with models load once the app registry is ready: the socket re-check
        # receivers, the tasks services publish by name, the renderers of the pushes and
        # the tools that carry out approved configuration changes.
        from approvals import config_tools, pushes, signals, tasks  # noqa: F401, PLC0415
