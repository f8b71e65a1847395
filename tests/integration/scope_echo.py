"""An ASGI application that answers with what the server put in its scope, for tests/test_tls.py.

Served by gunicorn with the project's worker (``sessions_app.server.asgi_worker.PeerCredUvicornWorker``)
in place of ``project.asgi:application``, it shows the worker's view of each connection directly:
an HTTP request gets ``{"type", "scheme", "peercred"}`` as JSON; a WebSocket is accepted and gets
the same as its first message. No Django, no database.
"""

from __future__ import annotations

import json
from typing import Any


def _described(scope: dict[str, Any]) -> bytes:
    extensions = scope.get("extensions") or {}
    return json.dumps(
        {"type": scope["type"], "scheme": scope.get("scheme"), "peercred": "peercred" in extensions}
    ).encode()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        while (await receive()).get("more_body"):
            pass
        body = _described(scope)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": _described(scope).decode()})
        while (await receive())["type"] != "websocket.disconnect":
            pass
