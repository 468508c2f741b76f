"""Pages of the run loop: cancelling a run (its pending actions are cancelled with it)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.views.decorators.http import require_POST

from agents.views import operate_run
from core.requests import AuthedRequest
from runtime import services


@require_POST
@login_required
def run_cancel(request: AuthedRequest, run_id: int) -> HttpResponse:
    return operate_run(request, run_id, services.run_cancel, "cancelled")
