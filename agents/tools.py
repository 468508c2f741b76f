"""The tool registry: tools are declared in code and enabled per agent in the database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import models
from pydantic import BaseModel


class Impact(models.TextChoices):
    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"
    FINANCIAL = "financial"


class ToolError(Exception):
    """A tool failed in a way the agent should be told about."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_model: type[BaseModel]
    impact: Impact
    # Runs the effect. Receives validated arguments and the execution's
    # idempotency key; must not apply the effect twice for one key.
    execute: Callable[[Any, str], dict[str, Any]]
    # How big the effect is (an amount, a record count), for policy limits.
    magnitude: Callable[[Any], Decimal] = lambda args: Decimal(0)

    def json_schema(self) -> dict[str, Any]:
        return self.args_model.model_json_schema()


_registry: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    if tool.name in _registry and _registry[tool.name] is not tool:
        raise ValueError(f"tool {tool.name!r} is already registered")
    _registry[tool.name] = tool
    return tool


def get_tool(name: str) -> Tool | None:
    return _registry.get(name)


def all_tools() -> list[Tool]:
    return sorted(_registry.values(), key=lambda t: t.name)
