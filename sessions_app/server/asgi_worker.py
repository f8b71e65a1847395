"""The gunicorn worker that serves the ASGI application (HTTP and WebSocket) with unix-socket peers.

``gunicorn -k sessions_app.server.asgi_worker.PeerCredUvicornWorker project.asgi:application``

uvicorn puts no peer credentials in an ASGI scope (``scope["client"]`` is None on a unix socket), so
its HTTP and WebSocket protocol classes are subclassed here: on a new connection over an ``AF_UNIX``
socket they read ``SO_PEERCRED`` from the kernel once and add ``{"pid", "uid", "gid"}`` as
``scope["extensions"]["peercred"]`` to every scope of that connection; `sessions_app.auth.clients` reads
it from there. TCP connections get nothing. This relies on uvicorn's protocol internals
(``connection_made`` and ``self.app``): uvicorn is pinned to a minor range in pyproject.toml, and
tests/ws/test_unix_socket.py connects over a real socket and checks the uid.

**TLS on TCP only.** With gunicorn's ``--certfile``/``--keyfile`` (``bin/serve`` with ``TLS_CERT``
and ``TLS_KEY``) the TCP binds serve HTTPS and WSS on the same port, but the unix socket stays
plain: local tools (``midclt -u ws+unix://…``) connect to it without TLS, and the kernel, not a
certificate, tells who they are. uvicorn's ``Server.startup`` hands its one SSL context to every
listening socket gunicorn passes it, so `PeerCredUvicornWorker` serves through `TLSOnTCPServer`,
which gives the context to ``AF_INET``/``AF_INET6`` sockets alone and starts the others without
TLS. The ASGI ``scope["scheme"]`` stays right per connection (uvicorn's protocols read it from the
transport): ``https``/``wss`` on a TLS connection, ``http``/``ws`` on a plain TCP or unix one, and
the application relies on it to know that a request came over TLS (`sessions_app.auth.clients`, SCRAM's
``tls-server-end-point`` channel binding). The context is a server-only one
(``PROTOCOL_TLS_SERVER``, TLS 1.2 at least): gunicorn still hands uvicorn its deprecated, ignored
``ssl_version`` default, the generic ``PROTOCOL_TLS``. tests/test_tls.py checks the scheme of every
kind of connection against a real gunicorn.

WebSocket frames larger than ``WS_MAX_SIZE`` are refused by uvicorn itself (close 1009); the
TrueNAS caps below it (8 KiB before login, 64 KiB after) are the application's
(`sessions_app.api.websocket`).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from sessions_app.auth.clients import peer_credentials

WS_MAX_SIZE = 1024 * 1024
#: The address families that get TLS when it is configured; every other listener (AF_UNIX) is plain.
TLS_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class _PeerCredentials(asyncio.Protocol):
    # Mixed in before a uvicorn protocol class (which is an asyncio.Protocol too: same MRO as with
    # no base), so that super() is that class.
    app: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
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


class TLSOnTCPServer(Server):
    """uvicorn's server, with the SSL context (if any) on the TCP listeners only (see the module),
    that ends the event streams when it shuts down."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None or self.config.ssl is None:
            await super().startup(sockets=sockets)
            return
        # uvicorn's own start-up (lifespan, protocol factory, bookkeeping) for the TLS listeners...
        await super().startup(sockets=[sock for sock in sockets if sock.family in TLS_FAMILIES])
        plain = [sock for sock in sockets if sock.family not in TLS_FAMILIES]
        if not plain:
            return
        # ...and the same protocol factory as uvicorn's, without TLS, for the others.
        config = self.config
        loop = asyncio.get_running_loop()

        # Config types it as any asyncio protocol class; uvicorn's (and ours above) take these keywords.
        protocol_class: Callable[..., asyncio.Protocol] = config.http_protocol_class

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return protocol_class(
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        for sock in plain:
            server = await loop.create_server(create_protocol, sock=sock, ssl=None, backlog=config.backlog)
            self.servers.append(server)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown waits for every open response to complete; an event stream never does
        by itself, so the worker waited for gunicorn's graceful timeout (30 s) after SIGTERM. The
        hub ends the streams first (`sessions_app.server.live.Hub.server_closing`), then uvicorn closes
        idle connections and WebSockets as usual: a worker with no request running stops in about a
        second (tests/test_shutdown.py)."""
        from sessions_app.server.live import hub  # the app (and Django) is loaded by now, not at import

        hub.server_closing()
        await super().shutdown(sockets=sockets)


class PeerCredUvicornWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker ships no type information
    """uvicorn under gunicorn, with the protocol classes above, keep-alive pings every 20 s, and TLS
    (``--certfile``/``--keyfile``) on TCP binds only."""

    CONFIG_KWARGS = {
        "loop": "asyncio",
        "http": "sessions_app.server.asgi_worker:PeerCredH11Protocol",
        "ws": "sessions_app.server.asgi_worker:PeerCredWebSocketProtocol",
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.cfg.is_ssl:
            self.config.ssl_version = ssl.PROTOCOL_TLS_SERVER

    async def _serve(self) -> None:
        # UvicornWorker._serve (uvicorn-worker 0.4), with TLSOnTCPServer in place of uvicorn's Server.
        self.config.app = self.wsgi
        server = TLSOnTCPServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
