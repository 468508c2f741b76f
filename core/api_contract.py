"""What every API operation promises: strict inputs, one error shape, and every status it can answer.

Routes declare their responses with `responses(...)`, never a bare `response=`
dict, so the statuses the whole API can answer (bad input, no token, the
boundary's size limits, a transient outage) are declared on every operation
without anyone remembering them. tests/test_api_contract.py walks the generated
document and fails an operation that lacks them.
"""

from __future__ import annotations

from typing import Annotated, Any

from ninja import Schema
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# Primary keys are BigAutoField: a larger id cannot exist, and would overflow the query.
MAX_ID = 2**63 - 1
ObjectId = Annotated[int, Field(ge=1, le=MAX_ID)]


def _integral(value: Any) -> Any:
    # JSON Schema's "integer" includes 4.0; strict pydantic does not. A float with no fraction is
    # the integer; anything else (a fraction, a string, a boolean) goes on to be refused.
    if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
        return int(value)
    return value


# An integer in a request body, as JSON Schema means it.
JsonInt = Annotated[int, BeforeValidator(_integral)]
# agents.models.Agent.slug is a SlugField (ASCII, max_length 50).
AgentSlug = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[-a-zA-Z0-9_]+$")]


class ApiInput(BaseModel):
    """A request body: exactly the declared keys, each of its declared JSON type.

    Strict, so `"0.9"` is not a number and `1` is not a string: what the
    document allows is what is accepted, and nothing else is. Unknown keys are
    refused rather than ignored, so a misspelt optional field is an error, not
    a silent default. A plain BaseModel, not ninja's Schema, which reads
    attributes off any object and would take a JSON array for a body of defaults.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


class FieldError(Schema):
    field: str = Field(description="Where, as a dotted path (`input.amount`); empty for the body as a whole.")
    message: str


class ErrorOut(Schema):
    """Every error the API answers, whatever its status."""

    error: str = Field(
        description="A stable code: invalid_request, malformed_json, invalid_input, invalid_arguments, "
        "unknown_tool, reason_required, unauthorized, forbidden, separation_of_duties, not_found, "
        "already_decided, illegal_transition, claimed, prompt_regression, evaluate_first, too_large, uri_too_long, "
        "unsupported_media_type, unavailable, ..."
    )
    detail: str = Field(description="What went wrong, for a person.")
    errors: list[FieldError] | None = Field(default=None, description="Field-level problems, when there are any.")
    # Carried by 409 already_decided / claimed, so a client can tell its user who won.
    decided_by: str | None = Field(
        default=None, description="409 already_decided: the reviewer who decided; null if none did."
    )
    verdict: str | None = Field(default=None, description="409 already_decided: the winning verdict.")
    action_status: str | None = Field(default=None, description="409 already_decided: the action's status now.")
    tier: int | None = Field(default=None, description="409 already_decided: the tier the action was escalated to.")
    claimed_by: str | None = Field(default=None, description="409 claimed: who holds the claim.")
    grant_digest: str | None = Field(
        default=None, description="409 arguments_mismatch: the digest the grant is bound to (the approved call)."
    )
    digest: str | None = Field(default=None, description="409 arguments_mismatch: the digest of the call you sent.")
    regression: dict[str, Any] | None = Field(
        default=None,
        description="409 prompt_regression: the golden-set evaluation that blocks a new prompt version (version, "
        "evaluation, cases, agreed, baseline, baseline_agreed, margin); approve with override_reason to go ahead.",
    )


# What each status means here; the document carries these as the response descriptions.
ERROR_STATUSES: dict[int, str] = {
    400: "The request is not valid: malformed JSON, a value the schema refuses, a number, string or nesting "
    "outside the input limits, or arguments that the agent's or tool's own schema refuses.",
    401: "No valid `Authorization: Bearer <token>` header.",
    403: "You may see the object but not do this to it (e.g. approve work you started).",
    404: "No such object, or you may not see it.",
    409: "The object's state does not allow this (already decided, claimed by someone else, not halted, ...).",
    413: "The request body is larger than the input limit.",
    414: "The query string is longer than the input limit.",
    415: "A request body that is not `application/json`.",
    503: "Briefly unavailable (e.g. a transient database error); nothing was changed. Retry after `Retry-After`.",
}
# Any operation may answer these: parsing, authentication and the input boundary come before the view.
COMMON_ERRORS: tuple[int, ...] = (400, 401, 413, 414, 503)
# Headers that come with an error status.
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}, "description": "`Bearer`"}},
    503: {
        "Retry-After": {
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
            "description": "Seconds to wait before retrying.",
        }
    },
}


def responses(success: Any, *errors: int, status: int = 200, body: bool = False) -> dict[int, Any]:
    """The `response=` of an operation: its success schema, then ErrorOut for every error status it can answer.

    `errors` are the statuses the view itself can produce (403, 404, 409);
    `body=True` for an operation that reads a JSON body (it may answer 415).
    """
    unknown = set(errors) - ERROR_STATUSES.keys()
    if unknown:
        raise ValueError(f"undocumented error statuses {sorted(unknown)}: describe them in ERROR_STATUSES")
    statuses = {*COMMON_ERRORS, *errors, *((415,) if body else ())}
    return {status: success, **dict.fromkeys(sorted(statuses), ErrorOut)}


def describe_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Give each error response of a generated OpenAPI document its meaning and headers."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                code = int(status)
                if code in ERROR_STATUSES:
                    response["description"] = ERROR_STATUSES[code]
                if code in ERROR_HEADERS:
                    response["headers"] = ERROR_HEADERS[code]
    return document
