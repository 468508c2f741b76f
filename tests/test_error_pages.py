from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.views import defaults

from tests.conftest import user


@pytest.fixture(autouse=True)
def _debug_off(settings):
    settings.DEBUG = False  # Django shows its own technical pages otherwise


@pytest.mark.django_db
def test_a_missing_page_renders_the_styled_404_with_a_way_back(demo):
    client = Client()
    client.force_login(user("reviewer"))
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert '<link rel="stylesheet" href="/static/css/app.css">' in body
    assert '<a class="button" href="/home/">Back to your work</a>' in body
    assert '<a href="/agents/">Agents &amp; runs</a>' in body  # the site's own layout


@pytest.mark.django_db
def test_a_refused_page_renders_the_styled_403_with_a_way_back(demo):
    client = Client()
    client.force_login(user("reviewer"))
    response = client.get("/audit/")
    assert response.status_code == 403
    body = response.content.decode()
    assert "Not allowed" in body and '<a class="button" href="/home/">Back to your work</a>' in body
    assert "/static/css/app.css" in body


@pytest.mark.parametrize(
    ("view", "status", "title"),
    [(defaults.server_error, 500, "Something went wrong"), (defaults.bad_request, 400, "Bad request")],
)
def test_the_500_and_400_pages_render_without_a_database_or_a_request_context(view, status, title):
    # No django_db mark: a query here would fail the test, as it would fail a broken site.
    request = RequestFactory().get("/")
    response = view(request) if status == 500 else view(request, Exception("bad"))
    assert response.status_code == status
    body = response.content.decode()
    assert title in body
    assert '<link rel="stylesheet" href="/static/css/app.css">' in body
    assert '<a class="button" href="/home/">Back to your work</a>' in body
