from __future__ import annotations

from django.urls import path

from ops import views

app_name = "ops"
urlpatterns = [
    path("ops/", views.exceptions, name="exceptions"),
    path("ops/agents/<slug:slug>/", views.agent_dashboard, name="agent"),
    path("ops/agents/<slug:slug>/trust", views.agent_trust, name="trust"),
    path("ops/agents/<slug:slug>/trust/refit", views.agent_trust_refit, name="trust_refit"),
    path("ops/agents/<slug:slug>/trust/<str:tool>/adopt", views.agent_trust_adopt, name="trust_adopt"),
    path("ops/alerts/", views.alert_rules, name="alerts"),
    path("ops/alerts/<int:rule_id>/toggle", views.alert_rule_toggle, name="alert_toggle"),
    path("metrics", views.prometheus, name="metrics"),
]
