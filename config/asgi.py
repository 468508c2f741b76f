"""ASGI entry point: HTTP through Django, websockets through Channels."""

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
from live.consumers import LiveConsumer  # noqa: E402

# The live socket, told who may join which group (approvals) and whether a session still holds (accounts).
live_socket = LiveConsumer.as_asgi(audience=audience, check_session=session_still_valid)
websocket_urlpatterns = [path("ws/inbox/", live_socket)]


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
            "http": django_asgi_app,
            # Origin check (scheme, host and port): a page on another site, or on another port or
            # scheme of this host, cannot open a socket with the user's cookie.
            "websocket": SameOriginWebsocket(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
