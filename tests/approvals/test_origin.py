from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings

from approvals.origin import parse_origin
from config.asgi import application
from tests.conftest import user

# The consumer reads the database from its own threads: they must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cookie(demo) -> bytes:
    client = Client()
    client.force_login(user("reviewer"))
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def connects(cookie: bytes, origin: bytes | None, *, host: bytes = b"127.0.0.1:8000", scheme: str = "ws") -> bool:
    """The whole ASGI stack with a logged-in session: only the handshake's headers vary."""

    async def attempt() -> bool:
        headers = [(b"host", host), (b"cookie", cookie)]
        if origin is not None:
            headers.append((b"origin", origin))
        communicator = WebsocketCommunicator(application, "/ws/inbox/", headers=headers)
        communicator.scope["scheme"] = scheme
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    return async_to_sync(attempt)()


def test_the_pages_own_origin_is_accepted(cookie):
    assert connects(cookie, b"http://127.0.0.1:8000") is True


def test_default_ports_are_the_same_origin(cookie):
    assert connects(cookie, b"http://127.0.0.1:80", host=b"127.0.0.1") is True
    assert connects(cookie, b"https://127.0.0.1", host=b"127.0.0.1:443", scheme="wss") is True


def test_another_port_on_the_same_host_is_refused(cookie):
    assert connects(cookie, b"http://127.0.0.1:9999") is False
    assert connects(cookie, b"http://127.0.0.1") is False


def test_another_scheme_on_the_same_host_is_refused(cookie):
    assert connects(cookie, b"https://127.0.0.1:8000") is False  # ws:// socket, https:// page
    assert connects(cookie, b"http://127.0.0.1:8000", scheme="wss") is False


def test_another_host_is_refused(cookie):
    assert connects(cookie, b"http://evil.example:8000") is False
    assert connects(cookie, b"http://localhost:8000") is False  # allowed, but not the host asked for


def test_a_missing_or_unusable_origin_is_refused(cookie):
    assert connects(cookie, None) is False
    for origin in (b"null", b"", b"http://127.0.0.1:8000/", b"http://user@127.0.0.1:8000", b"127.0.0.1:8000"):
        assert connects(cookie, origin) is False, origin


def test_a_host_outside_allowed_hosts_is_refused_even_from_its_own_origin(cookie):
    assert connects(cookie, b"http://evil.example", host=b"evil.example") is False


def test_a_csrf_trusted_origin_is_accepted_exactly(cookie):
    behind_proxy = b"https://countersign.example.com"
    assert connects(cookie, behind_proxy) is False
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://countersign.example.com"]):
        assert connects(cookie, behind_proxy) is True
        assert connects(cookie, b"https://countersign.example.com:8443") is False
        assert connects(cookie, b"http://countersign.example.com") is False
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://*.example.com"]):
        assert connects(cookie, behind_proxy) is False


def test_the_proxy_header_makes_the_own_origin_https_when_django_trusts_it(cookie):
    async def attempt(proto: bytes) -> bool:
        headers = [(b"host", b"127.0.0.1:8000"), (b"cookie", cookie), (b"origin", b"https://127.0.0.1:8000")]
        headers.append((b"x-forwarded-proto", proto))
        communicator = WebsocketCommunicator(application, "/ws/inbox/", headers=headers)
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    assert async_to_sync(attempt)(b"https") is False  # not trusted unless configured
    with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        assert async_to_sync(attempt)(b"https") is True
        assert async_to_sync(attempt)(b"http") is False


def test_origins_compare_as_scheme_host_and_port():
    assert parse_origin("HTTP://Example.COM") == ("http", "example.com", 80)
    assert parse_origin("https://[::1]:8443") == ("https", "[::1]", 8443)
    assert parse_origin("ftp://example.com") is None
    assert parse_origin("http://example.com:99999") is None
    assert parse_origin("http://example.com?x") is None
