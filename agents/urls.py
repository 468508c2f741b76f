from __future__ import annotations

from django.urls import path

from agents import tool_sources_views, views

app_name = "agents"
urlpatterns = [
    path("agents/", views.agent_list, name="agent_list"),
    path("agents/new", tool_sources_views.agent_new, name="agent_new"),
    path("tool-sources/", tool_sources_views.tool_sources, name="tool_sources"),
    path("tool-sources/add", tool_sources_views.tool_source_add, name="tool_source_add"),
    path("tool-sources/<slug:slug>/sync", tool_sources_views.tool_source_sync, name="tool_source_sync"),
    path("upstream-tools/<str:name>/approve", tool_sources_views.upstream_tool_approve, name="upstream_tool_approve"),
    path("agents/<slug:slug>/runs", views.run_start, name="run_start"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/resume", views.run_resume, name="run_resume"),
    path("breakers/<int:breaker_id>/reset", views.breaker_reset, name="breaker_reset"),
    path("tools/", views.tool_catalogue, name="tool_catalogue"),
    path("agents/<slug:slug>/configure", views.agent_configure, name="configure"),
    path("agents/<slug:slug>/prompt/<int:number>/rollback", views.prompt_rollback, name="prompt_rollback"),
    path("agents/<slug:slug>/pause", views.agent_pause, name="pause"),
]
