"""API for tool sources: upstream MCP servers and HTTP tools (admins only), and approving their tools."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from django.shortcuts import get_object_or_404
from ninja import Body, Router, Schema, Status
from pydantic import BaseModel, ConfigDict, Field

from agents import upstream
from agents.models import ToolSource, UpstreamState, UpstreamTool
from core.api_contract import ApiInput, JsonInt, responses
from core.errors import Forbidden
from core.requests import ApiRequest

router = Router(tags=["tool sources"])


def _slug() -> Any:
    return Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9-]*$")


def _secretless() -> Any:
    return Field(
        default_factory=dict,
        description="Values may reference secrets as {{env:COUNTERSIGN_SECRET_…}} or {{file:/run/secrets/…}}; "
        "a credential written out in full is refused (400).",
    )


def _admin(request: ApiRequest) -> None:
    if not request.auth.has_perm("agents.add_toolsource"):
        raise Forbidden("only admins manage tool sources")


class UpstreamToolOut(Schema):
    name: str
    upstream_name: str
    description: str
    input_schema: dict[str, Any]
    annotations: dict[str, Any]
    impact: str
    state: UpstreamState
    definition_hash: str
    changed: list[str] = Field(description="What differs from the approved definition (empty: nothing, or new).")
    approved_definition: dict[str, Any] | None
    screening: str


class ToolSourceOut(Schema):
    slug: str
    kind: str
    command: str
    args: list[str]
    env: dict[str, str]
    url: str
    headers: dict[str, str]
    synced_at: Any
    sync_error: str
    tools: list[UpstreamToolOut]


def _tool_out(tool: UpstreamTool) -> dict[str, Any]:
    approved = tool.approved_definition
    changed = [] if approved is None else upstream.changed_parts(approved, tool.definition())
    return {**{f: getattr(tool, f) for f in UpstreamToolOut.model_fields if f != "changed"}, "changed": changed}


def _source_out(source: ToolSource) -> dict[str, Any]:
    fields = [f for f in ToolSourceOut.model_fields if f != "tools"]
    return {
        **{f: getattr(source, f) for f in fields},
        "tools": [_tool_out(t) for t in sorted(source.tools.all(), key=lambda t: t.name)],
    }


class McpStdioIn(ApiInput):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"slug": "time", "kind": "mcp_stdio", "command": "mcp-server-time"}]}
    )

    slug: str = _slug()
    kind: Literal["mcp_stdio"]
    command: str = Field(
        min_length=1, max_length=500, description="A program named in the UPSTREAM_STDIO_COMMANDS setting (else 400)."
    )
    args: list[str] = Field(default_factory=list, max_length=50)
    env: dict[str, str] = _secretless()


class McpHttpIn(ApiInput):
    slug: str = _slug()
    kind: Literal["mcp_http"]
    url: str = Field(max_length=500, pattern=r"^https?://[^\s/]+")
    headers: dict[str, str] = _secretless()


McpSourceIn = Annotated[McpStdioIn | McpHttpIn, Field(discriminator="kind")]


class ObjectSchema(BaseModel):
    """A JSON Schema for the tool's arguments: an object."""

    model_config = ConfigDict(extra="allow")
    type: Literal["object"]


class HttpToolIn(ApiInput):
    slug: str = _slug()
    description: str = Field(max_length=5000)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    url: str = Field(
        max_length=500,
        pattern=r"^https?://[^\s/]+",
        description="{name} placeholders are filled from the arguments, URL-quoted.",
    )
    input_schema: ObjectSchema
    impact: Literal["read", "write", "destructive", "financial"]
    headers: dict[str, str] = _secretless()
    magnitude_pointer: str = Field(
        default="", max_length=200, pattern=r"^(/.*)?$", description="A JSON pointer into the arguments, like /amount."
    )
    timeout: float = Field(default=10.0, gt=0, le=300)
    retries: JsonInt = Field(default=0, ge=0, le=5)
    idempotency_header: str = Field(
        default="Idempotency-Key", max_length=100, pattern=r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+)?$"
    )


