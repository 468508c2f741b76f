"""The Celery application: `celery -A config worker` runs agent steps and executions."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("countersign")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _task_connections(task: Any = None, **_: Any) -> None:
    """Around each task, what Django does around each request: the connection goes back to the pool, and
    one that broke (a PostgreSQL restart) is dropped. Celery's fixup only closes them every
    CELERY_DB_REUSE_MAX tasks (settings). Not for a task run eagerly, in its caller's transaction."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()
