from __future__ import annotations

from django.urls import path

from runtime import views

app_name = "runtime"
urlpatterns = [
    path("runs/<int:run_id>/cancel", views.run_cancel, name="run_cancel"),
]
