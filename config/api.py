"""The JSON API, version 1: bearer-token auth, errors as {"error": code, "detail": text}.

Every status an operation can answer is declared (core.api_contract.responses);
tests/test_api_contract.py holds the document to that and runs Schemathesis against it.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.schema import OpenAPISchema
from ninja.parser import Parser

from accounts.api import router as accounts_router
from accounts.auth import BearerToken
from agents.api import router as agents_router
from agents.tool_sources_api import router as tool_sources_router
from approvals.api import router as approvals_router
from approvals.webhooks_api import describe_webhooks
from approvals.webhooks_api import router as webhooks_router
from core.api_contract import describe_errors
from core.errors import DomainError
from runtime.api import router as runtime_router


class UnsupportedMediaType(Exception):
    pass


class JsonOnlyParser(Parser):
    """Bodies are JSON, said so by their Content-Type: the input boundary checks exactly those."""

    def parse_body(self, request: HttpRequest) -> Any:
        content_type = request.content_type or ""
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise UnsupportedMediaType(content_type)
        return super().parse_body(request)


class CountersignApi(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: Any = None) -> OpenAPISchema:
        document = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        describe_errors(document)
        describe_webhooks(document)
        return document


api = CountersignApi(
    title="Countersign API",
    version="1",
    description="Submit runs and actions, read them, and decide pending actions.",
    auth=BearerToken(),
    urls_namespace="api-v1",
    docs_url=None,
    parser=JsonOnlyParser(),
)
api.add_router("", agents_router)
api.add_router("", approvals_router)
api.add_router("", runtime_router)
api.add_router("", tool_sources_router)
api.add_router("", webhooks_router)
api.add_router("", accounts_router)


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
    errors = [{"field": _field(err), "message": err.get("msg", "")} for err in exc.errors]
    detail = "; ".join(f"{e['field'] or '(body)'}: {e['message']}" for e in errors) or "invalid request"
    return error_response(request, 400, "invalid_request", detail, errors=errors)


def _field(err: dict[str, Any]) -> str:
    path = [str(p) for p in err.get("loc", ()) if p not in {"body", "payload"}]
    if str(err.get("type", "")).startswith("union_tag_"):
        # The body is one of several shapes, chosen by a key (the verdict): name that key.
        path.append(str(err.get("ctx", {}).get("discriminator", "")).strip("'"))
    return ".".join(p for p in path if p)


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
    if exc.status_code == 400 and isinstance(exc.__cause__, UnsupportedMediaType):
        return error_response(
            request, 415, "unsupported_media_type", "send the body as JSON, with 'Content-Type: application/json'"
        )
    if exc.status_code == 400 and "parse request body" in str(exc.message):
        return error_response(request, 400, "malformed_json", "the request body is not valid JSON")
    return error_response(request, exc.status_code, code, str(exc.message))


def not_found_view(request: HttpRequest, path: str = "") -> HttpResponse:
    """Any other URL under the API: the API's 404, in JSON, not the site's page."""
    return error_response(request, 404, "not_found", "no such endpoint")
