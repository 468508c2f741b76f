"""Global permission checks for views: refuse with 403 and put the refusal on the audit trail."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest

from audit.services import record


def require_global_perm(request: HttpRequest, perm: str) -> None:
    """Raise 403 unless the user holds the global permission `perm` (refusals are audited)."""
    user = request.user
    if user.is_authenticated and user.has_perm(perm):
        return
    with transaction.atomic():
        record(
            actor=user if user.is_authenticated else None,
            event="access.refused",
            after={"perm": perm, "path": request.path[:200], "method": request.method},
        )
    raise PermissionDenied(f"you need the {perm} permission")
