"""Request types: views behind @login_required (a real User, django-htmx attached) and the token API."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class AuthedRequest(HttpRequest):
    user: User
    htmx: HtmxDetails


class ApiRequest(HttpRequest):
    auth: User  # set by accounts.auth.BearerToken
