"""JSON-RPC 2.0 over a WebSocket at ``/api/current``: the transport every TrueNAS client speaks.

The connection is the session (spec/websocket.md): it is unauthenticated until an ``auth.login*``
call on it succeeds, which creates the session row (``current`` is true for this socket); logout ends
the session and leaves the socket open; closing the socket ends it; terminating it (through any
interface, on any process or host), its expiry and every cascade close the socket with code 1000
(`sessions_app.server.live`). A connection over the unix socket whose uid maps to a user is a
``UNIX_SOCKET`` session from the start. The session cookie is never read: only in-band logins count,
so a cross-site page that opens a socket gains nothing.

Each message is one JSON-RPC request, dispatched by `sessions_app.api.jsonrpc.execute` to the same
methods as ``POST /api/current``, plus ``core.subscribe`` / ``core.unsubscribe`` here. Calls on one
socket run concurrently (up to `MAX_IN_FLIGHT`; clients match replies by id), except the ones that
change who the connection is, which run one at a time. Before each call the connection's session is
re-checked in the database, as every HTTP request is. Caps as in TrueNAS: 8 KiB per message before
login (close 1007), 64 KiB after (close 1009).

A subscription that needs a role ends when the user loses it (security.md F3), before any event
committed after the change is sent (`sessions_app.server.live`): the client gets what TrueNAS sends when it
drops a subscription, ``notify_unsubscribed`` with ``{"collection": name, "error": {"error": 13,
"errname": "EACCES", ...}}``, and the socket stays open, since its session is still valid (``auth.*``
calls keep working; ``core.subscribe`` to it answers ``EACCES``). A disabled account's sessions end,
which closes the socket (1000) as a termination does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError, OperationalError, close_old_connections
from django.http.request import split_domain_port, validate_host

from sessions_app.api.jsonrpc import (
    AUTHENTICATED_BODY_LIMIT,
    UNAUTHENTICATED_BODY_LIMIT,
    UNAVAILABLE,
    BadJSON,
    Envelope,
    Outcome,
    dumps,
    error_data,
    error_reply,
    execute,
    internal_error_data,
    loads,
    parse_envelope,
)
from sessions_app.api.methods import METHODS, CallContext, Method
from sessions_app.auth.clients import Client, client_from_scope
from sessions_app.auth.prepared import RowLoader
from sessions_app.auth.roles import Role, has_role
from sessions_app.events import COLLECTION, notification
from sessions_app.exceptions import InvalidParams, NotAuthorized
from sessions_app.models import Credentials, EndReason, SessionEvent, UserSession
from sessions_app.server.live import hub

logger = logging.getLogger(__name__)

PATHS = frozenset({"/api/current", "/api/v25.10.0"})
#: Concurrent calls per socket; a client sending more waits (the socket is not read meanwhile).
MAX_IN_FLIGHT = 16
#: Methods that change who the connection is: one at a time per socket.
IDENTITY_METHODS = frozenset(
    {
        "auth.login",
        "auth.login_ex",
        "auth.login_ex_continue",
        "auth.login_with_api_key",
        "auth.login_with_token",
        "auth.logout",
        "auth.set_password",
    }
)
#: What can be subscribed to, and the role it needs (None: any authenticated caller).
SUBSCRIBABLE: dict[str, Role | None] = {
    # The official client subscribes to it at login; it must succeed for every user (no jobs here).
    "core.get_jobs": None,
    COLLECTION: Role.AUTH_SESSIONS_READ,
    "*": Role.AUTH_SESSIONS_READ,
}
#: Tries at ending the session of a closed socket (a deadlock victim or a busy database retries).
END_ATTEMPTS = 3
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_INVALID_TEXT, CLOSE_TOO_BIG = 1000, 1008, 1007, 1009

#: The ASGI channel callables (messages are dicts keyed by ``type``).
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Calls run in threads of their own (Django's ORM is synchronous); each thread keeps its database
# connection between calls, subject to CONN_MAX_AGE and the health check, like a WSGI worker thread.
_CALLS = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="sessions-ws")
_BY_PK = RowLoader(UserSession, "id", related="user")


# --- subscriptions ------------------------------------------------------------------------------


def _connection(context: CallContext) -> Connection:
    # WS_METHODS are called by `Connection.call` only, which passes itself.
    assert context.connection is not None
    return context.connection


def _core_subscribe(context: CallContext, params: list[Any]) -> str:
    name = params[0] if params else None
    if not isinstance(name, str) or name not in SUBSCRIBABLE:
        raise InvalidParams.one("event", f"one of {sorted(SUBSCRIBABLE)} is required")
    role = SUBSCRIBABLE[name]
    if role is None:
        return _connection(context).subscribe(name)
    if not has_role(context.user, role):
        raise NotAuthorized()
    # The role read afresh, and no role change handled by the hub meanwhile (F3).
    subscribed: list[str] = []
    if not hub.admitted(
        context.caller.pk,
        lambda: subscribed.append(_connection(context).subscribe(name)),
        lambda: _connection(context).unsubscribe(subscribed.pop()),
    ):
        raise NotAuthorized()
    return subscribed[0]


def _core_unsubscribe(context: CallContext, params: list[Any]) -> None:
    subscription = params[0] if params else None
    if not isinstance(subscription, str):
        raise InvalidParams.one("id", "a subscription id (string) is required")
    _connection(context).unsubscribe(subscription)


WS_METHODS: dict[str, Method] = {
    **METHODS,
    "core.subscribe": Method("core.subscribe", _core_subscribe, max_params=1),
    "core.unsubscribe": Method("core.unsubscribe", _core_unsubscribe, max_params=1),
}


# --- one connection -------------------------------------------------------------------------------


class Connection:
    """One WebSocket: its client, its session (if logged in), its subscriptions and its writer."""

    def __init__(self, scope: dict[str, Any], send: Send, client: Client) -> None:
        self.scope = scope
        self.client = client
        self._send = send
        self._send_lock = asyncio.Lock()
        self.identity_lock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()
        self.session: UserSession | None = None
        self.user: Any = AnonymousUser()
        self.pending_secret: str | None = None
        #: subscription id -> (event name, newest outbox id when it was made: older events not sent)
        self.subscriptions: dict[str, tuple[str, int]] = {}
        self.closed = asyncio.Event()
        #: The session an identity call of this socket is ending (its REMOVED must not close us).
        self.leaving: int | None = None

    # hub side
    @property
    def session_pk(self) -> int | None:
        return self.session.pk if self.session is not None else None

    def session_gone(self, pk: int) -> None:
        """Session ``pk`` ended elsewhere (terminated, expired, a cascade): close the socket.

        Not when this socket is itself ending it (logout, a new login replacing it): the socket stays.
        """
        if pk != self.session_pk or pk == self.leaving:
            return
        self.session = None
        self.user = AnonymousUser()
        self.loop.create_task(self.close(CLOSE_NORMAL))

    @property
    def reader_pk(self) -> int | None:
        gated = any(SUBSCRIBABLE.get(name) is not None for name, _ in list(self.subscriptions.values()))
        return self.user.pk if gated and self.user.is_authenticated else None

    def read_role_lost(self) -> None:
        """The user lost the role of the ``auth.sessions`` events: end those subscriptions, as
        TrueNAS ends a subscription it no longer allows (``notify_unsubscribed``, EACCES)."""
        for subscription, (name, _) in list(self.subscriptions.items()):
            if SUBSCRIBABLE.get(name) is not None and self.subscriptions.pop(subscription, None) is not None:
                reason = f"{SUBSCRIBABLE[name]} role required"
                params = {"collection": name, "error": error_data("EACCES", reason)}
                message = {"jsonrpc": "2.0", "method": "notify_unsubscribed", "params": params}
                self.loop.create_task(self.send_json(message))

    def deliver(self, event: SessionEvent) -> None:
        if self.user.is_authenticated and any(
            name in (COLLECTION, "*") and event.id > since
            for name, since in list(self.subscriptions.values())
        ):
            self.loop.create_task(self.send_json(notification(event)))

    # subscriptions (called from call threads: plain dict operations, atomic under the GIL)
    def subscribe(self, name: str) -> str:
        """Events committed before this call are not sent (as in TrueNAS, a subscription sees what
        happens after it; the hub may not have delivered older ones yet)."""
        subscription = str(uuid.uuid4())
        newest = SessionEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        self.subscriptions[subscription] = (name, newest)
        return subscription

    def unsubscribe(self, subscription: str) -> None:
        self.subscriptions.pop(subscription, None)

    # writing
    async def send_json(self, payload: dict[str, Any]) -> None:
        if self.closed.is_set():
            return
        async with self._send_lock:
            with contextlib.suppress(Exception):  # the peer went away meanwhile
                await self._send({"type": "websocket.send", "text": dumps(payload)})

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed.is_set():
            return
        async with self._send_lock:
            if self.closed.is_set():
                return
            self.closed.set()
            with contextlib.suppress(Exception):
                await self._send({"type": "websocket.close", "code": code, "reason": reason})

    # calls (run in a call thread)
    def call(self, envelope: Envelope) -> Outcome | None:
        """Re-check the session, then run one call; None when the session has ended (close)."""
        close_old_connections()
        try:
            return self._call(envelope)
        finally:
            close_old_connections()

    def _call(self, envelope: Envelope) -> Outcome | None:
        from sessions_app.services.sessions import session_check

        session = self.session
        if session is not None:
            row = _BY_PK.load(session.pk)
            checked = session_check(row=row, client=self.client) if row is not None else None
            if checked is None:
                return None
            session = checked
        context = CallContext(
            request=None,
            client=self.client,
            user=session.user if session is not None else AnonymousUser(),
            session=session,
            pending_secret=self.pending_secret,
            connection=self,
        )
        identity = envelope.method_name in IDENTITY_METHODS
        if identity:
            self.leaving = session.pk if session is not None else None
        try:
            outcome = execute(envelope, context, WS_METHODS)
            if identity:
                self.pending_secret = context.pending_secret
                if context.session is not None and context.session.ended_at is None:
                    self.session, self.user = context.session, context.user
                elif context.session is not None:  # logged out
                    self.session, self.user = None, AnonymousUser()
                    self.subscriptions.clear()
        finally:
            self.leaving = None
        return outcome

    def open_unix_session(self) -> None:
        """A unix-socket peer whose uid maps to a user is logged in from the start (``UNIX_SOCKET``)."""
        from sessions_app.middleware import unix_socket_user
        from sessions_app.services.sessions import session_create

        close_old_connections()
        assert self.client.peer is not None
        user = unix_socket_user(self.client.peer[1])
        if user is not None:
            created = session_create(
                credentials=Credentials.UNIX_SOCKET,
                client=self.client,
                user=user,
                internal=self.client.peer[1] == 0,
                audit_data={"transport": "websocket"},
            )
            self.session, self.user = created.session, user

    def end_session(self) -> None:
        """The socket closed: its session ends (LOGOUT), unless it already has."""
        from sessions_app.services.session_ending import session_end

        session = self.session
        if session is None:
            return
        for attempt in range(END_ATTEMPTS):
            close_old_connections()
            try:
                session_end(
                    session=session,
                    reason=EndReason.LOGOUT,
                    actor=session.username,
                    address=self.client.origin,
                    note="connection closed",
                )
                return
            except OperationalError:
                # Busy or a deadlock victim: nobody else will end this session, so try again.
                if attempt == END_ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))
            finally:
                close_old_connections()


# --- the ASGI application ----------------------------------------------------------------------


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def _acceptable(scope: dict[str, Any], client: Client) -> bool:
    """No Origin is fine (programs send none); a present Origin must name an allowed host (this is
    what stops a cross-site page). Host must be allowed too, except over the unix socket."""
    hosts = _allowed_hosts()
    origin = _header(scope, b"origin")
    if origin is not None:
        netloc = urlsplit(origin).netloc if "://" in origin else ""
        domain, _ = split_domain_port(netloc)
        if not domain or not validate_host(domain, hosts):
            return False
    if client.peer is None:
        domain, _ = split_domain_port(_header(scope, b"host") or "")
        if not domain or not validate_host(domain, hosts):
            return False
    return True


async def websocket_application(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """ASGI ``websocket`` scopes at `PATHS`."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    client = client_from_scope(scope)
    if scope.get("path") not in PATHS or not _acceptable(scope, client):
        await send({"type": "websocket.close", "code": CLOSE_POLICY})  # before accept: HTTP 403
        return
    await send({"type": "websocket.accept"})
    connection = Connection(scope, send, client)
    loop = asyncio.get_running_loop()
    if client.peer is not None:
        try:
            await loop.run_in_executor(_CALLS, connection.open_unix_session)
        except DatabaseError:
            logger.exception("websocket: cannot open the unix-socket session")
            await connection.close(1011, "database unavailable")
            return
    hub.add_socket(connection)
    hub.add_listener(connection)
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    try:
        await _read_loop(connection, receive, slots, tasks)
    finally:
        hub.remove_listener(connection)
        hub.remove_socket(connection)
        connection.closed.set()
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        with contextlib.suppress(DatabaseError):
            await loop.run_in_executor(_CALLS, connection.end_session)


