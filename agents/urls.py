from __future__ import annotations

from django.urls import path

from agents import views

app_name = "agents"
urlpatterns = [
    path("agents/", views.agent_list, name="agent_list"),
    path("agents/<slug:slug>/runs", views.run_start, name="run_start"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
]
