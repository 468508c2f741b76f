from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet

from agents.models import Agent
from agents.secrets import SecretUnavailable, resolve_secret
from ops.models import ALERT_THRESHOLDS, AlertRule


class AlertRuleForm(forms.ModelForm):
    webhook_url = forms.URLField(required=False, assume_scheme="https", max_length=200)

    class Meta:
        model = AlertRule
        fields = ["name", "kind", "agent", "threshold", "enabled", "email", "webhook_url", "webhook_secret_ref"]

    def __init__(self, *args: Any, agents: QuerySet[Agent], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["agent"]
        assert isinstance(field, forms.ModelChoiceField)
        # Operators set rules only for agents they may operate; no agent means all of
        # those (ops.alerts evaluates such a rule for the agents its creator operates).
        field.queryset = agents
        field.required = False
        field.empty_label = "all agents you operate"
        field.help_text = "Empty: every agent you may operate."

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
        threshold, kind = data.get("threshold"), data.get("kind")
        if threshold is not None and kind in ALERT_THRESHOLDS:
            low, high, whole = ALERT_THRESHOLDS[kind]
            # The form field already refuses NaN and infinity; 1e308 is finite but no threshold.
            if not low <= threshold <= high:
                self.add_error("threshold", f"For this kind the threshold is between {low:g} and {high:g}.")
            elif whole and threshold != int(threshold):
                self.add_error("threshold", "For this kind the threshold is a whole number.")
        return data

    def audit_view(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["agent"] = data["agent"].slug if data.get("agent") else None
        return data
