"""Where a form may send the browser next: a path on this site, never another site or a view name."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme


def next_url(request: HttpRequest, default: str) -> str:
    """The POSTed `next` if it is a local path, else `default`.

    `redirect()` would try any other string as a view name (a 500 for "x"), and
    a full URL could point elsewhere (an open redirect).
    """
    target = request.POST.get("next", "")
    if (
        target.startswith("/")
        and not target.startswith(("//", "/\\"))
        and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    ):
        return target
    return default
