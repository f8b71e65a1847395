"""The WebSocket JSON-RPC transport at ``/api/current`` on the wire (spec/websocket.md), spoken to with
the raw ``websockets`` client against the served configuration: envelopes and ids, error shapes,
subscriptions, message caps, the handshake's Origin policy, and how the socket follows its session
(logout, close, terminate from any interface, cascades).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from websockets.exceptions import InvalidStatus

from sessions_app.auth.roles import Role, grant
from tests.integration.servers import COOKIE, Server
from tests.ws.helpers import NOT_AUTHENTICATED, RPCSocket, added_id, history, open_socket, removed_id

#: Tests that create users: the servers must see them, so they commit (and are flushed afterwards).
#: The others touch no table of the test database and skip the flush, which is slow on PostgreSQL.
WRITES = pytest.mark.django_db(transaction=True)

OPTIONS = {"legacy_jobs": False, "private_methods": False, "py_exceptions": False}
#: A cascade (account change, key deletion) closes a socket within about 1.25 s: the open sockets'
#: sessions are re-validated every second, and ending one is seen by the next outbox poll (the
#: figures of closing are measured in bench/revocation_bench.py). The tests wait with a ceiling of
#: ten times that, which only catches a socket that is never closed.
CASCADE_CLOSE_CEILING = 10 * 1.25


def padded(size: int) -> str:
    """A valid ``core.ping`` request of exactly ``size`` bytes (padded with JSON whitespace)."""
    body = '{"jsonrpc": "2.0", "id": "big", "method": "core.ping", "params": []}'
    assert size >= len(body)
    return body[:-1] + " " * (size - len(body)) + "}"


@pytest.fixture
def admin(create_user: Callable[..., Any]) -> Any:
    return create_user("admin", superuser=True)


@pytest.fixture
def alice(create_user: Callable[..., Any]) -> Any:
    return create_user("alice")


# --- envelopes and ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["a-string id ✓", 0, 7, 2**53, -1])
def test_id_is_echoed_exactly(ws_server: Server, request_id: Any) -> None:
    with open_socket(ws_server) as ws:
        reply = ws.reply(ws.request("core.ping", request_id=request_id))
    assert reply == {"jsonrpc": "2.0", "id": request_id, "result": "pong"}
    assert type(reply["id"]) is type(request_id)


def test_request_without_id_gets_no_reply(ws_server: Server) -> None:
    with open_socket(ws_server) as ws:
        ws.send_raw(json.dumps({"jsonrpc": "2.0", "method": "core.ping", "params": []}))
        ws.send_raw(json.dumps({"jsonrpc": "2.0", "method": "no.such.method", "params": []}))
        assert ws.reply(ws.request("core.ping", request_id="after")) == {
            "jsonrpc": "2.0",
            "id": "after",
            "result": "pong",
        }
        with pytest.raises(TimeoutError):  # nothing else comes, not even later
            ws.receive(timeout=0.5)
        assert ws.replies == {}
        assert ws.notifications == []


@WRITES
def test_replies_to_concurrent_calls_are_matched_by_id(ws_server: Server, admin: Any) -> None:
    with open_socket(ws_server) as ws:
        ws.login("admin")
        sent: dict[Any, Any] = {}
        for n in range(12):
            if n % 3 == 0:
                sent[ws.request("auth.sessions", [], {"count": True}, request_id=f"count-{n}")] = 1
            elif n % 3 == 1:
                sent[ws.request("auth.me", request_id=n)] = "admin"
            else:
                sent[ws.request("core.ping", request_id=f"ping-{n}")] = "pong"
        replies = {}
        for _ in sent:  # read them in whatever order they come
            message = ws.receive()
            assert message["id"] not in replies, message
            replies[message["id"]] = message
    assert set(replies) == set(sent)
    for request_id, expected in sent.items():
        result = replies[request_id]["result"]
        assert (result["pw_name"] if isinstance(result, dict) else result) == expected, replies[request_id]


def test_parse_error_has_a_null_id_and_keeps_the_socket(ws_server: Server) -> None:
    with open_socket(ws_server) as ws:
        ws.send_raw('{"jsonrpc": "2.0", "id": 5, "method": ')
        reply = ws.receive()
        assert reply["id"] is None
        assert reply["error"]["code"] == -32700
        assert isinstance(reply["error"]["message"], str)
        assert ws.call("core.ping") == "pong"


def test_unknown_method(ws_server: Server) -> None:
    with open_socket(ws_server) as ws:
        reply = ws.reply(ws.request("no.such_method", request_id="x"))
    assert reply["id"] == "x"
    assert reply["error"]["code"] == -32601
    assert reply["error"]["message"] == "Method does not exist"


def test_invalid_params_carry_extra_triples(ws_server: Server) -> None:
    with open_socket(ws_server) as ws:
        error = ws.error("core.set_options", {"legacy_jobs": "yes", "bogus": True})
    assert error["code"] == -32602
    assert error["message"] == "Invalid params"
    data = error["data"]
    assert {"error", "errname", "reason", "trace", "extra"} <= set(data)
    extra = data["extra"]
    assert isinstance(extra, list)
    assert extra
    for triple in extra:
        assert isinstance(triple, list), triple
        assert len(triple) == 3, triple
        attribute, message, code = triple
        assert isinstance(attribute, str), triple
        assert isinstance(message, str), triple
        assert type(code) is int, triple
    assert {triple[0] for triple in extra} == {"options.legacy_jobs", "options.bogus"}


def test_method_call_error_before_login(ws_server: Server) -> None:
    with open_socket(ws_server) as ws:
        error = ws.error("auth.me")
    assert error["code"] == -32001
    assert error["message"] == "Method call error"
    data = error["data"]
    assert set(data) >= {"error", "errname", "reason", "trace", "extra"}
    assert data["error"] == NOT_AUTHENTICATED
    assert data["errname"] == "ENOTAUTHENTICATED"
    assert isinstance(data["reason"], str)
    assert data["reason"]
    assert data["trace"] is None or set(data["trace"]) >= {"class", "formatted", "repr", "frames"}
    assert data["extra"] is None or isinstance(data["extra"], list)


def test_set_options_echoes_the_options(ws_server: Server) -> None:
    with open_socket(ws_server) as ws:
        assert ws.call("core.set_options", OPTIONS) == OPTIONS
        assert ws.call("core.set_options", {"legacy_jobs": True}) == {**OPTIONS, "legacy_jobs": True}


# --- subscriptions -------------------------------------------------------------------------------


@WRITES
def test_subscribe_to_jobs_works_for_any_user_and_needs_login(ws_server: Server, alice: Any) -> None:
    with open_socket(ws_server) as ws:
        error = ws.error("core.subscribe", "core.get_jobs")
        assert (error["code"], error["data"]["error"]) == (-32001, NOT_AUTHENTICATED)
        ws.login("alice")
        subscription = ws.call("core.subscribe", "core.get_jobs")
        assert isinstance(subscription, str)
        assert subscription
        assert ws.call("core.unsubscribe", subscription) is None


@WRITES
def test_subscribe_to_sessions_needs_the_sessions_read_role(
    ws_server: Server, alice: Any, admin: Any
) -> None:
    with (
        open_socket(ws_server) as plain,
        open_socket(ws_server) as privileged,
        open_socket(ws_server) as control,
    ):
        plain.login("alice")
        error = plain.error("core.subscribe", "auth.sessions")
        assert error["code"] == -32001
        assert (error["data"]["error"], error["data"]["errname"]) == (errno.EACCES, "EACCES")

        privileged.login("admin")
        subscription = privileged.subscribe_sessions()
        assert privileged.call("core.unsubscribe", subscription) is None
        control.login("admin")
        control.subscribe_sessions()

        # Unsubscribed: alice's logout reaches the control subscriber, not the unsubscribed one.
        alice_id = plain.session()["id"]
        assert plain.call("auth.logout") is True
        control.removed(alice_id)
        # A synchronisation point instead of a sleep: subscribed again, the privileged socket waits
        # for a later session's arrival; its worker delivers outbox events in order, so by then it
        # has handled alice's logout, while it was not subscribed.
        privileged.subscribe_sessions()
        with open_socket(ws_server) as later:
            later.login("admin")
            privileged.added(later.session()["id"])
        assert [m for m in privileged.notifications if removed_id(m) == alice_id] == []


@WRITES
def test_subscribe_to_sessions_with_only_the_read_role(
    ws_server: Server, create_user: Callable[..., Any]
) -> None:
    reader = create_user("reader")
    grant(reader, Role.AUTH_SESSIONS_READ)
    create_user("alice")
    with open_socket(ws_server) as watcher, open_socket(ws_server) as ws:
        watcher.login("reader")
        subscription = watcher.subscribe_sessions()
        assert watcher.call("core.subscribe", "*") != subscription
        ws.login("alice")
        watcher.added(ws.session()["id"])


# --- message caps --------------------------------------------------------------------------------


def test_anonymous_message_cap_is_8_kib(ws_server: Server) -> None:
    with open_socket(ws_server) as ws:
        ws.send_raw(padded(8 * 1024))
        assert ws.reply("big")["result"] == "pong"
        ws.send_raw(padded(8 * 1024 + 1))
        assert ws.closed() == 1007


@WRITES
def test_authenticated_message_cap_is_64_kib(ws_server: Server, alice: Any) -> None:
    with open_socket(ws_server) as ws:
        ws.login("alice")
        ws.send_raw(padded(64 * 1024))
        assert ws.reply("big")["result"] == "pong"
        ws.send_raw(padded(64 * 1024 + 1))
        assert ws.closed() == 1009


# --- the handshake -------------------------------------------------------------------------------


def test_no_origin_is_accepted(ws_server: Server) -> None:
    with open_socket(ws_server) as ws:
        assert ws.call("core.ping") == "pong"


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "https://localhost", "http://localhost:8080"])
def test_origin_naming_an_allowed_host_is_accepted(ws_server: Server, origin: str) -> None:
    port = ws_server.bind.rpartition(":")[2]
    with open_socket(ws_server, origin=origin.format(port=port)) as ws:
        assert ws.call("core.ping") == "pong"


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1.evil.example", "null"])
def test_foreign_origin_is_refused_at_the_handshake(ws_server: Server, origin: str) -> None:
    with pytest.raises(InvalidStatus) as refused, open_socket(ws_server, origin=origin):
        pass
    assert refused.value.response.status_code == 403


@WRITES
def test_session_cookie_never_authenticates_a_websocket(ws_server: Server, alice: Any) -> None:
    cookie = ws_server.login("alice")
    assert ws_server.call("auth.me", cookie=cookie).result["pw_name"] == "alice"  # a live cookie
    port = ws_server.bind.rpartition(":")[2]
    with open_socket(
        ws_server, origin=f"http://127.0.0.1:{port}", additional_headers={"Cookie": f"{COOKIE}={cookie}"}
    ) as ws:
        error = ws.error("auth.me")
        assert error["data"]["error"] == NOT_AUTHENTICATED
        assert ws.error("auth.my_sessions")["data"]["error"] == NOT_AUTHENTICATED


# --- the socket is the session -------------------------------------------------------------------


@WRITES
def test_current_is_true_only_for_the_callers_socket(ws_server: Server, admin: Any) -> None:
    with open_socket(ws_server) as one, open_socket(ws_server) as two:
        one.login("admin")
        two.login("admin")
        mine = {"one": one.session()["id"], "two": two.session()["id"]}
        assert mine["one"] != mine["two"]
        for name, ws in (("one", one), ("two", two)):
            rows = ws.call(
                "auth.sessions", [["id", "in", list(mine.values())]], {"select": ["id", "current"]}
            )
            assert {row["id"]: row["current"] for row in rows} == {
                mine["one"]: name == "one",
                mine["two"]: name == "two",
            }
        # Over HTTP (another session of the same user), neither socket's session is current.
        cookie = ws_server.login("admin")
        rows = ws_server.call("auth.sessions", [["id", "in", list(mine.values())]], cookie=cookie).result
        assert [row["current"] for row in rows] == [False, False]


@WRITES
def test_logout_keeps_the_socket_open_and_emits_removed(ws_server: Server, admin: Any, alice: Any) -> None:
    with open_socket(ws_server) as watcher, open_socket(ws_server) as ws:
        watcher.login("admin")
        watcher.subscribe_sessions()
        ws.login("alice")
        session_id = ws.session()["id"]
        watcher.added(session_id)

        assert ws.call("auth.logout") is True
        removed = watcher.removed(session_id)
        assert removed == {
            "jsonrpc": "2.0",
            "method": "collection_update",
            "params": {
                "msg": "removed",
                "collection": "auth.sessions",
                "extra": {"fields": {"id": session_id}},
            },
        }
        # Still open, and anonymous again; logging in again is a new session.
        assert ws.call("core.ping") == "pong"
        assert ws.error("auth.me")["data"]["error"] == NOT_AUTHENTICATED
        ws.login("alice")
        assert ws.session()["id"] != session_id
        rows = history(ws_server, ws_server.login("admin"), session_id)
        assert [row["end_reason"] for row in rows] == ["LOGOUT"]


@WRITES
def test_added_event_carries_the_truenas_fields(ws_server: Server, admin: Any, alice: Any) -> None:
    with open_socket(ws_server) as watcher, open_socket(ws_server) as ws:
        watcher.login("admin")
        watcher.subscribe_sessions()
        ws.login("alice")
        session_id = ws.session()["id"]
        added = watcher.added(session_id)
    params = added["params"]
    assert "id" not in added
    assert set(params) == {"msg", "collection", "fields"}
    assert params["collection"] == "auth.sessions"
    fields = params["fields"]
    assert set(fields) == {
        "id",
        "origin",
        "credentials",
        "credentials_data",
        "created_at",
        "secure_transport",
    }
    assert fields["credentials"] == "LOGIN_PASSWORD"
    assert fields["credentials_data"]["username"] == "alice"
    assert set(fields["created_at"]) == {"$date"}
    assert type(fields["created_at"]["$date"]) is int
    assert fields["origin"].startswith("127.0.0.1:")
    assert fields["secure_transport"] is True


@WRITES
def test_closing_the_socket_ends_its_session(ws_server: Server, admin: Any, alice: Any) -> None:
    cookie = ws_server.login("admin")
    with open_socket(ws_server) as watcher:
        watcher.login("admin")
        watcher.subscribe_sessions()
        with open_socket(ws_server) as ws:
            ws.login("alice")
            session_id = ws.session()["id"]
        watcher.removed(session_id)
    rows = history(ws_server, cookie, session_id)
    assert [(row["end_reason"], row["ended_by"]) for row in rows] == [("LOGOUT", "alice")]


@WRITES
def test_terminate_session_closes_the_target_socket(ws_server: Server, admin: Any, alice: Any) -> None:
    with open_socket(ws_server) as ws_admin, open_socket(ws_server) as target:
        ws_admin.login("admin")
        ws_admin.subscribe_sessions()
        target.login("alice")
        session_id = target.session()["id"]

        assert ws_admin.call("auth.terminate_session", session_id) is True
        assert target.closed() == 1000
        ws_admin.removed(session_id)
        assert ws_admin.call("auth.sessions", [["id", "=", session_id]]) == []
        assert ws_admin.call("auth.terminate_session", session_id) is False  # already ended
        assert ws_admin.call("auth.terminate_session", "no-such-session") is False
        assert ws_admin.call("core.ping") == "pong"  # the caller's socket is untouched
    rows = history(ws_server, ws_server.login("admin"), session_id)
    assert [(row["end_reason"], row["ended_by"]) for row in rows] == [("TERMINATED", "admin")]


@WRITES
def test_session_terminated_through_http_closes_the_socket(ws_server: Server, admin: Any, alice: Any) -> None:
    cookie = ws_server.login("admin")
    with open_socket(ws_server) as watcher, open_socket(ws_server) as target:
        watcher.login("admin")
        watcher.subscribe_sessions()
        target.login("alice")
        session_id = target.session()["id"]
        assert ws_server.call("auth.terminate_session", session_id, cookie=cookie).result is True
        assert target.closed() == 1000
        watcher.removed(session_id)


@WRITES
def test_session_terminated_through_manage_py_closes_the_socket(
    ws_server: Server, admin: Any, alice: Any
) -> None:
    with open_socket(ws_server) as watcher, open_socket(ws_server) as target:
        watcher.login("admin")
        watcher.subscribe_sessions()
        target.login("alice")
        session_id = target.session()["id"]
        out = StringIO()
        call_command(
            "sessions", "terminate", "--no-progress", "--", session_id, stdout=out, stderr=StringIO()
        )
        assert "Ended 1 session" in out.getvalue()
        assert target.closed() == 1000
        watcher.removed(session_id)


@WRITES
def test_http_session_ended_through_http_emits_removed(ws_server: Server, admin: Any, alice: Any) -> None:
    with open_socket(ws_server) as watcher:
        watcher.login("admin")
        watcher.subscribe_sessions()
        cookie = ws_server.login("alice")
        added = watcher.notification(
            lambda m: (
                added_id(m) is not None and m["params"]["fields"]["credentials_data"]["username"] == "alice"
            )
        )
        session_id = added_id(added)
        assert session_id is not None
        assert ws_server.call("auth.logout", cookie=cookie).result is True
        watcher.removed(session_id)


# --- cascades ------------------------------------------------------------------------------------


def closes(ws: RPCSocket) -> None:
    """Wait for the server to close ``ws`` with 1000 (a ceiling that only catches a hang)."""
    assert ws.closed(timeout=CASCADE_CLOSE_CEILING) == 1000


@WRITES
def test_api_key_deleted_closes_its_socket(ws_server: Server, create_user: Callable[..., Any]) -> None:
    create_user("bob")
    with open_socket(ws_server) as owner, open_socket(ws_server) as keyed:
        owner.login("bob")
        created = owner.call("api_key.create", {"name": "socket"})
        assert keyed.call("auth.login_with_api_key", created["key"]) is True
        assert keyed.session()["credentials"] == "API_KEY"

        assert owner.call("api_key.delete", created["id"]) is True
        closes(keyed)
        assert owner.call("auth.me")["pw_name"] == "bob"  # the password session is not the key's


@WRITES
@pytest.mark.parametrize("through", ["signals", "queryset update"])
def test_user_disabled_closes_the_users_socket(
    ws_server: Server, admin: Any, create_user: Callable[..., Any], django_user_model: Any, through: str
) -> None:
    bob = create_user("bob")
    with open_socket(ws_server) as other, open_socket(ws_server) as ws:
        other.login("admin")
        ws.login("bob")
        session_id = ws.session()["id"]
        if through == "signals":
            bob.is_active = False
            bob.save()
        else:  # no signal: the once-a-second check of open sockets must notice
            django_user_model.objects.filter(pk=bob.pk).update(is_active=False)
        closes(ws)
        assert other.call("core.ping") == "pong"
        rows = other.call("auth.sessions", [["id", "=", session_id]], {"extra": {"history": True}})
        assert [row["end_reason"] for row in rows] == ["USER_DISABLED"]


@WRITES
@pytest.mark.parametrize("through", ["signals", "queryset update"])
def test_password_changed_closes_the_users_socket(
    ws_server: Server, admin: Any, create_user: Callable[..., Any], django_user_model: Any, through: str
) -> None:
    bob = create_user("bob")
    with open_socket(ws_server) as other, open_socket(ws_server) as ws:
        other.login("admin")
        ws.login("bob")
        session_id = ws.session()["id"]
        bob.set_password("a new password of bob's")
        if through == "signals":
            bob.save()
        else:
            django_user_model.objects.filter(pk=bob.pk).update(password=bob.password)
        closes(ws)
        rows = other.call("auth.sessions", [["id", "=", session_id]], {"extra": {"history": True}})
        assert [row["end_reason"] for row in rows] == ["PASSWORD_CHANGED"]
