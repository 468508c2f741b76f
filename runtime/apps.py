from __future__ import annotations

from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    name = "runtime"
    verbose_name = "The run loop: steps, routing of tool calls, sub-runs, cancelling"

    def ready(self) -> None:
        # Lower apps publish the run loop's task by name (agents.services.ADVANCE_RUN);
        # registering it here makes the name resolvable in every process, not only workers.
        from runtime import tasks  # noqa: F401, PLC0415  (models load after the app registry is ready)
