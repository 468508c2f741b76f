from __future__ import annotations

from django.urls import path

from accounts import audit_views as views

app_name = "audit"
urlpatterns = [
    path("audit/", views.audit_log, name="log"),
    path("audit/export.<fmt>", views.audit_export, name="export"),
]
