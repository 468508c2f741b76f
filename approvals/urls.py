from __future__ import annotations

from django.urls import path

from approvals import config_views, spot_check_views, views, webhook_views

app_name = "approvals"
urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("actions/bulk", views.action_bulk, name="action_bulk"),
    path("actions/<int:action_id>/", views.action_detail, name="action_detail"),
    path("actions/<int:action_id>/decide", views.action_decide, name="action_decide"),
    path("actions/<int:action_id>/claim", views.action_claim, name="action_claim"),
    path("actions/<int:action_id>/undo", views.action_undo, name="action_undo"),
    path("actions/<int:action_id>/resolve", views.action_resolve, name="action_resolve"),
    # Spot checks: auto-approved actions sampled for grading after the fact.
    path("spot-checks/", spot_check_views.spot_check_list, name="spot_checks"),
    path("agents/<slug:slug>/webhook/", webhook_views.webhook_page, name="webhook"),
    path("agents/<slug:slug>/webhook/save", webhook_views.webhook_save, name="webhook_save"),
    path("webhook-deliveries/<int:delivery_id>/redeliver", webhook_views.delivery_redeliver, name="redeliver"),
    path("spot-checks/<int:spot_check_id>/grade", spot_check_views.spot_check_grade, name="spot_check_grade"),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/read", views.notifications_read, name="notifications_read"),
    # Four eyes: configuration posts that may queue a change, and the changes queue.
    path("agents/<slug:slug>/configure/save", config_views.agent_configure_save, name="configure_save"),
    path("agents/<slug:slug>/prompt", config_views.prompt_propose, name="prompt_propose"),
    path("changes/", config_views.config_changes, name="changes"),
    path("exports/interventions.jsonl", views.export_interventions, name="export_interventions"),
    path("actions/<int:action_id>/evaluate", config_views.prompt_evaluate_again, name="prompt_evaluate"),
]
