"""Celery tasks of the run loop: thin, take ids, safe to run twice; a transient database error retries them."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.contrib.auth.models import User

from agents.configuration import EVALUATE_PROMPT
from agents.models import PromptVersion
from audit.services import Actor
from core.errors import Conflict
from core.transient import retry_on_transient
from runtime.golden import prompt_evaluate
from runtime.loop import run_advance


# The name predates this app; queued messages carry it.
@shared_task(name="agents.advance_run", bind=True, max_retries=None)
def advance_run(self: Any, run_id: int) -> None:
    with retry_on_transient(self):
        run_advance(run_id=run_id)


@shared_task(name=EVALUATE_PROMPT, bind=True, max_retries=None)
def evaluate_prompt(self: Any, version_id: int, user_id: int | None = None) -> None:
    # Run twice, it stores a second evaluation; the latest is the one that counts.
    version = PromptVersion.objects.filter(pk=version_id).first()
    if version is None:
        return
    user = User.objects.filter(pk=user_id).first() if user_id is not None else None
    with retry_on_transient(self):
        try:
            prompt_evaluate(version=version, actor=user or Actor.system("golden set"))
        except Conflict:
            return  # activated or rejected meanwhile: nothing left to test