class CallerToolIn(ApiInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "slug": "send_invoice",
                    "description": "Send an invoice to a customer.",
                    "input_schema": {
                        "type": "object",
                        "properties": {"customer": {"type": "string"}, "amount": {"type": "number"}},
                        "required": ["customer", "amount"],
                    },
                    "impact": "financial",
                    "magnitude_pointer": "/amount",
                }
            ]
        }
    )

    slug: str = Field(
        min_length=1,
        max_length=40,
        pattern=r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$",
        description="The tool's name, as the agent calls it: words of a-z and 0-9 joined by single - or _.",
    )
    description: str = Field(max_length=5000)
    input_schema: ObjectSchema
    impact: Literal["read", "write", "destructive", "financial"]
    magnitude_pointer: str = Field(
        default="", max_length=200, pattern=r"^(/.*)?$", description="A JSON pointer into the arguments, like /amount."
    )
    reversible: bool = Field(
        default=False, description="An executed call may be undone: the agent is told to reverse it."
    )


class UpstreamApproveIn(ApiInput):
    definition_hash: str = Field(min_length=1, max_length=64, description="The definition you reviewed.")
    impact: Literal["read", "write", "destructive", "financial"] | None = None


class SyncOut(Schema):
    discovered: list[str]
    changed: list[str]
    suspended: list[str]
    gone: list[str]
    error: str
    source: ToolSourceOut


@router.get("/tool-sources", response=responses(list[ToolSourceOut], 403), summary="Tool sources and their tools")
def list_sources(request: ApiRequest) -> list[dict[str, Any]]:
    _admin(request)
    return [_source_out(s) for s in ToolSource.objects.prefetch_related("tools").order_by("slug")]


@router.post(
    "/tool-sources",
    response=responses(ToolSourceOut, 403, 409, status=201, body=True),
    summary="Add an upstream MCP server; then sync it to list its tools (each starts disabled)",
)
def add_source(request: ApiRequest, payload: Body[McpSourceIn]) -> Status[dict[str, Any]]:
    _admin(request)
    source = upstream.source_create(actor=request.auth, **payload.model_dump())
    return Status(201, _source_out(ToolSource.objects.prefetch_related("tools").get(pk=source.pk)))


@router.post(
    "/tool-sources/http",
    response=responses(ToolSourceOut, 403, 409, status=201, body=True),
    summary="Add an HTTP endpoint as a tool (it starts disabled)",
)
def add_http_tool(request: ApiRequest, payload: HttpToolIn) -> Status[dict[str, Any]]:
    _admin(request)
    tool = upstream.http_tool_create(actor=request.auth, **payload.model_dump())  # input_schema as a dict
    return Status(201, _source_out(ToolSource.objects.prefetch_related("tools").get(pk=tool.source_id)))


@router.post(
    "/tool-sources/caller",
    response=responses(ToolSourceOut, 403, 409, status=201, body=True),
    summary="Declare a tool that agents running elsewhere execute themselves, with a grant (it starts disabled)",
)
def add_caller_tool(request: ApiRequest, payload: CallerToolIn) -> Status[dict[str, Any]]:
    _admin(request)
    tool = upstream.caller_tool_create(actor=request.auth, **payload.model_dump())
    return Status(201, _source_out(ToolSource.objects.prefetch_related("tools").get(pk=tool.source_id)))


@router.post(
    "/tool-sources/{source}/sync",
    response=responses(SyncOut, 403, 404),
    summary="List the source's tools again: new ones start disabled, changed approved ones are suspended",
)
def sync_source(request: ApiRequest, source: str) -> dict[str, Any]:
    _admin(request)
    return _synced(request, get_object_or_404(ToolSource, slug=source))


def _synced(request: ApiRequest, source: ToolSource) -> dict[str, Any]:
    report = upstream.source_sync(source=source, actor=request.auth)
    fresh = ToolSource.objects.prefetch_related("tools").get(pk=source.pk)
    return {**report.__dict__, "source": _source_out(fresh)}


@router.post(
    "/upstream-tools/{name}/approve",
    response=responses(UpstreamToolOut, 403, 404, 409, body=True),
    summary="Approve a tool's current definition (new, or changed since approval); 409 if it changed since you read it",
)
def approve_tool(request: ApiRequest, name: str, payload: UpstreamApproveIn) -> dict[str, Any]:
    _admin(request)
    tool = get_object_or_404(UpstreamTool, name=name)
    approved = upstream.upstream_tool_approve(
        tool=tool, actor=request.auth, definition_hash_seen=payload.definition_hash, impact=payload.impact
    )
    return _tool_out(approved)
