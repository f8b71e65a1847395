"""The gunicorn worker that serves the ASGI application (HTTP and WebSocket) with unix-socket peers.

``gunicorn -k sessions_app.asgi_worker.PeerCredUvicornWorker project.asgi:application``

uvicorn puts no peer credentials in an ASGI scope (``scope["client"]`` is None on a unix socket), so
its HTTP and WebSocket protocol classes are subclassed here: on a new connection over an ``AF_UNIX``
socket they read ``SO_PEERCRED`` from the kernel once and add ``{"pid", "uid", "gid"}`` as
``scope["extensions"]["peercred"]`` to every scope of that connection; `sessions_app.clients` reads
it from there. TCP connections get nothing. This relies on uvicorn's protocol internals
(``connection_made`` and ``self.app``): uvicorn is pinned to a minor range in pyproject.toml, and
tests/integration/test_asgi_unix_socket.py connects over a real socket and checks the uid.

WebSocket frames larger than ``WS_MAX_SIZE`` are refused by uvicorn itself (close 1009); the
TrueNAS caps below it (8 KiB before login, 64 KiB after) are the application's
(`sessions_app.api.websocket`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn_worker import UvicornWorker

from sessions_app.clients import peer_credentials

WS_MAX_SIZE = 1024 * 1024


class _PeerCredentials:
    app: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        peer = peer_credentials(transport.get_extra_info("socket"))
        if peer is None:
            return
        pid, uid, gid = peer
        app = self.app

        async def with_peer(scope: dict[str, Any], receive: Any, send: Any) -> Any:
            extensions = {**(scope.get("extensions") or {}), "peercred": {"pid": pid, "uid": uid, "gid": gid}}
            return await app({**scope, "extensions": extensions}, receive, send)

        self.app = with_peer


class PeerCredH11Protocol(_PeerCredentials, H11Protocol):
    """HTTP/1.1 (h11) with unix-socket peer credentials in the scope."""


class PeerCredWebSocketProtocol(_PeerCredentials, WebSocketsSansIOProtocol):
    """WebSocket (websockets, sans-I/O) with unix-socket peer credentials in the scope."""


class PeerCredUvicornWorker(UvicornWorker):
    """uvicorn under gunicorn, with the protocol classes above and keep-alive pings every 20 s."""

    CONFIG_KWARGS = {
        "loop": "asyncio",
        "http": "sessions_app.asgi_worker:PeerCredH11Protocol",
        "ws": "sessions_app.asgi_worker:PeerCredWebSocketProtocol",
        "ws_max_size": WS_MAX_SIZE,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "lifespan": "off",
        # The client address is decided by the app alone (SESSIONS_TRUSTED_PROXIES): uvicorn would
        # otherwise rewrite it from X-Forwarded-For for any peer in FORWARDED_ALLOW_IPS.
        "proxy_headers": False,
        # No "server: uvicorn" banner (F13): the software and its version are nobody's business.
        "server_header": False,
    }
