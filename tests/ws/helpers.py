"""A small JSON-RPC client over a raw WebSocket (the ``websockets`` sync client), for the WS tests.

`RPCSocket` sends requests with increasing ids and reads until the reply with the wanted id comes,
keeping every other message (server notifications, replies to other requests) for later, since the
server may answer out of order and sends ``collection_update`` notifications at any time.

`open_socket` / `open_unix_socket` close the socket and then wait until the server has ended the
session it held: the server ends it after the close, asynchronously, and on PostgreSQL that write
would otherwise race the test database flush (TRUNCATE) of the test's teardown and can deadlock.

`wss_connect` is the sync client's ``connect`` for ``wss://`` URLs with `WakingClientConnection`
(websockets 17 closes a socket without shutting it down; see there).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect, unix_connect

from tests.conftest import PASSWORD
from tests.integration.servers import Server
from tests.ws.conftest import ws_url

NOT_AUTHENTICATED = 207
TIMEOUT = 5.0


class WakingClientConnection(ClientConnection):
    """The sync client's connection, shut down before it is closed.

    websockets 17's ``close_socket`` only closes the socket. Its reader thread calls ``recv`` when
    the socket polls readable; over TLS that can be a record with no application data (a TLS 1.3
    session ticket), and the reader then blocks inside ``SSL_read``. Closing the descriptor does not
    wake a thread blocked on it (Linux), so ``connect()``, which joins the reader after a failed
    opening handshake, waited forever: a CI run hung there twice. Shutting the socket down first
    makes the blocked read return, so a failed handshake is a failure, never a hang.
    """

    def close_socket(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        super().close_socket()


def wss_connect(url: str, **kwargs: Any) -> ClientConnection:
    """``websockets.sync.client.connect`` with `WakingClientConnection` (for ``wss://`` URLs)."""
    return connect(url, create_connection=WakingClientConnection, **kwargs)


class RPCSocket:
    """One WebSocket at ``/api/current``, spoken to as JSON-RPC 2.0."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        #: Replies read while waiting for another id, by id.
        self.replies: dict[Any, dict[str, Any]] = {}
        #: Server notifications (messages without an id), in arrival order, not yet consumed.
        self.notifications: list[dict[str, Any]] = []

    # --- sending ----------------------------------------------------------------------------------

    def send_raw(self, text: str | bytes) -> None:
        self.ws.send(text)

    def request(self, method: str, *params: Any, request_id: Any = None) -> Any:
        """Send a request (not waiting for the reply); its id."""
        if request_id is None:
            request_id = next(self._ids)
        self.ws.send(
            json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)})
        )
        return request_id

    # --- receiving --------------------------------------------------------------------------------

    def receive(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message, whatever it is (raises TimeoutError / ConnectionClosed)."""
        message = json.loads(self.ws.recv(timeout))
        assert isinstance(message, dict), message
        return message

    def _pump(self, deadline: float) -> None:
        message = self.receive(max(deadline - time.monotonic(), 0.001))
        if "id" in message:
            self.replies[message["id"]] = message
        else:
            self.notifications.append(message)

    def reply(self, request_id: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The whole reply to ``request_id``."""
        deadline = time.monotonic() + timeout
        while request_id not in self.replies:
            self._pump(deadline)
        return self.replies.pop(request_id)

    def call(self, method: str, *params: Any, timeout: float = TIMEOUT) -> Any:
        """The ``result`` of a call (AssertionError with the reply when it failed)."""
        reply = self.reply(self.request(method, *params), timeout)
        assert "result" in reply, reply
        return reply["result"]

    def error(self, method: str, *params: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The ``error`` of a call that must fail."""
        reply = self.reply(self.request(method, *params), timeout)
        assert "error" in reply, reply
        return reply["error"]

    def notification(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """The first notification (kept or arriving within ``timeout``) that ``predicate`` accepts."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.notifications):
                if predicate(message):
                    return self.notifications.pop(index)
            self._pump(deadline)

    def removed(self, session_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return self.notification(lambda m: removed_id(m) == session_id, timeout)

    def added(self, session_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return self.notification(lambda m: added_id(m) == session_id, timeout)

    def closed(self, timeout: float = TIMEOUT) -> int | None:
        """Wait until the server closes the socket; its close code (None: no close frame)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._pump(deadline)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None

    # --- shortcuts --------------------------------------------------------------------------------

    def login(self, username: str, password: str = PASSWORD) -> None:
        assert self.call("auth.login", username, password) is True

    def session(self) -> dict[str, Any]:
        """This socket's own session row (``current`` is true for it alone)."""
        row = self.call("auth.my_sessions", [["current", "=", True]], {"get": True})
        assert isinstance(row, dict), row
        return row

    def held_session(self) -> str | None:
        """The id of the session this socket holds, if it is open and logged in (for `settled`)."""
        try:
            reply = self.reply(self.request("auth.my_sessions", [["current", "=", True]], {"get": True}), 2.0)
        except Exception:  # closed, or in no state to answer: it holds nothing we can wait for
            return None
        result = reply.get("result")
        return result.get("id") if isinstance(result, dict) else None

    def subscribe_sessions(self) -> str:
        subscription = self.call("core.subscribe", "auth.sessions")
        assert isinstance(subscription, str), subscription
        return subscription


def added_id(message: dict[str, Any]) -> str | None:
    params = message.get("params") or {}
    if message.get("method") != "collection_update" or params.get("msg") != "added":
        return None
    return (params.get("fields") or {}).get("id")


def removed_id(message: dict[str, Any]) -> str | None:
    params = message.get("params") or {}
    if message.get("method") != "collection_update" or params.get("msg") != "removed":
        return None
    return ((params.get("extra") or {}).get("fields") or {}).get("id")


def session_ended(session_id: str) -> bool:
    """Whether the server has ended session ``session_id`` (read from the shared test database)."""
    from sessions_app.models import UserSession

    return not UserSession.objects.filter(public_id=session_id, ended_at__isnull=True).exists()


@contextlib.contextmanager
def settled(ws: ClientConnection) -> Iterator[RPCSocket]:
    """``ws`` as an `RPCSocket`; on the way out, close it and wait for the server to end its session."""
    rpc = RPCSocket(ws)
    held: str | None = None
    try:
        with ws:
            try:
                yield rpc
            finally:
                held = rpc.held_session()
    finally:
        if held is not None:
            wait_for(lambda: session_ended(held))


@contextlib.contextmanager
def open_socket(server: Server, **kwargs: Any) -> Iterator[RPCSocket]:
    """A WebSocket to ``server``'s TCP bind (``kwargs`` go to `websockets.sync.client.connect`)."""
    with settled(connect(ws_url(server), open_timeout=TIMEOUT, close_timeout=2, **kwargs)) as rpc:
        yield rpc


@contextlib.contextmanager
def open_unix_socket(path: str, **kwargs: Any) -> Iterator[RPCSocket]:
    """A WebSocket over the unix socket at ``path`` (a ``unix:`` prefix is dropped)."""
    ws = unix_connect(
        path.removeprefix("unix:"),
        "ws://localhost/api/current",
        open_timeout=TIMEOUT,
        close_timeout=2,
        **kwargs,
    )
    with settled(ws) as rpc:
        yield rpc


def history(server: Server, cookie: str, session_id: str) -> list[dict[str, Any]]:
    """The row of ``session_id``, active or ended, through HTTP with an admin cookie."""
    rows = server.call(
        "auth.sessions", [["id", "=", session_id]], {"extra": {"history": True}}, cookie=cookie
    ).result
    assert isinstance(rows, list), rows
    return rows


def wait_for(predicate: Callable[[], Any], timeout: float = TIMEOUT, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (its value); AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {predicate}")
        time.sleep(interval)
