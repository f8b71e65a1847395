"""HTTP under the ASGI server: Django's WSGI handler, run in a thread pool, one hop per request.

Every view and middleware of this project is synchronous. Django's ASGI handler runs such a stack
by hopping between the event loop and a fresh thread several times per request (request body
spooling, each middleware that can run both ways, the view): ~2 ms of a 2.5 ms ``core.ping``
measured here, against 0.5 ms through a WSGI worker. `WSGIBridge` instead reads the request body on
the event loop, then runs the whole WSGI application in a pooled thread -- as gunicorn's gthread
worker would -- and streams the response back chunk by chunk. The unix-socket peer credentials that
`sessions_app.server.asgi_worker` put in the scope reach the request as ``META["asgi.scope"]``.

Only the server-sent-events stream (an async view) goes through Django's ASGI handler.
"""

from __future__ import annotations

import asyncio
import io
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

#: Threads per server process running requests (gunicorn's gthread default would be 1 per worker ×
#: --threads); a request waiting on the database holds one.
THREADS = 32


def environ_from_scope(scope: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The WSGI environ of an ASGI HTTP scope (PEP 3333: strings are latin-1 decoded bytes)."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": server[0] if server[0] is not None else "localhost",
        "SERVER_PORT": str(server[1] if len(server) > 1 and server[1] is not None else 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "asgi.scope": scope,
    }
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for raw_name, raw_value in scope.get("headers") or []:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        key = name if name == "CONTENT_TYPE" or name == "CONTENT_LENGTH" else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class WSGIBridge:
    """An ASGI application serving HTTP scopes with a WSGI application in a thread pool."""

    def __init__(self, wsgi_application: Any = None) -> None:
        self.application = wsgi_application or WSGIHandler()
        self.executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="sessions-http")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        limit = max(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0, 64 * 1024) + 1024 * 1024
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await _plain(send, 413, b"request body too large")
                return
            if not message.get("more_body"):
                break
        loop = asyncio.get_running_loop()
        environ = environ_from_scope(scope, bytes(body))
        await loop.run_in_executor(self.executor, self._run, environ, send, loop)

    def _run(self, environ: dict[str, Any], send: Any, loop: asyncio.AbstractEventLoop) -> None:
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [
                int(status.split(" ", 1)[0]),
                [(k.lower().encode("latin-1"), v.strip().encode("latin-1")) for k, v in headers],
            ]
            return lambda data: None  # the legacy write() callable: unused by Django

        def emit(message: dict[str, Any]) -> None:
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        result = self.application(environ, start_response)
        try:
            emit({"type": "http.response.start", "status": started[0], "headers": started[1]})
            for chunk in result:
                if chunk:
                    emit({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
            emit({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


async def _plain(send: Any, status: int, text: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})
