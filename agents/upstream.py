"""Tools from outside Countersign's code: upstream MCP servers and HTTP endpoints (agents.models.ToolSource).

An admin adds a source; `source_sync` lists its tools (the official MCP SDK's client, over stdio or
streamable HTTP). A newly discovered tool starts disabled: it is offered to no agent until an admin
approves its definition (`upstream_tool_approve`). Its impact defaults from its MCP annotations (no
annotations: destructive). From then on it is a tool like the ones in code (`agents.tools.get_tool`
finds it here): enabling it for an agent, and switching it to auto, go through the configuration's
four eyes. If a later sync finds its description, schema or annotations changed, the tool is
suspended and every call refused until someone approves the new definition (the rug pull).

Calls leave through `_execute` in a worker, with the action's idempotency key. An answer lost on the
way back (the upstream died mid-call, the connection broke after the request left) raises
EffectUnknown: the action goes in_doubt for a person, never retried blindly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, cast
from urllib.parse import quote

import httpx
import jsonschema
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import RequestParamsMeta
from pydantic import BaseModel

from agents.injection import suspected_injection
from agents.models import SourceKind, ToolSource, UpstreamState, UpstreamTool, validate_endpoint_url
from agents.secrets import SECRET_KEYS, SecretUnavailable, check_secret_ref, resolve_secret
from agents.tools import EffectUnknown, Impact, Tool, ToolContext, ToolError, get_tool
from audit.services import Actor, record
from core.errors import Conflict, InvalidInput
from core.inbound import sanitise
from core.loops import KeptLoop
from core.secrets import register_secret

logger = logging.getLogger(__name__)

SEPARATOR = "__"
# A secret reference inside a header or environment value: {{env:COUNTERSIGN_SECRET_X}} or {{file:/run/secrets/x}}.
SECRET_REF = re.compile(r"\{\{\s*((?:env|file):[^}\s]+)\s*\}\}")
DEFAULT_TIMEOUT = 30.0
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Methods whose repetition has no further effect: a lost answer may be asked for again.
SAFE_METHODS = frozenset({"GET"})


# --- secret references ----------------------------------------------------------------------------


def check_template(values: dict[str, str], *, where: str) -> None:
    """Refuse a credential written out in full: a secret-looking header or variable must be a reference."""
    for name, value in values.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidInput(f"{where} must map names to texts", code="invalid_config")
        for ref in SECRET_REF.findall(value):
            try:
                check_secret_ref(ref)
            except SecretUnavailable as exc:
                raise InvalidInput(f"{where}.{name}: {exc}", code="invalid_config") from None
        looks_secret = name.lower() in SECRET_KEYS or any(k in name.lower() for k in ("token", "secret", "key"))
        if looks_secret and value.strip() and not SECRET_REF.search(value):
            raise InvalidInput(
                f"{where}.{name} looks like a credential: reference it ({{{{env:COUNTERSIGN_SECRET_…}}}}), "
                "Countersign does not store secrets",
                code="invalid_config",
            )


def checked_url(url: str, *, what: str) -> None:
    """Refuse (400) a URL that no call could reach: not http(s), no host, or a host that cannot be looked up."""
    try:
        validate_endpoint_url(url)
    except ValidationError as exc:
        raise InvalidInput(f"{what}: {' '.join(exc.messages)}", code="invalid_config") from None


def resolve_template(value: str) -> str:
    """`value` with each secret reference replaced by the secret, which is then masked wherever it is echoed."""

    def secret(match: re.Match[str]) -> str:
        resolved = resolve_secret(match.group(1))
        register_secret(resolved)
        return resolved

    return SECRET_REF.sub(secret, value)


def _resolved(values: dict[str, str]) -> dict[str, str]:
    try:
        return {name: resolve_template(value) for name, value in values.items()}
    except SecretUnavailable as exc:
        raise ToolError("secret_unavailable", str(exc)) from None


# --- definitions ----------------------------------------------------------------------------------


def definition_hash(definition: dict[str, Any]) -> str:
    body = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def default_impact(annotations: dict[str, Any]) -> Impact:
    """MCP annotations to an impact. They are hints from the server, so the default leans to caution:
    no annotations is destructive, as the MCP spec's defaults (destructiveHint true) say."""
    if annotations.get("readOnlyHint") is True:
        return Impact.READ
    if annotations.get("destructiveHint", True) is not False:
        return Impact.DESTRUCTIVE
    return Impact.WRITE


