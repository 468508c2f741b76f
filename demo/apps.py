from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "demo"
    verbose_name = "Demo business tables"

    def ready(self) -> None:
        from demo import tools  # noqa: F401, PLC0415  (registers the demo tools once the app registry is ready)
