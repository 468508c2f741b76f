"""Forms for deciding: the edit form is generated from the tool's argument schema."""

from __future__ import annotations

from typing import Any

from agents.tools import Tool
from core.schema_forms import SchemaForm

REJECT_REASONS = [
    "Not eligible under our policy",
    "Wrong amount or target",
    "Duplicate of an earlier request",
    "Needs more information from the customer",
    "Looks suspicious: do not act",
]


class ArgumentsForm(SchemaForm):
    """One field per argument of the tool, from its JSON Schema; validated by the tool's own model."""

    def __init__(self, tool: Tool, *args: Any, initial_arguments: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", "arg")
        super().__init__(tool.json_schema(), *args, initial_values=initial_arguments, **kwargs)
        self.tool = tool
