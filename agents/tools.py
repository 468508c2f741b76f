"""The tool registry: tools are declared in code and enabled per agent in the database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import jsonschema
from django.db import models
from pydantic import BaseModel, ValidationError


@cache
def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    # pydantic builds it anew on every call; a step offers every enabled tool's schema to the model.
    return model.model_json_schema()


class Impact(models.TextChoices):
    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"
    FINANCIAL = "financial"


class ToolError(Exception):
    """A tool failed in a way the agent should be told about.

    `transient` failures (a timeout, a 503 from the system behind the tool)
    are retried with backoff; the others are final.
    """

    def __init__(self, code: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient

    def as_feedback(self) -> dict[str, Any]:
        """The one shape every tool error takes when it is fed back to the agent."""
        return {"code": self.code, "message": self.message, "transient": self.transient}


@dataclass(frozen=True)
class ToolContext:
    """What a tool's effect is told about the call it carries out."""

    # Unique per execution: an effect must not happen twice for one key.
    idempotency_key: str
    action_id: int
    agent_id: int
    run_id: int | None = None
    # Who asked for the call (the run's starter or the API submitter) and, when a
    # person approved it, who (the four-eyes pair of a configuration change).
    requested_by_id: int | None = None
    proposed_by: str = ""
    approved_by: str = ""


class EffectUnknown(Exception):
    """The call reached something outside Countersign and its answer was lost (the upstream died,
    the connection broke after the request left): the effect may or may not have happened. The
    action goes `in_doubt` for a person; it is never retried blindly."""


class ArgumentsInvalid(ValueError):
    """Arguments that do not fit a tool's schema; `details` are field errors ({"field", "message"})."""

    def __init__(self, details: list[dict[str, str]]) -> None:
        self.details = details
        super().__init__("; ".join(f"{d['field'] or '(arguments)'}: {d['message']}" for d in details))


@dataclass(frozen=True)
class Finding:
    """Something a reviewer should see before deciding, found by the tool itself (a refund above its order's total)."""

    code: str
    message: str


@dataclass(frozen=True)
class Stake:
    """What a call puts at stake beyond its magnitude, judged by the tool against the object it touches."""

    # The magnitude as a share of the affected object (a refund against its order's total,
    # deletions against all live contacts): 1.0 is all of it. None when there is nothing to compare.
    share: float | None = None
    # What the share is of, for people: "order ORD-1001's total 540.00".
    of: str = ""
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_model: type[BaseModel]
    impact: Impact
    # Runs the effect. Receives validated arguments and the call's context;
    # must not apply the effect twice for one `context.idempotency_key`.
    execute: Callable[[Any, ToolContext], dict[str, Any]]
    # How big the effect is (an amount, a record count), for policy limits.
    magnitude: Callable[[Any], Decimal] = lambda args: Decimal(0)
    # Undo: receives the arguments, the execution's result and the key.
    compensate: Callable[[Any, dict[str, Any], str], dict[str, Any]] | None = None
    # What the call puts at stake, read from the world when it is routed (risk, warnings).
    stake: Callable[[Any], Stake] | None = None
    # What the call would change, without changing it (shown to reviewers).
    preview: Callable[[Any], dict[str, Any]] | None = None
    # What the schema cannot know (the order exists, the amount is still
    # refundable), checked when a reviewer edits the arguments: field errors as
    # {"field": ..., "message": ...}, empty when the call fits.
    validate: Callable[[Any], list[dict[str, str]]] | None = None
    # Called in the transaction that rejects or expires the call without running
    # it, with the validated arguments and the deciding actor.
    declined: Callable[[Any, Any], None] | None = None
    # True when the effect is written to Countersign's own database, so it
    # commits in the same transaction as the execution record: a crash leaves
    # neither, and an interrupted execution may be retried safely. False for
    # effects elsewhere: an interrupted one is `in_doubt` and goes to a person.
    transactional: bool = True
    # The tool's result arrives later (a sub-run): do not feed it back on execution.
    defers_result: bool = False
    # Countersign's own (the four-eyes configuration tools, approvals.config_tools): executed only
    # for an approved tier-0 proposal, never enabled for an agent, not offered on configuration pages.
    internal: bool = False
    # A tool from outside (agents.upstream): its arguments are checked against this JSON Schema, not
    # `args_model`, and arrive at `execute` as a dict.
    schema: dict[str, Any] | None = None
    # Why calls are refused now (an upstream definition changed after approval); empty: they are not.
    suspended: str = ""
    # Why every call to it goes to review (its description looked like injected instructions).
    flagged: str = ""
    # Executed by the agent that asked, not by Countersign: an approval gives it a grant (approvals.grants).
    caller_executes: bool = False

    def json_schema(self) -> dict[str, Any]:
        """The arguments' JSON Schema (shared: read it, do not change it)."""
        return self.schema if self.schema is not None else _model_schema(self.args_model)

    def parse(self, arguments: dict[str, Any]) -> Any:
        """The validated arguments (a model instance, or for a schema tool the dict); ArgumentsInvalid if not."""
        if self.schema is not None:
            validator = jsonschema.Draft202012Validator(self.schema)
            errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
            if errors:
                raise ArgumentsInvalid(
                    [{"field": ".".join(str(p) for p in e.absolute_path), "message": e.message} for e in errors[:20]]
                )
            return arguments
        try:
            return self.args_model.model_validate(arguments)
        except ValidationError as exc:
            raise ArgumentsInvalid(
                [
                    {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
                    for err in exc.errors(include_url=False, include_input=False)
                ]
            ) from exc

    def dump(self, args: Any, *, mode: str = "json") -> dict[str, Any]:
        """Validated arguments as plain values (what is stored with the action)."""
        if isinstance(args, BaseModel):
            return args.model_dump(mode=mode)
        return dict(args)

    def field_names(self) -> list[str]:
        if self.schema is not None:
            return list(self.schema.get("properties", {}))
        return list(self.args_model.model_fields)


_registry: dict[str, Tool] = {}
# Where tools not declared in code are found (agents.upstream registers the database's, in AppConfig.ready).
_resolvers: list[Callable[[str], Tool | None]] = []
_listers: list[Callable[[], list[Tool]]] = []


def add_resolver(resolve: Callable[[str], Tool | None], listing: Callable[[], list[Tool]]) -> None:
    if resolve not in _resolvers:
        _resolvers.append(resolve)
        _listers.append(listing)


def register(tool: Tool) -> Tool:
    if tool.name in _registry and _registry[tool.name] is not tool:
        raise ValueError(f"tool {tool.name!r} is already registered")
    _registry[tool.name] = tool
    return tool


def get_tool(name: str) -> Tool | None:
    found = _registry.get(name)
    if found is None:
        for resolve in _resolvers:
            found = resolve(name)
            if found is not None:
                break
    return found


def all_tools() -> list[Tool]:
    tools = list(_registry.values())
    for listing in _listers:
        tools.extend(listing())
    return sorted(tools, key=lambda t: t.name)


def agent_tools() -> list[Tool]:
    """The tools an agent may be given (all but Countersign's own)."""
    return [tool for tool in all_tools() if not tool.internal]
