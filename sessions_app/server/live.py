"""The per-process live hub: outbox events to subscribers, and sessions that end close their sockets.

One hub per server process (`hub`), started on the event loop by the first WebSocket connection or
event stream. Every ``SESSIONS_EVENT_POLL_INTERVAL`` seconds it reads the new rows of the event outbox
(`sessions_app.events`) and

* hands each event to every local listener (WebSocket connections subscribed to ``auth.sessions``,
  the dashboard's event streams);
* hands a ``notice`` event (a new-sign-in notice created or answered) only to the notice streams
  of the user it concerns (`sessions_app.server.streams.notice_events`), never to ``auth.sessions``
  subscribers;
* closes every local WebSocket whose session was removed (terminated, logged out or evicted through
  any interface, on any process or host): the socket closes within one poll of the commit.

Every ``SESSIONS_SOCKET_CHECK_INTERVAL`` seconds it also validates the sessions of its open sockets
against the database (absolute expiry, user disabled, password changed, API key revoked or expired,
parent ended: what `sessions_app.services.sessions.session_check` checks on every HTTP request),
ending them with their reason, which closes them and emits REMOVED. The database work runs in one
thread of its own, off the event loop.

Authorisation follows the account (security.md F3): what a listener receives depends on its user
holding ``AUTH_SESSIONS_READ`` (`STREAM_ROLE`). A role lost anywhere writes a ``roles`` outbox event
in the transaction of the change (`sessions_app.signals`); the hub, reading the outbox in order,
re-checks the roles of the listeners concerned (one query) *before* it delivers any later event, and
tells those who lost the role (`Listener.read_role_lost`: a WebSocket drops its subscriptions with
TrueNAS's ``notify_unsubscribed``, an event stream ends). So nothing committed after the change
reaches them, on any process. The periodic check reads the role in its one query as well, for
changes that bypass signals (``QuerySet.update``, raw SQL): those end within the check interval.
Whoever admits a new listener checks the role after reading `Hub.roles_generation` and registers
only if no ``roles`` event was handled meanwhile (`Hub.admitted`), so a change racing the admission
is not missed either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast

from django.db import DatabaseError, close_old_connections, connection
from django.db.models import BooleanField, ExpressionWrapper

from sessions_app import conf
from sessions_app.auth.roles import Role, holders_q, role_holders
from sessions_app.events import EventCursor
from sessions_app.models import SessionEvent, UserSession

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    class _StreamRole(TypedDict):
        stream_role: bool


logger = logging.getLogger(__name__)

#: The role that every event a listener receives depends on (they are about every user's sessions).
STREAM_ROLE = Role.AUTH_SESSIONS_READ


class Listener(Protocol):
    """A local receiver of events: a WebSocket connection or an event stream."""

    def deliver(self, event: SessionEvent) -> None: ...

    @property
    def reader_pk(self) -> int | None:
        """The user whose `STREAM_ROLE` what this listener receives depends on (None: nothing)."""
        ...

    def read_role_lost(self) -> None:
        """Its user no longer holds `STREAM_ROLE`: stop delivering (called on the event loop)."""
        ...


class Socket(Protocol):
    """A local WebSocket that holds a session (`sessions_app.api.websocket.Connection`)."""

    client: Any

    @property
    def session_pk(self) -> int | None: ...

    def session_gone(self, pk: int) -> None: ...

    def read_role_lost(self) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.listeners: set[Listener] = set()
        self.sockets: set[Socket] = set()
        #: Bumped as the hub starts handling each ``roles`` event (see `admitted`).
        self.roles_generation = 0
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

    def admitted(
        self, user_pk: int | None, register: Callable[[], None], unregister: Callable[[], None]
    ) -> bool:
        """Check that ``user_pk`` holds `STREAM_ROLE` now, and ``register`` a listener if so.

        The role is read from the database after `roles_generation`, and the registration stands
        only if no ``roles`` event was handled in between: a change that commits during the check
        is then either seen by the check or handled by the hub with the listener registered. Runs
        the query in the calling thread (not on the event loop).
        """
        while True:
            generation = self.roles_generation
            if user_pk not in role_holders(STREAM_ROLE, [user_pk]):
                return False
            register()
            if self.roles_generation == generation:
                return True
            unregister()

    def server_closing(self) -> None:
        """The server is shutting down (SIGTERM): every local event stream ends now, so that its
        connection can close and the worker exits in a moment instead of at the graceful timeout
        (issue 17). A stream closed this way sends no ``end`` event (its session has not ended): the
        browser's EventSource reconnects to another worker, or to this server once it is back.
        WebSockets are closed by uvicorn itself (1012, service restart); the hub's loop is cancelled
        with the event loop."""
        for listener in list(self.listeners):
            closing = getattr(listener, "server_closing", None)
            if closing is not None:
                closing()

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
                    if event.kind == SessionEvent.Kind.ROLES:
                        await self._roles_changed(event)  # before any later event is delivered
                    else:
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
        if event.kind == SessionEvent.Kind.NOTICE:
            self._dispatch_notice(event)
            return
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

    def _dispatch_notice(self, event: SessionEvent) -> None:
        """A new-sign-in notice changed: only the notice streams of its user hear of it (a listener
        says whose notices it follows with ``notice_user_pk``; others have none)."""
        user_pk = (event.fields or {}).get("user")
        for listener in list(self.listeners):
            if user_pk is not None and getattr(listener, "notice_user_pk", None) == user_pk:
                try:
                    listener.deliver(event)
                except Exception:
                    logger.exception("live events: a listener failed")

    async def _roles_changed(self, event: SessionEvent) -> None:
        self.roles_generation += 1
        users = (event.fields or {}).get("users")
        concerned = {
            listener: pk
            for listener in list(self.listeners)  # threads may register meanwhile (`admitted`)
            if (pk := listener.reader_pk) is not None and (users is None or pk in users)
        }
        if not concerned:
            return
        try:
            holders = await self.run_db(role_holders, STREAM_ROLE, set(concerned.values()))
        except DatabaseError:  # fail closed: they resubscribe (or reload) when the database is back
            logger.warning("live events: roles cannot be read; ending the streams concerned", exc_info=True)
            holders = set()
        for listener, pk in concerned.items():
            if pk not in holders:
                listener.read_role_lost()

    async def _check_sockets(self) -> None:
        held = {s.session_pk: s for s in self.sockets if s.session_pk is not None}
        if not held:
            return
        states = await self.run_db(_socket_states, {pk: s.client for pk, s in held.items()})
        for pk, socket in held.items():
            if pk not in states:
                socket.session_gone(pk)
            elif not states[pk]:
                socket.read_role_lost()


def _with_connection(func: Callable[..., Any], *args: Any) -> Any:
    close_old_connections()  # drop a connection that is broken or past CONN_MAX_AGE
    try:
        return func(*args)
    except DatabaseError:
        with contextlib.suppress(DatabaseError):
            connection.close()
        raise


def _socket_states(clients: dict[int, Any]) -> dict[int, bool]:
    """The pks of ``clients`` whose session is still valid, each with whether its user holds
    `STREAM_ROLE`; the others are ended with their reason."""
    from sessions_app.services.sessions import session_check

    states: dict[int, bool] = {}
    # One query for every open socket: what validation reads of an API_KEY or TOKEN session (its key,
    # its parent and the parent's user and key) comes joined, and the role as two EXISTS, not a query
    # per socket.
    rows = UserSession.objects.select_related("user", "api_key", "parent__user", "parent__api_key")
    reads = ExpressionWrapper(holders_q(STREAM_ROLE, prefix="user__"), output_field=BooleanField())
    annotated = rows.filter(pk__in=list(clients)).annotate(stream_role=reads)
    # The queryset class fixes its rows to UserSession, so iterating it drops the annotation.
    for row in cast("Iterable[WithAnnotations[UserSession, _StreamRole]]", annotated):
        if session_check(row=row, client=clients[row.pk], touch=False) is not None:
            states[row.pk] = bool(row.stream_role)
    return states


hub = Hub()
