"""Server-sent events for the dashboard: ``GET /sessions/events/`` streams ``auth.sessions`` events.

The sessions page subscribes with ``EventSource`` (registry.js) and reloads its table when a session
begins or ends anywhere. The stream is the browser's counterpart of ``core.subscribe("auth.sessions")``:
same events (`sessions_app.server.live` hub), same role (``AUTH_SESSIONS_READ``), authenticated by the
page's session cookie (a same-origin GET that changes nothing, so no CSRF token is needed). It ends
with an ``end`` event, and closes, as soon as the viewer's own session ends (terminated, expired,
signed out) or the viewer loses the role (security.md F3: before any event committed after the
change; `sessions_app.server.live`), and is re-checked against the database every second like a WebSocket.
The page reloads on ``end``, and shows what the viewer may still see.

Event streams need the ASGI server (``bin/serve``); under WSGI the view answers 501, and the page
simply stays as loaded.

``GET /me/notices/events/`` (`notice_events`) is the stream of every signed-in page: it needs no role
and carries nothing but ``notice`` (a new-sign-in notice of the viewer's own account was created or
answered: the page fetches its banner again, `sessions_app.views.devices.notice_banner`) and ``end``
(the viewer's session ended: the page reloads, and so goes to the sign-in page). The dashboard's
stream stays what it was: it is about every user's sessions and keeps its role (F3); widening it to
every user would have meant filtering each of its events per viewer. The pages open the notice stream
only while they are visible (``notices.js``), so that background tabs hold no connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from sessions_app.auth.clients import client_from_request
from sessions_app.auth.request import RegistryRequest
from sessions_app.auth.roles import Role, has_role
from sessions_app.models import SessionEvent, UserSession
from sessions_app.server.live import hub

KEEPALIVE_SECONDS = 15
QUEUE_SIZE = 256
_END = object()
#: The server is shutting down: the stream ends without an ``end`` event (the session lives on).
_CLOSE = object()


class _Stream:
    """One open event stream: a listener of the hub and, like a socket, the holder of a session."""

    def __init__(self, session_pk: int, client: Any, user_pk: int | None) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)
        self.client = client
        self._session_pk: int | None = session_pk
        self._user_pk = user_pk
        #: Set when the stream must end: nothing queued is sent after it (even if the queue was full).
        self.ending = False
        #: Set when it ends because the server shuts down (no ``end`` event then).
        self.closing = False

    @property
    def session_pk(self) -> int | None:
        return self._session_pk

    @property
    def reader_pk(self) -> int | None:
        return None if self.ending else self._user_pk

    def session_gone(self, pk: int) -> None:
        if pk == self._session_pk:
            self._session_pk = None
            self._end()

    def read_role_lost(self) -> None:
        self._end()

    def deliver(self, event: SessionEvent) -> None:
        if not self.ending:
            self._put({"kind": event.kind, "id": event.public_id})

    def _end(self) -> None:
        self.ending = True
        self._put(_END)  # wakes the reader; if the queue is full, the next item it takes does

    def server_closing(self) -> None:
        """`sessions_app.server.live.Hub.server_closing`: end the response now, without ``end``."""
        self.ending = True
        self.closing = True
        self._put(_CLOSE)

    def _put(self, item: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a stalled reader misses events, then reloads
            self.queue.put_nowait(item)


class _NoticeStream(_Stream):
    """The notice stream of one page: ``notice`` events of its user's own notices, ``end`` when its
    session ends. It depends on no role (`reader_pk` is None), so role changes never end it."""

    @property
    def notice_user_pk(self) -> int | None:
        return self._user_pk

    @property
    def reader_pk(self) -> int | None:
        return None

    def read_role_lost(self) -> None:
        pass  # nothing it carries needs a role

    def deliver(self, event: SessionEvent) -> None:
        if not self.ending:
            self._put({"kind": "notice"})


def _error(status: int, detail: str) -> HttpResponse:
    response = JsonResponse({"error": detail}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def _session_or_refusal(request: RegistryRequest) -> UserSession | HttpResponse:
    """The caller's session, or the response saying why a stream cannot start (not a GET, no
    session, not served over ASGI)."""
    if request.method != "GET":
        response = _error(405, "method not allowed: use GET")
        response["Allow"] = "GET"
        return response
    if request.auth_session is None:
        return _error(401, "sign in first")
    if not hasattr(request, "scope"):
        return _error(501, "live updates need the ASGI server (bin/serve)")
    return request.auth_session


async def session_events(request: RegistryRequest) -> HttpResponse | StreamingHttpResponse:
    session = _session_or_refusal(request)
    if isinstance(session, HttpResponse):
        return session
    if not await sync_to_async(has_role)(request.user, Role.AUTH_SESSIONS_READ):
        return _error(403, "this stream needs the AUTH_SESSIONS_READ role")
    stream = _Stream(session.pk, client_from_request(request), request.user.pk)
    # Read the role afresh and register only if no role change was handled meanwhile (F3).
    admitted = await sync_to_async(hub.admitted)(
        request.user.pk, partial(hub.listeners.add, stream), partial(hub.listeners.discard, stream)
    )
    if not admitted:
        return _error(403, "this stream needs the AUTH_SESSIONS_READ role")
    hub.add_listener(stream)  # already registered: this starts the hub if it is not running
    hub.add_socket(stream)
    return _stream_response(stream)


async def notice_events(request: RegistryRequest) -> HttpResponse | StreamingHttpResponse:
    """``GET /me/notices/events/``: the viewer's own new-sign-in notices changed (no role needed)."""
    session = _session_or_refusal(request)
    if isinstance(session, HttpResponse):
        return session
    stream = _NoticeStream(session.pk, client_from_request(request), request.user.pk)
    hub.add_listener(stream)
    hub.add_socket(stream)  # its session ending ends the stream (checked every second, as sockets)
    return _stream_response(stream)


def _stream_response(stream: _Stream) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_events(stream), content_type="text/event-stream")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
    return response


async def _events(stream: _Stream) -> AsyncIterator[str]:
    try:
        yield "retry: 5000\n\n"
        while True:
            try:
                item = await asyncio.wait_for(stream.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is _CLOSE or stream.closing:
                return
            if item is _END or stream.ending:
                yield "event: end\ndata: {}\n\n"
                return
            data = {name: value for name, value in item.items() if name != "kind"}
            yield f"event: {item['kind']}\ndata: {json.dumps(data)}\n\n"
    finally:
        hub.remove_listener(stream)
        hub.remove_socket(stream)
