from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path, re_path

from accounts.views import ThrottledLoginView
from config.api import api, not_found_view
from config.navigation import home


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    # Resolved per request: with a collectstatic manifest the file's name carries its hash.
    return HttpResponsePermanentRedirect(static("favicon.svg"))


urlpatterns = [
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("home/", home, name="home"),
    # Browsers ask for /favicon.ico where a page names none (a JSON response, a download).
    path("favicon.ico", favicon),
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
