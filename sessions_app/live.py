"""The per-process live hub: outbox events to subscribers, and sessions that end close their sockets.

One hub per server process (`hub`), started on the event loop by the first WebSocket connection or
event stream. Every ``SESSIONS_EVENT_POLL_INTERVAL`` seconds it reads the new rows of the event outbox
(`sessions_app.events`) and

* hands each event to every local listener (WebSocket connections subscribed to ``auth.sessions``,
  the dashboard's event streams);
* closes every local WebSocket whose session was removed (terminated, logged out or evicted through
  any interface, on any process or host): the socket closes within one poll of the commit.

Every ``SESSIONS_SOCKET_CHECK_INTERVAL`` seconds it also validates the sessions of its open sockets
against the database (absolute expiry, user disabled, password changed, API key revoked or expired,
parent ended: what `sessions_app.services.sessions.session_check` checks on every HTTP request),
ending them with their reason, which closes them and emits REMOVED. The database work runs in one
thread of its own, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from django.db import DatabaseError, close_old_connections, connection

from sessions_app import conf
from sessions_app.events import EventCursor
from sessions_app.models import SessionEvent, UserSession

logger = logging.getLogger(__name__)


class Listener(Protocol):
    """A local receiver of events: a WebSocket connection or an event stream."""

    def deliver(self, event: SessionEvent) -> None: ...


class Socket(Protocol):
    """A local WebSocket that holds a session (`sessions_app.api.websocket.Connection`)."""

    client: Any

    @property
    def session_pk(self) -> int | None: ...

    def session_gone(self, pk: int) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.listeners: set[Listener] = set()
        self.sockets: set[Socket] = set()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessions-hub")

    # --- registration (event-loop side) -----------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sessions-hub")

    def add_listener(self, listener: Listener) -> None:
        self.listeners.add(listener)
        self._ensure_started()

    def remove_listener(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    def add_socket(self, socket: Socket) -> None:
        self.sockets.add(socket)
        self._ensure_started()

    def remove_socket(self, socket: Socket) -> None:
        self.sockets.discard(socket)

    async def run_db(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func`` in the hub's database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, _with_connection, func, *args)

    # --- the loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        cursor: EventCursor | None = None
        loop = asyncio.get_running_loop()
        next_check = loop.time()
        # Runs for the life of the process once started: stopping when the last socket goes would
        # race with the next one registering.
        while True:
            try:
                if cursor is None:
                    cursor = await self.run_db(EventCursor.at_end)
                events = await self.run_db(cursor.fetch)
                for event in events:
                    self._dispatch(event)
                if loop.time() >= next_check:
                    next_check = loop.time() + float(conf.get("SESSIONS_SOCKET_CHECK_INTERVAL"))
                    await self._check_sockets()
            except DatabaseError:
                logger.warning("live events: the database cannot be read; retrying", exc_info=True)
            except Exception:  # the hub must outlive any one bad event
                logger.exception("live events: unexpected error")
            await asyncio.sleep(float(conf.get("SESSIONS_EVENT_POLL_INTERVAL")))

    def _dispatch(self, event: SessionEvent) -> None:
        if event.kind == SessionEvent.Kind.REMOVED and event.ended:
            for socket in [s for s in self.sockets if s.session_pk == event.session]:
                socket.session_gone(event.session)
        if event.internal:
            return
        for listener in list(self.listeners):
            try:
                listener.deliver(event)
            except Exception:
                logger.exception("live events: a listener failed")

    async def _check_sockets(self) -> None:
        held = {s.session_pk: s for s in self.sockets if s.session_pk is not None}
        if not held:
            return
        valid = await self.run_db(_still_valid, {pk: s.client for pk, s in held.items()})
        for pk, socket in held.items():
            if pk not in valid:
                socket.session_gone(pk)


def _with_connection(func: Callable[..., Any], *args: Any) -> Any:
    close_old_connections()  # drop a connection that is broken or past CONN_MAX_AGE
    try:
        return func(*args)
    except DatabaseError:
        with contextlib.suppress(DatabaseError):
            connection.close()
        raise


def _still_valid(clients: dict[int, Any]) -> set[int]:
    """The pks of ``clients`` whose session is still valid; the others are ended with their reason."""
    from sessions_app.services.sessions import session_check

    valid: set[int] = set()
    # One query for every open socket: what validation reads of an API_KEY or TOKEN session (its key,
    # its parent and the parent's user and key) comes joined, not a query per socket.
    rows = UserSession.objects.select_related("user", "api_key", "parent__user", "parent__api_key")
    for row in rows.filter(pk__in=list(clients)):
        if session_check(row=row, client=clients[row.pk], touch=False) is not None:
            valid.add(row.pk)
    return valid


hub = Hub()
