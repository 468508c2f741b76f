from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from accounts.views import ThrottledLoginView
from config.api import api, not_found_view

urlpatterns = [
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", api.urls),
    re_path(r"^api/v1/(?P<path>.*)$", not_found_view),
    path("django-admin/", admin.site.urls),
    path("", include("agents.urls")),
    path("", include("runtime.urls")),
    path("", include("accounts.audit_urls")),
    path("", include("accounts.urls")),
    path("", include("ops.urls")),
    path("", include("approvals.urls")),
]
