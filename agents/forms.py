"""Forms that parse and validate configuration input; the writes go through agents.configuration."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import forms

from agents.configuration import TOOL_FIELDS
from agents.models import Agent, AgentTool
from agents.services import AGENT_CONFIG_FIELDS
from agents.tools import Tool, agent_tools
from core.schema_forms import SchemaForm

EDITABLE_AGENT_FIELDS = [f for f in AGENT_CONFIG_FIELDS if f != "is_paused"]


class AgentSettingsForm(forms.ModelForm):
    class Meta:
        model = Agent
        fields = EDITABLE_AGENT_FIELDS
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "input_schema": forms.Textarea(attrs={"rows": 6}),
        }

    def settings(self) -> dict[str, Any]:
        return {name: _plain(self.cleaned_data[name]) for name in EDITABLE_AGENT_FIELDS}


class ToolPolicyForm(forms.ModelForm):
    class Meta:
        model = AgentTool
        fields = list(TOOL_FIELDS)

    def settings(self) -> dict[str, Any]:
        values = {name: _plain(self.cleaned_data[name]) for name in TOOL_FIELDS}
        group = self.cleaned_data.get("reviewer_group")
        values["reviewer_group"] = group.name if group else None
        return values


def tool_policy_forms(agent: Agent, data: Any = None) -> list[tuple[Tool, ToolPolicyForm]]:
    """One policy form per tool an agent may be given, on the agent's row for it (a disabled one if none)."""
    existing = {t.tool: t for t in AgentTool.objects.filter(agent=agent).select_related("reviewer_group")}
    return [
        (
            tool,
            ToolPolicyForm(
                data,
                instance=existing.get(tool.name) or AgentTool(agent=agent, tool=tool.name, enabled=False),
                prefix=f"tool-{tool.name}",
            ),
        )
        for tool in agent_tools()
    ]


class PromptForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 8}), max_length=50_000)
    note = forms.CharField(max_length=300, required=False)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.loads(json.dumps(value))
    return value


class RunInputForm(SchemaForm):
    """A run's input, one field per property of the agent's input schema (which validates it on start)."""

    decimals_as_text = False  # JSON Schema's "number" wants a JSON number

    def __init__(self, schema: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", "in")
        super().__init__(schema, *args, **kwargs)
