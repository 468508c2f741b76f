"""The real ASGI server answers oversize requests instead of hanging up."""

from __future__ import annotations

import http.client

import pytest

from tests.conftest import needs_postgres, needs_redis

pytestmark = [needs_postgres, needs_redis, pytest.mark.django_db(transaction=True)]


def test_long_query_strings_get_an_answer(bare_stack):
    # Up to the boundary's 8,192 characters the page; past it Django's 414; past the
    # server's 16 KiB request line, daphne's own 414 (it used to close the connection silently).
    for length, status in [(8_000, 200), (12_000, 414), (60_000, 414), (300_000, 414)]:
        connection = http.client.HTTPConnection("127.0.0.1", bare_stack.port, timeout=10)
        connection.request("GET", "/login/?q=" + "x" * length)
        response = connection.getresponse()
        assert (length, response.status) == (length, status)
        assert response.read()
        connection.close()
