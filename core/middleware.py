"""The HTTP side of the input boundary, and 503 for transient database errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.template.loader import render_to_string

from core import inbound
from core.transient import RETRY_AFTER_SECONDS, is_transient

logger = logging.getLogger(__name__)

_JSON_TYPES = ("application/json", "+json")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def error_response(
    request: HttpRequest, status: int, code: str, detail: str, problems: list[inbound.Problem] | None = None
) -> HttpResponse:
    """An error in the shape of the API (`{"error", "detail", "errors"}`) or as a page."""
    errors = [p.as_dict() for p in problems or []]
    if _wants_json(request):
        body: dict[str, object] = {"error": code, "detail": detail}
        if errors:
            body["errors"] = errors
        return JsonResponse(body, status=status)
    html = render_to_string("refused.html", {"status": status, "detail": detail, "errors": errors})
    return HttpResponse(html, status=status)


class InputBoundaryMiddleware:
    """Refuse hostile query strings, forms and JSON bodies before any view sees them; scrub secrets."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            self._check(request)
        except inbound.InputRefused as exc:
            return error_response(request, 400, exc.code, str(exc), exc.problems)
        except _TooLarge as exc:
            return error_response(request, exc.status, exc.code, exc.detail)
        return self.get_response(request)

    def _check(self, request: HttpRequest) -> None:
        if inbound.text_problem(request.path):
            raise inbound.InputRefused([inbound.Problem("(path)", inbound.text_problem(request.path) or "")])
        query = request.META.get("QUERY_STRING", "")
        if len(query) > inbound.MAX_QUERY_CHARS:
            raise _TooLarge(414, "uri_too_long", f"the query string is longer than {inbound.MAX_QUERY_CHARS}")
        if query:
            cleaned = _clean_querydict(request.GET, where="query")
            if cleaned is not None:
                # The stubs type GET and POST as immutable; so is this copy.
                request.GET = cleaned  # type: ignore[assignment]
        if request.method in {"GET", "HEAD", "OPTIONS"}:
            return
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > inbound.MAX_BODY_BYTES:
            raise _TooLarge(413, "too_large", f"the body is larger than {inbound.MAX_BODY_BYTES} bytes")
        content_type = request.content_type or ""
        try:
            if content_type.endswith(_JSON_TYPES):
                body = request.body
                if body.strip():
                    value = inbound.parse_json(body)
                    request._body = json.dumps(value, ensure_ascii=False).encode()
            elif content_type in _FORM_TYPES:
                cleaned = _clean_querydict(request.POST, where="form")
                if cleaned is not None:
                    request.POST = cleaned  # type: ignore[assignment]
        except RequestDataTooBig:
            raise _TooLarge(413, "too_large", "the body is too large") from None
        except (MultiPartParserError, TooManyFieldsSent) as exc:
            raise inbound.InputRefused([inbound.Problem("(body)", f"the form cannot be read: {exc}")]) from None


class _TooLarge(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status, self.code, self.detail = status, code, detail


def _clean_querydict(data: QueryDict, *, where: str) -> QueryDict | None:
    """A scrubbed copy of `data`, None if nothing changed; InputRefused past a limit."""
    problems: list[inbound.Problem] = []
    cleaned = QueryDict(mutable=True)
    changed = False
    for key, values in data.lists():
        name_problem = inbound.text_problem(key)
        if name_problem:
            problems.append(inbound.Problem(f"{where}:{key[:40]!r}", f"name: {name_problem}"))
            continue
        for value in values:
            if not isinstance(value, str):  # an uploaded file
                continue
            try:
                kept = inbound.refuse_text(value, path=key)
            except inbound.InputRefused as exc:
                problems.extend(exc.problems)
                continue
            changed = changed or kept != value
            cleaned.appendlist(key, kept)
    if problems:
        raise inbound.InputRefused(problems[:20])
    if not changed:
        return None
    cleaned._mutable = False
    return cleaned


class TransientErrorMiddleware:
    """A deadlock, serialization failure or lost connection is answered 503 with Retry-After, never 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_transient(exception):
            return None
        logger.warning("transient database error on %s %s: %s", request.method, request.path, exception)
        response = error_response(
            request, 503, "unavailable", "the database is briefly unavailable; nothing was changed, try again"
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
