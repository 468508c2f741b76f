from __future__ import annotations

from django.urls import path

from accounts import views

app_name = "accounts"
urlpatterns = [
    path("access/", views.access_overview, name="access"),
    path("access/agents/<slug:slug>/", views.agent_access, name="agent_access"),
    path("access/users/<str:username>/", views.user_access, name="user_access"),
    path("access/roles", views.role_change, name="role_change"),
    path("access/grants", views.grant_change, name="grant_change"),
]
