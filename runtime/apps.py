from __future__ import annotations

from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    name = "runtime"
    verbose_name = "The run loop: steps, routing of tool calls, sub-runs, cancelling"

    def ready(self) -> None:
        # Lower apps publish the run loop's task by name (agents.services.ADVANCE_RUN);
        # registering it here makes the name resolvable in every process, not only workers.
        # The run loop's task and the `delegate` tool (models load after the app registry is ready).
        from runtime import delegation, tasks  # noqa: F401, PLC0415
