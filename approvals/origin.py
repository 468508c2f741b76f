"""Which pages may open the inbox socket: same origin as the request, or an origin the settings trust.

A browser sends the session cookie with a websocket handshake from any site, and
there is no CSRF token on a socket, so the Origin header is the only thing that
tells the app's own page from someone else's. Channels' AllowedHostsOriginValidator
compares the host alone, which accepts another port or plain http on the same host
(another service on that machine, or a man in the middle of the http:// origin).
This compares scheme, host and port, the way the CSRF check compares origins.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

logger = logging.getLogger(__name__)

Origin = tuple[str, str, int]  # scheme, host (lowercase, IPv6 in brackets), port

DEFAULT_PORTS = {"http": 80, "https": 443}


def _normalise(scheme: str, netloc: str) -> Origin | None:
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS or "@" in netloc:
        return None
    host, port = split_domain_port(netloc)
    if not host:
        return None
    if not port:
        return scheme, host, DEFAULT_PORTS[scheme]
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return scheme, host, int(port)


def parse_origin(value: str) -> Origin | None:
    """`scheme://host[:port]` as a comparable triple; None for anything else ("null", paths, userinfo)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.path or parts.query or parts.fragment or value.endswith(("?", "#")):
        return None
    return _normalise(parts.scheme, parts.netloc)


def _allowed_hosts() -> list[str]:
    # The same list Django's HttpRequest.get_host() uses.
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return allowed


def _is_secure(scope: dict[str, Any], headers: dict[bytes, list[bytes]]) -> bool:
    # Behind a TLS-terminating proxy the socket arrives as ws://; trust the proxy's
    # header exactly when Django does for HTTP (SECURE_PROXY_SSL_HEADER).
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        raw = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        values = headers.get(raw)
        if values:
            return values[0].decode("latin-1").split(",")[0].strip() == secure_value
    return scope.get("scheme", "ws") == "wss"


def origin_allowed(scope: dict[str, Any]) -> bool:
    """True if the handshake's Origin is the request's own origin or a CSRF_TRUSTED_ORIGINS entry."""
    headers: dict[bytes, list[bytes]] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(bytes(name).lower(), []).append(bytes(value))
    origins, hosts = headers.get(b"origin", []), headers.get(b"host", [])
    # No Origin (not a browser, or a stripped one) and duplicated headers are refused:
    # nothing here can tell whose page it is.
    if len(origins) != 1 or len(hosts) != 1:
        return False
    try:
        origin_text, host_text = origins[0].decode("ascii"), hosts[0].decode("ascii")
    except UnicodeDecodeError:
        return False
    origin = parse_origin(origin_text)
    if origin is None:
        return False
    # The Host header must be one this site answers to, whichever rule admits the origin.
    host, _ = split_domain_port(host_text)
    if not host or not validate_host(host, _allowed_hosts()):
        return False
    own = _normalise("https" if _is_secure(scope, headers) else "http", host_text)
    if origin == own:
        return True
    # Exact entries only: a wildcard entry ("https://*.example.com") parses to no origin and matches nothing.
    trusted = {parse_origin(entry) for entry in settings.CSRF_TRUSTED_ORIGINS}
    return origin in trusted - {None}


class SameOriginWebsocket:
    """ASGI middleware: refuse a websocket handshake whose Origin is not this site's (or a trusted one)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            logger.warning("websocket refused: origin not allowed (path %r)", scope.get("path", "")[:200])
            await WebsocketDenier.as_asgi()(scope, receive, send)
            return
        await self.app(scope, receive, send)