def _screened(description: str) -> str:
    fragment = suspected_injection(description)
    return f"its description looks like injected instructions ({fragment[:60]!r})" if fragment else ""


def changed_parts(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Which parts of a tool's definition differ between two versions of it."""
    return [part for part in ("description", "input_schema", "annotations") if before.get(part) != after.get(part)]


def _diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """What changed, for the audit rows of a suspension and an approval: "new" when nothing was approved before."""
    return ["new"] if before is None else changed_parts(before, after)


# --- discovery ------------------------------------------------------------------------------------


def _mcp_client(source: ToolSource, *, timeout: float = DEFAULT_TIMEOUT) -> Client:
    if source.kind == SourceKind.MCP_STDIO:
        params = StdioServerParameters(
            command=source.command, args=list(source.args), env=_resolved(source.env) or None
        )
        return Client(params, read_timeout_seconds=timeout)
    http = create_mcp_http_client(headers=_resolved(source.headers))
    return Client(streamable_http_client(source.url, http_client=http), read_timeout_seconds=timeout)


def _reason(exc: BaseException) -> str:
    """What went wrong, from inside the task groups the MCP client nests its errors in."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _list_upstream(source: ToolSource) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with _mcp_client(source) as client:
            listed = await client.list_tools()
        return [
            {
                "name": tool.name,
                "description": tool.description or "",
                "input_schema": tool.input_schema,
                "annotations": tool.annotations.model_dump(by_alias=True, exclude_none=True)
                if tool.annotations
                else {},
            }
            for tool in listed.tools
        ]

    # What an upstream says crosses the input boundary like any tool output.
    return sanitise(async_to_sync(go)()).value


@dataclass
class SyncReport:
    discovered: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    suspended: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    error: str = ""


def source_sync(*, source: ToolSource, actor: AbstractBaseUser | None) -> SyncReport:
    """List the source's tools and record what changed: new tools disabled, changed approved ones suspended."""
    who = Actor.user(actor) if actor is not None else Actor.system("upstream-sync")
    if source.kind in (SourceKind.HTTP, SourceKind.CALLER):
        raise InvalidInput(
            f"a {source.get_kind_display()} is defined by its admin, not discovered", code="invalid_config"
        )
    try:
        listed = _list_upstream(source)  # outside any transaction: it starts a process or calls a server
    except Exception as exc:  # any failure to list is reported on the source, not raised
        error = _reason(exc)[:2000]
        ToolSource.objects.filter(pk=source.pk).update(sync_error=error)
        return SyncReport(error=error)
    report = SyncReport()
    with transaction.atomic():
        existing = {row.upstream_name: row for row in UpstreamTool.objects.select_for_update().filter(source=source)}
        for found in listed:
            definition = {k: found[k] for k in ("description", "input_schema", "annotations")}
            digest = definition_hash(definition)
            row = existing.pop(found["name"], None)
            if row is None:
                row = UpstreamTool.objects.create(
                    source=source,
                    upstream_name=found["name"],
                    name=f"{source.slug}{SEPARATOR}{found['name']}"[:100],
                    impact=default_impact(found["annotations"]),
                    definition_hash=digest,
                    screening=_screened(found["description"]),
                    **definition,
                )
                report.discovered.append(row.name)
                record(actor=who, event="tool.discovered", target=row, after={"definition": definition})
                continue
            if row.definition_hash == digest:
                continue
            before = row.definition()
            for part, value in definition.items():
                setattr(row, part, value)
            row.definition_hash = digest
            row.screening = _screened(found["description"])
            report.changed.append(row.name)
            if row.state == UpstreamState.ACTIVE:
                row.state = UpstreamState.SUSPENDED
                report.suspended.append(row.name)
                record(
                    actor=who,
                    event="tool.suspended",
                    target=row,
                    before={"definition": before},
                    after={"definition": definition, "changed": _diff(before, definition)},
                )
            elif row.state == UpstreamState.SUSPENDED and digest == row.approved_hash:
                row.state = UpstreamState.ACTIVE  # changed back to what was approved
                record(actor=who, event="tool.restored", target=row, after={"definition": definition})
            row.save()
        for row in existing.values():  # no longer offered upstream: refused until it is back and approved
            report.gone.append(row.name)
            if row.state == UpstreamState.ACTIVE:
                row.state = UpstreamState.SUSPENDED
                row.definition_hash = "gone"
                row.save(update_fields=["state", "definition_hash"])
                record(actor=who, event="tool.suspended", target=row, after={"changed": ["gone upstream"]})
        ToolSource.objects.filter(pk=source.pk).update(synced_at=timezone.now(), sync_error="")
    return report


# --- configuration (admins) -----------------------------------------------------------------------


def source_create(
    *,
    actor: User,
    slug: str,
    kind: str,
    command: str = "",
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    url: str = "",
    headers: dict[str, str] | None = None,
) -> ToolSource:
    """Add an upstream MCP server (its tools are discovered by `source_sync`, each disabled)."""
    if kind not in (SourceKind.MCP_STDIO, SourceKind.MCP_HTTP):
        raise InvalidInput("kind must be mcp_stdio or mcp_http (an HTTP tool: http_tool_create)", code="invalid_config")
    if kind == SourceKind.MCP_STDIO and command not in settings.UPSTREAM_STDIO_COMMANDS:
        # Starting a program on the workers is the platform's decision, not the API's: a stolen admin
        # token must not be a way to run commands.
        raise InvalidInput(
            f"{command!r} is not a program this installation starts (the UPSTREAM_STDIO_COMMANDS setting)",
            code="invalid_config",
        )
    if kind == SourceKind.MCP_HTTP:
        checked_url(url, what="an MCP server over HTTP needs its http(s) URL")
    if args is not None and not all(isinstance(a, str) for a in args):
        raise InvalidInput("args must be a list of texts", code="invalid_config")
    check_template(env or {}, where="env")
    check_template(headers or {}, where="headers")
    with transaction.atomic():
        if ToolSource.objects.filter(slug=slug).exists():
            raise Conflict(f"a tool source named {slug!r} exists", code="exists")
        source = ToolSource.objects.create(
            slug=slug,
            kind=kind,
            command=command,
            args=args or [],
            env=env or {},
            url=url,
            headers=headers or {},
            created_by=actor,
        )
        record(actor=Actor.user(actor), event="tool_source.created", target=source, after=_source_facts(source))
    return source


def _source_facts(source: ToolSource) -> dict[str, Any]:
    # Secret references are names, not secrets: they may be audited.
    return {
        "slug": source.slug,
        "kind": source.kind,
        "command": source.command,
        "args": source.args,
        "env": source.env,
        "url": source.url,
        "headers": source.headers,
    }


def http_tool_create(
    *,
    actor: User,
    slug: str,
    description: str,
    method: str,
    url: str,
    input_schema: dict[str, Any],
    impact: str,
    headers: dict[str, str] | None = None,
    magnitude_pointer: str = "",
    timeout: float = 10.0,
    retries: int = 0,
    idempotency_header: str = "Idempotency-Key",
) -> UpstreamTool:
    """An HTTP endpoint as a tool: its admin writes the definition; it starts disabled like any new tool."""
    if method not in HTTP_METHODS:
        raise InvalidInput(f"method must be one of {', '.join(HTTP_METHODS)}", code="invalid_config")
    # Placeholders are filled with URL-quoted arguments at call time: check the URL with them as words.
    checked_url(re.sub(r"\{(\w+)\}", "x", url), what="the URL")
    if not 0 < timeout <= 300 or not 0 <= retries <= 5:
        raise InvalidInput("timeout must be in (0, 300] seconds and retries in [0, 5]", code="invalid_config")
    check_template(headers or {}, where="headers")
    spec = {
        "method": method,
        "url": url,
        "magnitude_pointer": magnitude_pointer,
        "timeout": timeout,
        "retries": retries,
        "idempotency_header": idempotency_header,
    }
    return _declared_tool_create(
        actor=actor,
        slug=slug,
        kind=SourceKind.HTTP,
        description=description,
        input_schema=input_schema,
        impact=impact,
        spec=spec,
        url=url,
        headers=headers or {},
    )


def caller_tool_create(
    *,
    actor: User,
    slug: str,
    description: str,
    input_schema: dict[str, Any],
    impact: str,
    magnitude_pointer: str = "",
    reversible: bool = False,
) -> UpstreamTool:
    """A tool an agent running elsewhere executes itself: declared here so guard, policy and review apply to it.

    An approved call gives the agent a grant for exactly the approved arguments (approvals.grants); undoing
    an executed one (`reversible`) tells the agent to reverse it. It starts disabled like any new tool.
    """
    return _declared_tool_create(
        actor=actor,
        slug=slug,
        kind=SourceKind.CALLER,
        description=description,
        input_schema=input_schema,
        impact=impact,
        spec={"magnitude_pointer": magnitude_pointer, "reversible": bool(reversible)},
    )


def _declared_tool_create(
    *,
    actor: User,
    slug: str,
    kind: str,
    description: str,
    input_schema: dict[str, Any],
    impact: str,
    spec: dict[str, Any],
    url: str = "",
    headers: dict[str, str] | None = None,
) -> UpstreamTool:
    """A source holding one tool an admin wrote the definition of (named as the source), disabled until approved."""
    if impact not in Impact.values:
        raise InvalidInput(f"impact must be one of {', '.join(Impact.values)}", code="invalid_config")
    if not isinstance(input_schema, dict) or input_schema.get("type") != "object":
        raise InvalidInput("the input schema must be a JSON Schema of type object", code="invalid_config")
    try:
        jsonschema.Draft202012Validator.check_schema(input_schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(
            f"the input schema is not a valid JSON Schema: {exc.message}", code="invalid_config"
        ) from None
    pointer = spec.get("magnitude_pointer", "")
    if pointer and not pointer.startswith("/"):
        raise InvalidInput("the magnitude is a JSON pointer into the arguments, like /amount", code="invalid_config")
    if SEPARATOR in slug:
        raise InvalidInput(f"a declared tool's name may not contain {SEPARATOR!r}", code="invalid_config")
    definition = {"description": description, "input_schema": input_schema, "annotations": {}}
    with transaction.atomic():
        if ToolSource.objects.filter(slug=slug).exists() or get_tool(slug) is not None:
            raise Conflict(f"a tool or tool source named {slug!r} exists", code="exists")
        source = ToolSource.objects.create(slug=slug, kind=kind, url=url, headers=headers or {}, created_by=actor)
        tool = UpstreamTool.objects.create(
            source=source,
            upstream_name="call",
            name=slug,
            impact=impact,
            spec=spec,
            # The key stays "http" for HTTP tools, so the hashes of those approved before caller tools match.
            definition_hash=definition_hash({**definition, ("http" if kind == SourceKind.HTTP else "call"): spec}),
            screening=_screened(description),
            **definition,
        )
        record(
            actor=Actor.user(actor),
            event="tool_source.created",
            target=source,
            after={**_source_facts(source), "definition": definition, "spec": spec},
        )
    return tool


def upstream_tool_approve(
    *, tool: UpstreamTool, actor: User, definition_hash_seen: str, impact: str | None = None
) -> UpstreamTool:
    """Approve a tool's current definition (a new one, or a change that suspended it); audited with the diff.

    `definition_hash_seen` is the definition the admin looked at: if it changed since, nothing is approved.
    """
    if impact is not None and impact not in Impact.values:
        raise InvalidInput(f"impact must be one of {', '.join(Impact.values)}", code="invalid_config")
    with transaction.atomic():
        locked = UpstreamTool.objects.select_for_update().get(pk=tool.pk)
        if locked.definition_hash != definition_hash_seen:
            raise Conflict("the tool's definition changed since you looked at it; review it again", code="stale")
        if locked.definition_hash == "gone":
            raise Conflict("the tool is no longer offered upstream", code="gone")
        approved_before: dict[str, Any] | None = locked.approved_definition
        before = {"state": locked.state, "impact": locked.impact, "definition": approved_before}
        locked.state = UpstreamState.ACTIVE
        locked.approved_hash = locked.definition_hash
        locked.approved_definition = locked.definition()
        locked.approved_by = actor
        if impact is not None:
            locked.impact = impact
        locked.save()
        record(
            actor=Actor.user(actor),
            event="tool.approved",
            target=locked,
            before=before,
            after={
                "state": locked.state,
                "impact": locked.impact,
                "definition": locked.approved_definition,
                "changed": _diff(approved_before, locked.definition()),
            },
        )
    return locked


# --- the registry ---------------------------------------------------------------------------------


def resolve(name: str) -> Tool | None:
    """An approved (or suspended) upstream tool as a registry Tool; None for other names and disabled tools."""
    row = UpstreamTool.objects.select_related("source").filter(name=name).first()
    if row is None or row.state == UpstreamState.DISABLED:
        return None
    return _as_tool(row)


def listing() -> list[Tool]:
    """The approved upstream tools (for the configuration pages and the agents' MCP endpoints)."""
    return [_as_tool(row) for row in UpstreamTool.objects.select_related("source").filter(state=UpstreamState.ACTIVE)]


def _as_tool(row: UpstreamTool) -> Tool:
    approved: dict[str, Any] = row.approved_definition or row.definition()
    caller = row.source.kind == SourceKind.CALLER
    suspended = ""
    if row.state != UpstreamState.ACTIVE:
        suspended = f"{row.name} is suspended: its upstream definition changed after it was approved"
    return Tool(
        name=row.name,
        description=str(approved.get("description", "")),
        args_model=BaseModel,  # unused: `schema` validates
        impact=Impact(row.impact),
        execute=partial(_execute, row.pk),
        magnitude=partial(_magnitude, str(row.spec.get("magnitude_pointer", ""))),
        compensate=_undo_by_caller if caller and row.spec.get("reversible") else None,
        schema=dict(approved.get("input_schema") or {"type": "object"}),
        transactional=False,  # the effect is elsewhere: an interrupted call is in doubt
        suspended=suspended,
        flagged=row.screening,
        caller_executes=caller,
    )


def _undo_by_caller(args: dict[str, Any], result: dict[str, Any], key: str) -> dict[str, Any]:
    # The effect is the caller's: undoing it here records the decision, and the caller is told to reverse it.
    return {"undo": "the agent that executed it is told to reverse it", "key": key}


def _magnitude(pointer: str, args: dict[str, Any]) -> Decimal:
    if not pointer:
        return Decimal(0)
    value: Any = args
    for raw in pointer.lstrip("/").split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return Decimal(0)
    try:
        return Decimal(str(value)) if not isinstance(value, bool) else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


# --- calls ----------------------------------------------------------------------------------------


def _execute(row_id: int, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    row = UpstreamTool.objects.select_related("source").get(pk=row_id)
    if row.state != UpstreamState.ACTIVE:
        raise ToolError("tool_suspended", f"{row.name} is suspended: its upstream definition changed")
    if row.source.kind == SourceKind.CALLER:
        # Never reached: approvals.queue gives a caller's tool a grant instead of an execution.
        raise ToolError("caller_executes", f"{row.name} is executed by the agent itself, with a grant")
    if row.source.kind == SourceKind.HTTP:
        return _call_http(row, args, context)
    return _call_mcp(row, args, context)


class _Session:
    """One kept MCP session to a source, owned by one task (the SDK's task groups must be left where entered)."""

    def __init__(self, source: ToolSource, timeout: float) -> None:
        self.client = _mcp_client(source, timeout=timeout)
        self.opened_at = time.monotonic()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closing = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._own())

    async def _own(self) -> None:
        try:
            async with self.client:
                self.ready.set_result(None)
                await self.closing.wait()
        except BaseException as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)


class _Sessions:
    """Kept sessions to upstream MCP servers, on one event loop thread per process.

    Opening a session costs about 30 ms over streamable HTTP, more over stdio (a process starts); a
    kept one answers in about 2 ms (measured once with bench/echo_mcp_server.py, not a published
    figure). A kept session is asked for its tools before each call (read-only, about 2 ms): one that
    does not answer is dropped and a new one opened, so a restarted upstream costs a reconnect, not a
    call in doubt. A call that fails after that answer may have reached the upstream: EffectUnknown.
    """

    MAX_AGE = 300.0  # seconds: secrets are resolved again this often

    def __init__(self) -> None:
        self._kept = KeptLoop("upstream-mcp")
        self._sessions: dict[tuple[Any, ...], _Session] = {}

    def call(self, row: UpstreamTool, args: dict[str, Any], key: str, timeout: float) -> Any:
        return self._kept.run(self._call, row, args, key, timeout, timeout=timeout + 30)

    def close_all(self) -> None:
        """End every kept session (their stdio servers exit)."""
        if not self._kept.started:
            return

        async def close() -> None:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            for session in sessions:
                session.closing.set()
            await asyncio.gather(*(s.task for s in sessions), return_exceptions=True)

        self._kept.run(close, timeout=30)

    async def _session(self, source: ToolSource, timeout: float) -> tuple[_Session, bool]:
        """The kept session to `source` and whether it was kept (True) or just opened (False)."""
        fingerprint = (
            source.pk,
            source.command,
            tuple(source.args),
            json.dumps(source.env, sort_keys=True),
            source.url,
            json.dumps(source.headers, sort_keys=True),
        )
        kept = self._sessions.get(fingerprint)
        if kept is not None and time.monotonic() - kept.opened_at < self.MAX_AGE and not kept.task.done():
            try:
                # Is it still there? tools/list is read-only and every server answers it (ping is gone
                # from the 2026-07-28 protocol).
                await asyncio.wait_for(kept.client.list_tools(), timeout=min(timeout, 5.0))
                return kept, True
            except Exception:
                logger.info("upstream %s: the kept session did not answer; opening another", source.slug)
        if kept is not None:
            kept.closing.set()
            self._sessions.pop(fingerprint, None)
        fresh = _Session(source, timeout)
        await fresh.ready  # raises what opening raised: nothing was sent
        self._sessions[fingerprint] = fresh
        return fresh, False

    async def _call(self, row: UpstreamTool, args: dict[str, Any], key: str, timeout: float) -> Any:
        try:
            session, _ = await self._session(row.source, timeout)
        except Exception as exc:  # the request never left: try again later
            raise ToolError("upstream_unavailable", f"{row.source.slug}: {_reason(exc)}", transient=True) from exc
        try:
            return await session.client.call_tool(
                row.upstream_name, args, meta=cast(RequestParamsMeta, {"countersign/idempotency_key": key})
            )
        except Exception as exc:
            session.closing.set()
            raise EffectUnknown(f"{row.source.slug} lost the call: {_reason(exc)}") from exc


_sessions = _Sessions()


def close_sessions() -> None:
    """End the kept upstream sessions of this process."""
    _sessions.close_all()


def _call_mcp(row: UpstreamTool, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    timeout = float(row.spec.get("timeout", DEFAULT_TIMEOUT))
    result = _sessions.call(row, args, context.idempotency_key, timeout)
    text = "\n".join(getattr(block, "text", "") for block in result.content)
    if result.is_error:
        raise ToolError("upstream_error", text or "the upstream tool failed")
    if isinstance(result.structured_content, dict):
        return result.structured_content
    return {"text": text}


def _call_http(row: UpstreamTool, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    spec = row.spec
    method = spec["method"]
    url = re.sub(r"\{(\w+)\}", lambda m: quote(str(args.get(m.group(1), "")), safe=""), spec["url"])
    headers = _resolved(row.source.headers)
    if spec.get("idempotency_header"):
        headers[spec["idempotency_header"]] = context.idempotency_key
    body = args if method != "GET" else None
    timeout = float(spec.get("timeout", 10.0))
    response = None
    for attempt in range(int(spec.get("retries", 0)) + 1):
        try:
            response = httpx.request(method, url, json=body, headers=headers, timeout=timeout)
            break
        except (httpx.InvalidURL, UnicodeError) as exc:  # nothing was sent, and never will be
            raise ToolError("invalid_url", f"{url} cannot be called: {exc}") from exc
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
            if attempt == int(spec.get("retries", 0)):
                raise ToolError("upstream_unavailable", f"{url}: {exc}", transient=True) from exc
        except httpx.TransportError as exc:  # sent; the answer was lost
            if method in SAFE_METHODS:
                raise ToolError("upstream_unavailable", f"{url}: {exc}", transient=True) from exc
            raise EffectUnknown(f"{method} {url}: {type(exc).__name__}: the answer was lost") from exc
    assert response is not None
    if response.status_code >= 500:
        raise ToolError("upstream_error", f"{method} {url} answered {response.status_code}", transient=True)
    if response.status_code >= 400:
        raise ToolError("upstream_refused", f"{method} {url} answered {response.status_code}: {response.text[:500]}")
    try:
        payload = response.json()
    except ValueError:
        return {"status": response.status_code, "text": response.text[:100_000]}
    return payload if isinstance(payload, dict) else {"result": payload}
