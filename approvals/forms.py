"""Forms for deciding: the edit form is generated from the tool's argument schema."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms

from agents.tools import Tool

REJECT_REASONS = [
    "Not eligible under our policy",
    "Wrong amount or target",
    "Duplicate of an earlier request",
    "Needs more information from the customer",
    "Looks suspicious: do not act",
]


class ArgumentsForm(forms.Form):
    """One field per argument of the tool, from its JSON Schema; validated by the tool's own model."""

    def __init__(self, tool: Tool, *args: Any, initial_arguments: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", "arg")
        super().__init__(*args, **kwargs)
        self.tool = tool
        schema = tool.json_schema()
        required = set(schema.get("required", []))
        initial_arguments = initial_arguments or {}
        self.kinds: dict[str, str] = {}
        for name, spec in schema.get("properties", {}).items():
            kind = _kind(spec)
            self.kinds[name] = kind
            label = spec.get("title", name)
            help_text = spec.get("description", "")
            value = initial_arguments.get(name)
            field: forms.Field
            if kind == "boolean":
                field = forms.BooleanField(label=label, required=False, help_text=help_text, initial=bool(value))
            elif kind == "list":
                field = forms.CharField(
                    label=label,
                    required=name in required,
                    help_text=help_text or "comma-separated",
                    initial=", ".join(str(v) for v in value) if isinstance(value, list) else "",
                )
            else:
                field = forms.CharField(
                    label=label,
                    required=name in required,
                    help_text=help_text,
                    initial="" if value is None else str(value),
                    widget=forms.Textarea(attrs={"rows": 2}) if spec.get("maxLength", 0) > 200 else None,
                )
            self.fields[name] = field

    def arguments(self) -> dict[str, Any]:
        """The raw values as JSON types; the tool's model does the real validation."""
        values: dict[str, Any] = {}
        for name, kind in self.kinds.items():
            raw = self.cleaned_data.get(name)
            if kind == "boolean":
                values[name] = bool(raw)
            elif raw in (None, ""):
                continue
            elif kind == "list":
                items = [item.strip() for item in str(raw).split(",") if item.strip()]
                values[name] = [int(i) if i.lstrip("-").isdigit() else i for i in items]
            elif kind in ("number", "integer"):
                values[name] = _number(str(raw))
            else:
                values[name] = raw
        return values

    def add_validation_errors(self, details: list[dict[str, Any]] | None, message: str) -> None:
        placed = False
        for detail in details or []:
            field = str(detail.get("field", "")).split(".")[0]
            if field in self.fields:
                self.add_error(field, detail.get("message", "invalid"))
                placed = True
        if not placed:
            self.add_error(None, message)


def _kind(spec: dict[str, Any]) -> str:
    types = {spec.get("type")} | {alt.get("type") for alt in spec.get("anyOf", [])}
    if "array" in types:
        return "list"
    if "boolean" in types:
        return "boolean"
    if "number" in types:
        return "number"
    if "integer" in types:
        return "integer"
    return "string"


def _number(raw: str) -> Any:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return raw  # the tool's model reports it as not a number
    if not value.is_finite() or value.adjusted() > 30:
        # Infinity, NaN, 1e999999 (whose int() alone would take seconds): the
        # tool's model refuses the raw text with a message.
        return raw
    return int(value) if value == value.to_integral_value() and "." not in raw else str(value)
