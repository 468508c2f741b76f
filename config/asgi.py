"""ASGI entry point: HTTP through Django (the MCP endpoints through the MCP SDK), websockets through Channels."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from accounts.selectors import session_still_valid  # noqa: E402
from approvals.origin import SameOriginWebsocket  # noqa: E402
from approvals.pushes import audience  # noqa: E402
from config import server_limits  # noqa: E402, F401  (daphne answers 414 instead of hanging up)
from core.background import remember_server_loop  # noqa: E402
from gateway.mcp import McpEndpoint  # noqa: E402
from live.consumers import LiveConsumer  # noqa: E402

# The live socket, told who may join which group (approvals) and whether a session still holds (accounts).
live_socket = LiveConsumer.as_asgi(audience=audience, check_session=session_still_valid)
websocket_urlpatterns = [path("ws/inbox/", live_socket)]


class HttpRouter:
    """The agents' MCP endpoints (`/mcp/agents/<slug>/`, the MCP SDK's transport) beside Django."""

    def __init__(self, django_app: Any, mcp_app: Any) -> None:
        self.django_app = django_app
        self.mcp_app = mcp_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.mcp_app if scope["path"].startswith("/mcp/") else self.django_app
        await app(scope, receive, send)


class RecordServerLoop:
    """Remember the server's event loop for the embedded background worker."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.recorded = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self.recorded:
            remember_server_loop(asyncio.get_running_loop())
            self.recorded = True
        await self.app(scope, receive, send)


application = RecordServerLoop(
    ProtocolTypeRouter(
        {
            "http": HttpRouter(django_asgi_app, McpEndpoint()),
            # Origin check (scheme, host and port): a page on another site, or on another port or
            # scheme of this host, cannot open a socket with the user's cookie.
            "websocket": SameOriginWebsocket(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
