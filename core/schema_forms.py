"""Forms generated from a JSON Schema: one field per property, the values handed back as JSON types.

The schema's owner does the real validation (a tool's pydantic model, an agent's input schema);
the form only turns what a person typed into the JSON value they meant.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms


class SchemaForm(forms.Form):
    """One field per property of `schema`, in its order, with its title, description and required marks."""

    # A tool's model reads decimals from text exactly; a JSON Schema's "number" wants a JSON number.
    decimals_as_text = True

    def __init__(
        self, schema: dict[str, Any], *args: Any, initial_values: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.schema = schema
        required = set(schema.get("required", []))
        initial_values = initial_values or {}
        self.kinds: dict[str, str] = {}
        properties = schema.get("properties", {})
        for name, given in properties.items() if isinstance(properties, dict) else ():
            spec: dict[str, Any] = given if isinstance(given, dict) else {}
            kind = _kind(spec)
            self.kinds[name] = kind
            label = spec.get("title", name.replace("_", " "))
            help_text = spec.get("description", "")
            value = initial_values.get(name, spec.get("default"))
            examples = spec.get("examples")
            example = examples[0] if isinstance(examples, list) and examples else None
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
                long_text = kind == "string" and spec.get("maxLength", 0) > 200
                field = forms.CharField(
                    label=label,
                    required=name in required,
                    help_text=help_text,
                    initial="" if value is None else str(value),
                    widget=forms.Textarea(attrs={"rows": 2}) if long_text else None,
                )
            if example is not None and kind != "boolean":
                shown = ", ".join(map(str, example)) if isinstance(example, list) else str(example)
                field.widget.attrs["placeholder"] = f"e.g. {shown}"
            self.fields[name] = field

    def values(self) -> dict[str, Any]:
        """The raw values as JSON types; the schema's owner does the real validation."""
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
                values[name] = _number(str(raw), as_text=self.decimals_as_text)
            else:
                values[name] = raw
        return values

    def add_validation_errors(self, details: list[dict[str, Any]] | None, message: str) -> None:
        """Put each problem the validator found under its field (the first part of its path), the rest on top."""
        placed = False
        for detail in details or []:
            field = str(detail.get("field", "")).split(".")[0]
            if field in self.fields:
                self.add_error(field, detail.get("message", "invalid"))
                placed = True
        if not placed:
            self.add_error(None, message)


def _kind(spec: dict[str, Any]) -> str:
    alternatives = spec.get("anyOf", [])
    types = {spec.get("type")} | {alt.get("type") for alt in alternatives if isinstance(alt, dict)}
    if "array" in types:
        return "list"
    if "boolean" in types:
        return "boolean"
    if "number" in types:
        return "number"
    if "integer" in types:
        return "integer"
    return "string"


def _number(raw: str, *, as_text: bool) -> Any:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return raw  # the validator reports it as not a number
    if not value.is_finite() or value.adjusted() > 30:
        # Infinity, NaN, 1e999999 (whose int() alone would take seconds): the
        # validator refuses the raw text with a message.
        return raw
    if value == value.to_integral_value() and "." not in raw:
        return int(value)
    return str(value) if as_text else float(value)
