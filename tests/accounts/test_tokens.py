"""API tokens: when a token was last used is kept to the minute, not written on every call."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.auth import LAST_USED_RESOLUTION
from accounts.models import ApiToken

pytestmark = pytest.mark.django_db


def _token_updates(queries: CaptureQueriesContext) -> int:
    return sum(1 for q in queries.captured_queries if q["sql"].startswith('UPDATE "accounts_apitoken"'))


def test_a_token_records_its_first_use_then_at_most_once_a_minute(refund_agent, api_as):
    api = api_as("reviewer")
    token = ApiToken.objects.get(user__username="reviewer")
    assert token.last_used_at is None

    with CaptureQueriesContext(connection) as first:
        assert api.get("/api/v1/actions").status_code == 200
    token.refresh_from_db()
    used = token.last_used_at
    assert used is not None and _token_updates(first) == 1

    with CaptureQueriesContext(connection) as again:
        for _ in range(3):
            assert api.get("/api/v1/actions").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at == used and _token_updates(again) == 0

    # A minute later the next call moves it on.
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=used - LAST_USED_RESOLUTION - timedelta(seconds=1))
    assert api.get("/api/v1/actions").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at > used


def test_a_revoked_token_is_refused_and_not_marked_used(refund_agent, api_as):
    api = api_as("reviewer")
    ApiToken.objects.filter(user__username="reviewer").update(revoked_at="2026-01-01T00:00:00Z")
    assert api.get("/api/v1/actions").status_code == 401
    assert ApiToken.objects.get(user__username="reviewer").last_used_at is None
