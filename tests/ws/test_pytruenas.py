"""The PyPI client pytruenas, unmodified, against the served WebSocket at ``ws://127.0.0.1:PORT/api/current``.

What pytruenas exposes, and so what these tests can see:

* ``TrueNASClient(url, username=, password= | api_key= | token=)`` logs in on connect with the legacy
  bool-returning method (``auth.login``, ``auth.login_with_api_key``, ``auth.login_with_token``);
  ``client.login(login_ex=True)`` uses ``auth.login_ex`` and returns its response. A refusal is
  `AuthenticationError` on both paths.
* Server errors are `ClientException` (``errno`` from ``data.error``) or `ValidationErrors` (from
  ``data.extra``); ``{"$date": ms}`` values come back as aware datetimes.
* A socket the server closed makes the next call on that connection raise `ConnectionClosed` with
  ``sent=False``, and ends the iterators of its subscriptions; the client's next call reconnects and
  repeats its last login.
* An event is ``Event(collection, msg, fields, id)`` with ``id`` read from a top-level ``params.id``.
  The REMOVED notification carries the session id only in ``params.extra.fields.id`` (as TrueNAS
  does), so pytruenas shows a REMOVED event with ``fields`` and ``id`` both None: which session went
  is seen through ``auth.sessions``, not through the event.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hostctl import Timeout
from pytruenas import (
    APIKeyAuth,
    AuthenticationError,
    ClientException,
    ConnectionClosed,
    Credentials,
    Event,
    Subscription,
    TrueNASClient,
    TrueNASWSConnection,
    ValidationErrors,
)

from sessions_app.models import UserSession
from tests.conftest import PASSWORD
from tests.integration.servers import Server
from tests.ws.conftest import ws_url

pytestmark = pytest.mark.django_db(transaction=True)

#: Bounds every connect and call, so that a server that never answers fails the test, not the run.
TIMEOUT = Timeout(connect=10, read=20)
#: How long an expected event or socket close may take (the outbox is polled every 0.25 s).
EVENT_WAIT = 10.0
EACCES, ENOTAUTHENTICATED = 13, 207
GET_CURRENT = ([["current", "=", True]], {"get": True})
REMOVED = Event("auth.sessions", "removed", None, None)
SESSION_FIELDS = {"id", "origin", "credentials", "credentials_data", "created_at", "secure_transport"}


@pytest.fixture
def open_client(ws_server: Server) -> Iterator[Callable[..., TrueNASClient]]:
    """``open_client(username=, password= | api_key= | token=)``: a TrueNASClient on the TCP bind, not
    yet connected; closed after the test."""
    opened: list[TrueNASClient] = []

    def make(**credentials: Any) -> TrueNASClient:
        client = TrueNASClient(ws_url(ws_server), timeout=TIMEOUT, **credentials)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()
    wait_for_sessions_to_end()


@pytest.fixture
def admin(create_user: Callable[..., Any], open_client: Callable[..., TrueNASClient]) -> TrueNASClient:
    """A full admin ("root"), connected with the legacy password login."""
    create_user("root", superuser=True)
    client = open_client(username="root", password=PASSWORD)
    client.connect()
    return client


def wait_for_sessions_to_end(timeout: float = EVENT_WAIT) -> None:
    """Wait (at most ``timeout``) until the server has ended the sessions of the sockets just closed.

    It ends them just after each close; the database flush after the test must not run meanwhile (on
    PostgreSQL its TRUNCATE deadlocks with that write). Every test here closes its clients and logs
    out the HTTP sessions it begins, so this waits for no session to be active. It gives up quietly:
    on PostgreSQL the ends of a session and of its TOKEN sessions, run at once, can deadlock, and the
    loser's session then stays active with no socket (a server bug, reported), which no wait ends.
    """
    deadline = time.monotonic() + timeout
    while UserSession.objects.filter(ended_at__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _next_event(subscription: Subscription, timeout: float = EVENT_WAIT) -> Event:
    for event in subscription.events(timeout=timeout):
        return event
    pytest.fail(f"no {subscription.event} event within {timeout} s")


def _added(subscription: Subscription) -> dict[str, Any]:
    event = _next_event(subscription)
    assert (event.collection, event.msg, event.id) == ("auth.sessions", "added", None), event
    assert event.fields is not None
    return event.fields


def _skip_earlier_events(subscription: Subscription, own_id: str) -> None:
    """Events committed before ``core.subscribe`` may still be delivered until the next outbox poll.

    So a subscriber can get the ADDED of its own login (TrueNAS sends it none); nothing else here.
    """
    early = list(subscription.events(timeout=1.0))
    assert all(event.msg == "added" and (event.fields or {}).get("id") == own_id for event in early), early


def _no_event(subscription: Subscription, timeout: float = 1.0) -> None:
    pending = list(subscription.events(timeout=timeout))
    assert pending == [], pending


def _wait_closed(subscription: Subscription, connection: TrueNASWSConnection) -> None:
    """Wait for the server to close ``connection``: the iterator of its ``subscription`` (one that gets
    no events) ends at once when it does; then a call fails before anything is sent."""
    assert list(subscription.events(timeout=EVENT_WAIT)) == []
    with pytest.raises(ConnectionClosed) as closed:
        connection.call("core.ping")
    assert closed.value.sent is False, "the socket was still open"


def _session(client: TrueNASClient, session_id: str) -> dict[str, Any] | None:
    rows = client.api.auth.sessions([["id", "=", session_id]])
    return rows[0] if rows else None


# --- connect and log in ---------------------------------------------------------------------------


def test_password_login_legacy_and_login_ex(
    create_user: Callable[..., Any], open_client: Callable[..., TrueNASClient]
) -> None:
    create_user("root", superuser=True)
    client = open_client(username="root", password=PASSWORD)

    client.connect()  # autologin: auth.login(username, password) -> true
    assert client.ping() == "pong"
    assert client.me()["pw_name"] == "root"
    row = client.api.auth.sessions(*GET_CURRENT)
    assert row["current"] is True
    assert row["internal"] is False
    assert row["credentials"] == "LOGIN_PASSWORD"
    assert row["credentials_data"]["username"] == "root"
    assert isinstance(row["credentials_data"]["login_at"], dt.datetime)
    assert row["secure_transport"] is True  # plain ws:// on loopback
    assert row["origin"].startswith("127.0.0.1:")
    assert row["created_at"].tzinfo is not None
    assert abs(row["created_at"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    first = row["id"]

    assert client.login() is True  # a new connection; the first one's session ends with its socket
    second = client.api.auth.sessions(*GET_CURRENT)["id"]
    assert second != first
    assert _session(client, first) is None

    response = client.login(login_ex=True)
    assert response["response_type"] == "SUCCESS"
    assert response["authenticator"] == "LEVEL_1"
    assert response["user_info"]["pw_name"] == "root"
    row = client.api.auth.sessions(*GET_CURRENT)
    assert row["credentials"] == "LOGIN_PASSWORD"
    assert row["id"] not in {first, second}


def test_wrong_password_is_refused_on_both_paths(
    create_user: Callable[..., Any], open_client: Callable[..., TrueNASClient]
) -> None:
    create_user("alice")
    client = open_client(username="alice", password="not the password")

    with pytest.raises(AuthenticationError) as legacy:
        client.connect()
    assert legacy.value.response_type == "AUTH_ERR"
    assert legacy.value.response == {"method": "login"}
    with pytest.raises(AuthenticationError) as modern:
        client.login(login_ex=True)
    assert modern.value.response_type == "AUTH_ERR"
    with pytest.raises(AuthenticationError) as unknown:  # an unknown user is answered the same way
        open_client(username="nobody", password=PASSWORD).login(login_ex=True)
    assert unknown.value.response == modern.value.response


def test_api_key_login_legacy_and_login_ex(
    admin: TrueNASClient, create_user: Callable[..., Any], open_client: Callable[..., TrueNASClient]
) -> None:
    create_user("alice", superuser=True)
    created = admin.api.api_key.create({"name": "pytruenas", "username": "alice"})
    key = created["key"]
    assert isinstance(Credentials(key), APIKeyAuth)  # pytruenas recognises "<id>-<64 alnum>" as a key

    legacy = open_client(credentials=key)
    legacy.connect()  # auth.login_with_api_key(key) -> true
    row = legacy.api.auth.sessions(*GET_CURRENT)
    assert row["credentials"] == "API_KEY"
    assert row["credentials_data"]["username"] == "alice"
    assert row["credentials_data"]["api_key"] == {"id": created["id"], "name": "pytruenas"}
    assert legacy.me()["pw_name"] == "alice"

    modern = open_client(username="alice", api_key=key)
    response = modern.login(login_ex=True)  # API_KEY_PLAIN with the username
    assert response["response_type"] == "SUCCESS"
    assert response["user_info"]["pw_name"] == "alice"
    assert modern.api.auth.sessions(*GET_CURRENT)["credentials"] == "API_KEY"

    wrong = f"{created['id']}-{'x' * 64}"
    with pytest.raises(AuthenticationError):
        open_client(api_key=wrong).connect()
    with pytest.raises(AuthenticationError):
        open_client(username="alice", api_key=wrong).login(login_ex=True)


def test_token_login_legacy_and_login_ex(
    admin: TrueNASClient, open_client: Callable[..., TrueNASClient]
) -> None:
    tokens = [admin.api.auth.generate_token(600, {}, True, False) for _ in range(2)]
    assert all(isinstance(token, str) and len(token) == 64 for token in tokens)

    legacy = open_client(token=tokens[0])
    legacy.connect()  # auth.login_with_token(token) -> true
    row = legacy.api.auth.sessions(*GET_CURRENT)
    assert row["credentials"] == "TOKEN"
    assert row["credentials_data"]["username"] == "root"
    assert row["credentials_data"]["parent"]["credentials"] == "LOGIN_PASSWORD"

    modern = open_client(token=tokens[1])
    response = modern.login(login_ex=True)  # TOKEN_PLAIN
    assert response["response_type"] == "SUCCESS"
    assert response["user_info"]["pw_name"] == "root"
    assert modern.api.auth.sessions(*GET_CURRENT)["credentials"] == "TOKEN"

    single = admin.api.auth.generate_token(600, {}, True, True)
    open_client(token=single).connect()
    with pytest.raises(AuthenticationError):
        open_client(token=single).connect()  # single use
    with pytest.raises(AuthenticationError):
        open_client(token="x" * 64).login(login_ex=True)


# --- auth.sessions ---------------------------------------------------------------------------------


def test_sessions_filters_and_options(
    admin: TrueNASClient, create_user: Callable[..., Any], open_client: Callable[..., TrueNASClient]
) -> None:
    create_user("bob")
    bob = open_client(username="bob", password=PASSWORD)
    bob.connect()
    token = open_client(token=admin.api.auth.generate_token(600, {}, True, False))
    token.connect()
    sessions = admin.api.auth.sessions

    own = sessions(*GET_CURRENT)
    assert own["credentials_data"]["username"] == "root"
    bobs = sessions([["credentials_data.username", "=", "bob"]], {"get": True})
    assert bobs["current"] is False
    assert bobs["credentials"] == "LOGIN_PASSWORD"
    assert bob.api.auth.my_sessions(*GET_CURRENT)["id"] == bobs["id"]
    with pytest.raises(ClientException, match="MatchNotFound"):
        sessions([["id", "=", "no such session"]], {"get": True})

    assert sessions([], {"count": True}) == 3
    assert sessions([["credentials", "=", "TOKEN"]], {"count": True}) == 1
    assert sessions([["credentials_data.parent.credentials", "=", "LOGIN_PASSWORD"]], {"count": True}) == 1
    assert sessions([["credentials_data.username", "in", ["bob", "nobody"]]], {"count": True}) == 1
    assert sessions([["OR", [["credentials", "=", "TOKEN"], ["current", "=", True]]]], {"count": True}) == 2

    selected = sessions([["internal", "=", False]], {"select": ["id", "credentials"], "order_by": ["id"]})
    assert [set(row) for row in selected] == [{"id", "credentials"}] * 3
    assert [row["id"] for row in selected] == sorted(row["id"] for row in selected)
    assert sorted(row["credentials"] for row in selected) == ["LOGIN_PASSWORD", "LOGIN_PASSWORD", "TOKEN"]

    # order_by sees the selected rows (TrueNAS order: filter, select, count, order_by, offset, limit)
    by_age = {"order_by": ["created_at"], "select": ["id", "created_at", "credentials_data.username"]}
    oldest_first = sessions([], by_age)
    assert [r["credentials_data"]["username"] for r in oldest_first] == ["root", "bob", "root"]
    assert oldest_first[0]["id"] == own["id"]
    newest_first = sessions([], {**by_age, "order_by": ["-created_at"]})
    assert newest_first == oldest_first[::-1]
    assert sessions([], {**by_age, "offset": 1, "limit": 1}) == [oldest_first[1]]

    with pytest.raises(ValidationErrors) as unknown_field:
        sessions([["nope", "=", 1]])
    assert unknown_field.value.errors == [("filters[0]", "'nope': unknown field", 22)]
    with pytest.raises(ValidationErrors):
        sessions([], {"order_by": ["nope"]})


def test_sessions_needs_the_role(
    create_user: Callable[..., Any], open_client: Callable[..., TrueNASClient]
) -> None:
    create_user("bob")
    bob = open_client(username="bob", password=PASSWORD)
    bob.connect()

    with pytest.raises(ClientException) as denied:
        bob.api.auth.sessions()
    assert denied.value.errno == EACCES
    assert str(denied.value) == "[EACCES] Not authorized"
    with pytest.raises(ClientException) as no_events:
        bob.api.auth.sessions.subscribe()
    assert no_events.value.errno == EACCES
    assert isinstance(bob.api.core("core.get_jobs", _method="subscribe"), str)  # allowed to everyone

    bob.logout()  # auth.logout -> true; the socket stays open, unauthenticated
    assert bob.ping() == "pong"
    with pytest.raises(ClientException) as logged_out:
        bob.me()
    assert logged_out.value.errno == ENOTAUTHENTICATED


# --- auth.generate_token and auth.terminate_session ------------------------------------------------


def test_terminate_session_closes_the_socket_and_its_token_cannot_log_in(
    admin: TrueNASClient, open_client: Callable[..., TrueNASClient]
) -> None:
    subscription = admin.api.auth.sessions.subscribe()
    _skip_earlier_events(subscription, admin.api.auth.sessions(*GET_CURRENT)["id"])
    token = admin.api.auth.generate_token(600, {}, True, False)
    target = open_client(token=token)
    target.connect()
    connection = target.conn
    jobs = target.api.core.get_jobs.subscribe()
    target_id = target.api.auth.sessions(*GET_CURRENT)["id"]
    added = _added(subscription)
    assert added["id"] == target_id
    assert added["credentials"] == "TOKEN"
    assert admin.api.auth.terminate_session("no such session") is False

    assert admin.api.auth.terminate_session(target_id) is True

    _wait_closed(jobs, connection)
    assert _next_event(subscription) == REMOVED
    assert _session(admin, target_id) is None
    with pytest.raises(AuthenticationError) as relogin:
        target.ping()  # pytruenas reconnects and repeats auth.login_with_token(token): false
    assert relogin.value.response == {"method": "login_with_token"}
    with pytest.raises(AuthenticationError):
        open_client(token=token).login(login_ex=True)
    assert admin.ping() == "pong"


# --- events ------------------------------------------------------------------------------------------


def test_added_and_removed_events_over_websocket_and_http(
    admin: TrueNASClient,
    create_user: Callable[..., Any],
    open_client: Callable[..., TrueNASClient],
    ws_server: Server,
) -> None:
    create_user("bob")
    create_user("carol")
    subscription = admin.api.auth.sessions.subscribe()
    assert isinstance(subscription.id, str)
    _skip_earlier_events(subscription, admin.api.auth.sessions(*GET_CURRENT)["id"])

    # A WebSocket login, then its logout.
    bob = open_client(username="bob", password=PASSWORD)
    bob.connect()
    added = _added(subscription)
    bob_id = admin.api.auth.sessions([["credentials_data.username", "=", "bob"]], {"get": True})["id"]
    assert set(added) == SESSION_FIELDS
    assert added["id"] == bob_id
    assert added["credentials"] == "LOGIN_PASSWORD"
    assert added["credentials_data"]["username"] == "bob"
    assert added["origin"].startswith("127.0.0.1:")
    assert added["secure_transport"] is True
    assert isinstance(added["created_at"], dt.datetime)
    bob.logout()
    assert _next_event(subscription) == REMOVED  # no id: see the module docstring
    assert _session(admin, bob_id) is None

    # A session begun and ended through HTTP.
    cookie = ws_server.login("carol")
    fields = _added(subscription)
    assert fields["credentials_data"]["username"] == "carol"
    assert _session(admin, fields["id"]) is not None
    assert ws_server.call("auth.logout", cookie=cookie).result is True
    assert _next_event(subscription) == REMOVED
    assert _session(admin, fields["id"]) is None

    # A WebSocket session terminated through HTTP: its socket closes too.
    target = open_client(username="bob", password=PASSWORD)
    target.connect()
    connection = target.conn
    jobs = target.api.core.get_jobs.subscribe()
    target_id = _added(subscription)["id"]
    admin_cookie = ws_server.login("root")
    assert _added(subscription)["credentials_data"]["username"] == "root"
    assert ws_server.call("auth.terminate_session", target_id, cookie=admin_cookie).result is True
    assert _next_event(subscription) == REMOVED
    _wait_closed(jobs, connection)
    assert _session(admin, target_id) is None
    assert ws_server.call("auth.logout", cookie=admin_cookie).result is True
    assert _next_event(subscription) == REMOVED

    # Closing a client's socket ends its session.
    carol = open_client(username="carol", password=PASSWORD)
    carol.connect()
    carol_id = _added(subscription)["id"]
    carol.close()
    assert _next_event(subscription) == REMOVED
    assert _session(admin, carol_id) is None
    _no_event(subscription)

    subscription.unsubscribe()
    other = admin.api.core("auth.sessions", _method="subscribe")
    assert isinstance(other, str)
    assert admin.api.core(other, _method="unsubscribe") is None
