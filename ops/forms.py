from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet

from agents.models import Agent
from agents.secrets import SecretUnavailable, resolve_secret
from ops.models import AlertRule


class AlertRuleForm(forms.ModelForm):
    webhook_url = forms.URLField(required=False, assume_scheme="https", max_length=200)

    class Meta:
        model = AlertRule
        fields = ["name", "kind", "agent", "threshold", "enabled", "email", "webhook_url", "webhook_secret_ref"]

    def __init__(self, *args: Any, agents: QuerySet[Agent], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["agent"]
        assert isinstance(field, forms.ModelChoiceField)
        # Operators set rules only for agents they may operate.
        field.queryset = agents
        field.required = True

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("webhook_url") and not data.get("webhook_secret_ref"):
            self.add_error("webhook_secret_ref", "A webhook needs a signing secret (env:NAME or file:/path).")
        ref = data.get("webhook_secret_ref")
        if ref:
            try:
                resolve_secret(ref)
            except SecretUnavailable as exc:
                self.add_error("webhook_secret_ref", str(exc))
        if data.get("threshold") is not None and data["threshold"] < 0:
            self.add_error("threshold", "The threshold cannot be negative.")
        return data

    def audit_view(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["agent"] = data["agent"].slug if data.get("agent") else None
        return data
