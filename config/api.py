"""The JSON API, version 1: bearer-token auth, errors as {"error": code, "detail": text}."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts.auth import BearerToken
from agents.api import router as agents_router
from agents.errors import DomainError
from approvals.api import router as approvals_router

api = NinjaAPI(
    title="Countersign API",
    version="1",
    description="Submit runs and actions, read them, and decide pending actions.",
    auth=BearerToken(),
    urls_namespace="api-v1",
    docs_url=None,
)
api.add_router("", agents_router)
api.add_router("", approvals_router)


def error_response(request: HttpRequest, status: int, code: str, detail: str, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"error": code, "detail": detail, **extra}, status=status)


@api.exception_handler(DomainError)
def domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
    extra: dict[str, Any] = {}
    if isinstance(exc.details, dict):
        extra.update(exc.details)
    elif exc.details is not None:
        extra["errors"] = exc.details
    return error_response(request, exc.status, exc.code, exc.message, **extra)


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ()) if p not in {"body", "payload"}),
            "message": err.get("msg", ""),
        }
        for err in exc.errors
    ]
    detail = "; ".join(f"{e['field'] or '(body)'}: {e['message']}" for e in errors) or "invalid request"
    return error_response(request, 400, "invalid_request", detail, errors=errors)


@api.exception_handler(AuthenticationError)
def authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = error_response(
        request, 401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required"
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", "no such object, or you may not see it")


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    code = {400: "bad_request", 403: "forbidden", 404: "not_found", 429: "throttled"}.get(exc.status_code, "error")
    if exc.status_code == 400 and "parse request body" in str(exc.message):
        return error_response(request, 400, "malformed_json", "the request body is not valid JSON")
    return error_response(request, exc.status_code, code, str(exc.message))
