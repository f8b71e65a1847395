"""The served configuration on its unix socket: a WebSocket (and an HTTP request) from this process
is the ``UNIX_SOCKET`` session of its kernel credentials (``SO_PEERCRED``: pid, uid, gid), with no
credentials sent. The test process runs as root, whose uid 0 maps to ``SESSIONS_ROOT_USERNAME`` and
makes the session ``internal``.
"""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Callable
from typing import Any

import pytest

from sessions_app import conf
from tests.integration.servers import Server
from tests.ws.helpers import NOT_AUTHENTICATED, open_socket, open_unix_socket, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = f"UNIX socket (pid={os.getpid()} uid={os.getuid()} gid={os.getgid()})"
CURRENT = ([["current", "=", True]], {"get": True})


def account_name(uid: int) -> str:
    """The user a peer with ``uid`` maps to: the configured root account, or the local account name."""
    return str(conf.get("SESSIONS_ROOT_USERNAME")) if uid == 0 else pwd.getpwuid(uid).pw_name


ME = account_name(os.getuid())


@pytest.fixture
def me(create_user: Callable[..., Any]) -> Any:
    """The user this process's uid maps to ("root" when run as root); a superuser, so it may list sessions."""
    return create_user(ME, superuser=True)


def assert_unix_session(row: dict[str, Any]) -> None:
    assert row["current"] is True
    assert row["credentials"] == "UNIX_SOCKET"
    assert row["origin"] == ORIGIN
    assert row["credentials_data"]["username"] == ME
    assert row["internal"] is (os.getuid() == 0)
    assert row["secure_transport"] is True


def test_websocket_over_the_unix_socket_is_a_unix_socket_session(ws_server: Server, me: Any) -> None:
    with open_unix_socket(ws_server.binds[1]) as ws:
        assert ws.call("auth.me")["pw_name"] == ME  # logged in from the start: no auth.login
        row = ws.call("auth.sessions", *CURRENT)
        assert_unix_session(row)
        # Listed once, and current only for this socket.
        rows = ws.call("auth.sessions", [["origin", "=", ORIGIN]], {"select": ["id", "current"]})
        assert rows == [{"id": row["id"], "current": True}]
        session_id = row["id"]
    # Closing the socket ends its session (once the server has seen the close).
    with open_unix_socket(ws_server.binds[1]) as ws:
        history = [[["id", "=", session_id]], {"extra": {"history": True}}]
        ended = wait_for(lambda: [r for r in ws.call("auth.sessions", *history) if r["end_reason"]])
        assert [r["end_reason"] for r in ended] == ["LOGOUT"]
        assert ws.call("auth.sessions", *CURRENT)["id"] != session_id


def test_each_websocket_over_the_unix_socket_is_its_own_session(ws_server: Server, me: Any) -> None:
    with open_unix_socket(ws_server.binds[1]) as one, open_unix_socket(ws_server.binds[1]) as two:
        first, second = one.call("auth.sessions", *CURRENT), two.call("auth.sessions", *CURRENT)
        assert first["id"] != second["id"]
        assert first["origin"] == second["origin"] == ORIGIN


def test_unix_socket_peer_without_a_user_is_not_authenticated(ws_server: Server) -> None:
    with open_unix_socket(ws_server.binds[1]) as ws:  # no user named ME exists
        error = ws.error("auth.me")
        assert error["data"]["error"] == NOT_AUTHENTICATED
        assert ws.call("core.ping") == "pong"


def test_same_server_over_tcp_is_not_a_unix_socket_session(ws_server: Server, me: Any) -> None:
    with open_socket(ws_server) as ws:
        assert ws.error("auth.me")["data"]["error"] == NOT_AUTHENTICATED


def test_http_over_the_unix_socket_through_the_asgi_server(ws_server: Server, me: Any) -> None:
    reply = ws_server.call("auth.sessions", *CURRENT, via=ws_server.binds[1])
    assert_unix_session(reply.result)
    assert ws_server.call("auth.me", via=ws_server.binds[1]).result["pw_name"] == ME
    # Over TCP, the same request without credentials is anonymous.
    error = ws_server.call("auth.me").error
    assert error["data"]["error"] == NOT_AUTHENTICATED


@pytest.mark.skipif(os.getuid() != 0, reason="only uid 0 makes an internal session")
def test_internal_sessions_emit_no_events(
    ws_server: Server, me: Any, create_user: Callable[..., Any]
) -> None:
    create_user("admin", superuser=True)
    create_user("alice")
    with open_socket(ws_server) as watcher:
        watcher.login("admin")
        watcher.subscribe_sessions()
        with open_unix_socket(ws_server.binds[1]) as ws:
            internal_id = ws.call("auth.sessions", *CURRENT)["id"]
        history = [[["id", "=", internal_id]], {"extra": {"history": True}}]
        wait_for(lambda: watcher.call("auth.sessions", *history)[0]["end_reason"])  # ended on close
        # A later, non-internal login: once its ADDED is here, the internal session's ADDED and
        # REMOVED (earlier in the outbox) would have been delivered before it.
        with open_socket(ws_server) as ws:
            ws.login("alice")
            watcher.added(ws.session()["id"])
        assert [m for m in watcher.notifications if internal_id in json.dumps(m)] == []
