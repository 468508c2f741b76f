from __future__ import annotations

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations: dashboards, alerts, metrics"

    def ready(self) -> None:
        # Registers the writer of what core.counters buffers in every transaction.
        # And the renderer of the operators' refresh (models load after the app registry is ready).
        from ops import pushes, stats  # noqa: F401, PLC0415
