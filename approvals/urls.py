from __future__ import annotations

from django.urls import path

from approvals import views

app_name = "approvals"
urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("actions/<int:action_id>/", views.action_detail, name="action_detail"),
    path("actions/<int:action_id>/decide", views.action_decide, name="action_decide"),
    path("actions/<int:action_id>/undo", views.action_undo, name="action_undo"),
    path("actions/<int:action_id>/resolve", views.action_resolve, name="action_resolve"),
]