async def _read_loop(
    connection: Connection, receive: Receive, slots: asyncio.Semaphore, tasks: set[asyncio.Task[None]]
) -> None:
    counter = itertools.count()
    while not connection.closed.is_set():
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] != "websocket.receive":
            continue
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode("utf-8", "surrogatepass")
        if connection.session is None and len(data) > UNAUTHENTICATED_BODY_LIMIT:
            await connection.close(CLOSE_INVALID_TEXT, "Anonymous connection max message length is 8 kB")
            return
        if len(data) > AUTHENTICATED_BODY_LIMIT:
            await connection.close(CLOSE_TOO_BIG, "Max message length is 64 kB")
            return
        try:
            decoded = loads(data)
        except BadJSON as exc:
            await connection.send_json(error_reply(None, -32700, f"Parse error: {exc}"))
            continue
        envelope = parse_envelope(decoded)
        if isinstance(envelope, Outcome):
            if envelope.reply is not None:
                await connection.send_json(envelope.reply)
            continue
        await slots.acquire()
        task = asyncio.create_task(_run(connection, envelope, slots), name=f"ws-call-{next(counter)}")
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _run(connection: Connection, envelope: Envelope, slots: asyncio.Semaphore) -> None:
    loop = asyncio.get_running_loop()
    try:
        lock = connection.identity_lock if envelope.method_name in IDENTITY_METHODS else None
        async with lock or contextlib.nullcontext():
            try:
                outcome = await loop.run_in_executor(_CALLS, connection.call, envelope)
            except DatabaseError:
                logger.exception("websocket: database error before %s", envelope.method_name)
                outcome = _failed(envelope, error_data("EAGAIN", UNAVAILABLE))
            except Exception:
                error_id = uuid.uuid4().hex
                logger.exception("websocket: %s failed (request id %s)", envelope.method_name, error_id)
                outcome = _failed(envelope, internal_error_data(error_id))
        if outcome is None:
            await connection.close(CLOSE_NORMAL)
        elif outcome.reply is not None:
            await connection.send_json(outcome.reply)
    except Exception:
        logger.exception("websocket: call %s failed", envelope.method_name)
    finally:
        slots.release()


def _failed(envelope: Envelope, data: dict[str, Any]) -> Outcome:
    return Outcome(
        None if envelope.notification else error_reply(envelope.request_id, -32001, "Method call error", data)
    )
