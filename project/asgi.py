"""ASGI entry point: the WebSocket JSON-RPC transport at ``/api/current`` and Django for the rest.

Served by ``bin/serve`` as
``gunicorn -k sessions_app.server.asgi_worker.PeerCredUvicornWorker project.asgi:application``
(HTTP and WebSocket on one port, and on the unix socket with the peer's credentials).
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

django_application = get_asgi_application()

from sessions_app.api.websocket import websocket_application  # noqa: E402  (needs the app registry)
from sessions_app.server.asgi_http import WSGIBridge  # noqa: E402

#: Every view is synchronous but the event streams (the dashboard's, and the new-sign-in notices' of
#: every page): HTTP runs on Django's WSGI handler in a thread pool (one hop per request, see
#: sessions_app.server.asgi_http), the streams on Django's ASGI handler.
ASGI_PATHS = frozenset({"/sessions/events/", "/me/notices/events/"})
http_application = WSGIBridge()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await websocket_application(scope, receive, send)
    elif scope["type"] == "lifespan":
        # Nothing to set up or tear down; answer so that servers running lifespan "on" start.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http" and scope["path"] not in ASGI_PATHS:
        await http_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
