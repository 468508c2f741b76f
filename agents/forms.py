"""Forms that parse and validate configuration input; the writes go through agents.configuration."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import forms

from agents.configuration import TOOL_FIELDS
from agents.models import Agent, AgentTool
from agents.services import AGENT_CONFIG_FIELDS

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


class PromptForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 8}), max_length=50_000)
    note = forms.CharField(max_length=300, required=False)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.loads(json.dumps(value))
    return value
