"""F3: authorisation of live streams follows the account (security.md group F).

A user who loses the role that let them watch every session (``AUTH_SESSIONS_READ``: its group
removed, the group deleted or stripped of the permission, superuser and staff flags off, the account
disabled) stops receiving other users' session events on every open stream, over the served
configuration (gunicorn, 2 uvicorn workers, so the change is made in another process than the one
holding each stream): the WebSocket subscription ends with TrueNAS's ``notify_unsubscribed``
(``EACCES``), the dashboard's event stream sends ``end`` and closes, within the socket check interval
(≤ 2 s), and nothing about another user arrives after the change, not even an event committed
immediately after it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission

from sessions_app.auth.clients import Client
from sessions_app.auth.roles import Role, grant, role_group
from sessions_app.models import Credentials, UserSession
from sessions_app.server.live import Hub, _socket_states
from sessions_app.services.sessions import session_create
from tests.integration.servers import COOKIE, Server
from tests.ws.helpers import RPCSocket, added_id, open_socket, removed_id

pytestmark = pytest.mark.django_db(transaction=True)

#: SESSIONS_SOCKET_CHECK_INTERVAL (1 s by default) plus the spec's margin.
WITHIN = 2.0
#: How long "nothing more arrives" is watched for: several event polls and socket checks.
QUIET = 1.5


class EventStream:
    """``GET /sessions/events/`` with a session cookie, read by a thread into a queue of events."""

    def __init__(self, server: Server, cookie: str) -> None:
        self.connection = server.connect()
        self.connection.timeout = 30
        self.connection.request("GET", "/sessions/events/", headers={"Cookie": f"{COOKIE}={cookie}"})
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.read()
        self.events: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        kind, data = "message", None
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                elif not line and data is not None:
                    self.events.put((kind, data))
                    kind, data = "message", None
        except (OSError, ValueError, AttributeError, http.client.HTTPException):  # closed under us
            pass
        finally:
            self.closed.set()
            self.events.put(None)

    def wait(self, predicate: Callable[[str, Any], bool], timeout: float) -> tuple[str, Any]:
        """The first event ``predicate`` accepts (AssertionError if the stream ends or time runs out)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.events.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(f"no such event within {timeout} s") from None
            assert item is not None, "the stream ended first"
            if predicate(*item):
                return item

    def rest(self, timeout: float) -> list[tuple[str, Any]]:
        """Every event until the stream ends; AssertionError if it is still open after ``timeout``."""
        found = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.events.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(f"the stream is still open after {timeout} s: {found}") from None
            if item is None:
                return found
            found.append(item)

    def close(self) -> None:
        self.connection.close()


@contextlib.contextmanager
def event_stream(server: Server, cookie: str) -> Iterator[EventStream]:
    stream = EventStream(server, cookie)
    try:
        yield stream
    finally:
        stream.close()


def _session_of(username: str) -> str:
    row = UserSession.objects.filter(user__username=username, ended_at__isnull=True).latest("pk")
    return row.public_id


def _ids_of(username: str) -> set[str]:
    return set(UserSession.objects.filter(user__username=username).values_list("public_id", flat=True))


def _drain(rpc: RPCSocket, seconds: float) -> list[dict[str, Any]]:
    """Every notification that arrives within ``seconds`` (and those already kept)."""
    deadline = time.monotonic() + seconds
    with contextlib.suppress(TimeoutError):
        while True:
            rpc._pump(deadline)
    found, rpc.notifications = rpc.notifications, []
    return found


def _about(message: dict[str, Any]) -> str | None:
    return added_id(message) or removed_id(message)


def _lose_group(user: Any) -> None:
    user.groups.remove(Group.objects.get(name=Role.AUTH_SESSIONS_READ.value))  # as the admin does


def _delete_group(user: Any) -> None:
    Group.objects.get(name=Role.AUTH_SESSIONS_READ.value).delete()


def _strip_group(user: Any) -> None:
    group = Group.objects.get(name=Role.AUTH_SESSIONS_READ.value)
    group.permissions.remove(*group.permissions.all())


def _lose_permission(user: Any) -> None:
    user.user_permissions.clear()


def _flags_off(user: Any) -> None:
    user.is_superuser = False
    user.is_staff = False
    user.save()


def _disable(user: Any) -> None:
    user.is_active = False
    user.save()


def _grant_group(user: Any) -> None:
    grant(user, Role.AUTH_SESSIONS_READ)


def _grant_permission(user: Any) -> None:
    user.user_permissions.add(Permission.objects.get(codename="auth_sessions_read"))


def _grant_superuser(user: Any) -> None:
    user.is_superuser = user.is_staff = True
    user.save()


LOSSES = {
    "group removed": (_grant_group, _lose_group),
    "group deleted": (_grant_group, _delete_group),
    "group permission removed": (_grant_group, _strip_group),
    "direct permission removed": (_grant_permission, _lose_permission),
    "superuser and staff off": (_grant_superuser, _flags_off),
    "account disabled": (_grant_group, _disable),
}


@pytest.mark.parametrize("how", list(LOSSES))
def test_f03_streams_stop_when_the_role_is_lost(
    ws_server: Server, create_user: Callable[..., Any], how: str
) -> None:
    give, take = LOSSES[how]
    op = create_user("op")
    give(op)
    create_user("alice")
    cookie = ws_server.login("op")
    with open_socket(ws_server) as rpc, event_stream(ws_server, cookie) as sse:
        rpc.login("op")
        rpc.subscribe_sessions()
        # Both streams show another user's session while the role holds.
        alice_cookie = ws_server.login("alice")
        first = _session_of("alice")
        rpc.added(first)
        sse.wait(lambda kind, data: kind == "added" and data["id"] == first, 5)

        op.refresh_from_db()
        lost_at = time.monotonic()
        take(op)
        # Committed right after the change: it must not reach op on any stream.
        later_cookie = ws_server.login("alice")
        assert ws_server.call("auth.logout", cookie=alice_cookie).result is True

        if how == "account disabled":  # the sessions end: the socket closes, as on termination
            assert rpc.closed(WITHIN) == 1000
            after = rpc.notifications
        else:
            ended = rpc.notification(lambda m: m.get("method") == "notify_unsubscribed", WITHIN)
            assert ended["params"]["collection"] == "auth.sessions"
            assert ended["params"]["error"]["errname"] == "EACCES"
            assert ended["params"]["error"]["error"] == 13
            after = rpc.notifications
        assert time.monotonic() - lost_at <= WITHIN
        tail = sse.rest(WITHIN)
        assert time.monotonic() - lost_at <= WITHIN + 0.5
        assert [kind for kind, _ in tail][-1:] == ["end"], tail

        alice = _ids_of("alice")
        assert not [m for m in after if _about(m) in alice - {first}], after
        assert not [data for _, data in tail if data.get("id") in alice - {first}], tail
        if how != "account disabled":
            # The socket stays (its session is valid); nothing more arrives on it, and the role is
            # checked again on the next call.
            assert ws_server.call("auth.logout", cookie=later_cookie).result is True
            assert _drain(rpc, QUIET) == []
            assert rpc.error("core.subscribe", "auth.sessions")["data"]["errname"] == "EACCES"
            assert rpc.error("auth.sessions")["data"]["errname"] == "EACCES"
            rpc.call("core.ping")


@pytest.mark.parametrize("how", ["another role implies it", "unrelated save"])
def test_f03_streams_stay_while_the_role_holds(
    ws_server: Server, create_user: Callable[..., Any], how: str
) -> None:
    op = create_user("op")
    grant(op, Role.AUTH_SESSIONS_READ)
    grant(op, Role.AUTH_SESSIONS_WRITE)
    create_user("alice")
    cookie = ws_server.login("op")
    with open_socket(ws_server) as rpc, event_stream(ws_server, cookie) as sse:
        rpc.login("op")
        rpc.subscribe_sessions()
        op.refresh_from_db()
        if how == "another role implies it":
            _lose_group(op)  # AUTH_SESSIONS_WRITE still implies AUTH_SESSIONS_READ
        else:
            op.first_name = "Olive"
            op.save()
        ws_server.login("alice")
        alice = _session_of("alice")
        rpc.added(alice, WITHIN + 1)
        sse.wait(lambda kind, data: kind == "added" and data["id"] == alice, WITHIN + 1)
        assert not [m for m in _drain(rpc, QUIET) if m.get("method") == "notify_unsubscribed"]
        assert not sse.closed.is_set()


def test_f03_a_change_that_bypasses_signals_ends_them_at_the_next_check(
    ws_server: Server, create_user: Callable[..., Any]
) -> None:
    op = create_user("op", superuser=True)
    create_user("alice")
    cookie = ws_server.login("op")
    with open_socket(ws_server) as rpc, event_stream(ws_server, cookie) as sse:
        rpc.login("op")
        rpc.subscribe_sessions()
        type(op).objects.filter(pk=op.pk).update(is_superuser=False)  # no signal: the periodic check
        lost_at = time.monotonic()
        ended = rpc.notification(lambda m: m.get("method") == "notify_unsubscribed", WITHIN + 0.5)
        assert ended["params"]["error"]["errname"] == "EACCES"
        assert [kind for kind, _ in sse.rest(WITHIN + 0.5)][-1:] == ["end"]
        assert time.monotonic() - lost_at <= WITHIN + 0.5
        ws_server.login("alice")
        assert _drain(rpc, QUIET) == []


def test_f03_the_periodic_check_reads_roles_in_its_one_query(
    create_user: Callable[..., Any], django_assert_num_queries: Any
) -> None:
    client = Client(address="127.0.0.1", port=50000)
    users = {
        "plain": create_user("plain"),
        "reader": create_user("reader"),
        "writer": create_user("writer"),
        "direct": create_user("direct"),
        "root": create_user("root", superuser=True),
    }
    grant(users["reader"], Role.AUTH_SESSIONS_READ)
    grant(users["writer"], Role.AUTH_SESSIONS_WRITE)
    users["direct"].user_permissions.add(Permission.objects.get(codename="readonly_admin"))
    role_group(Role.AUDIT_READ).user_set.add(users["plain"])  # a role that does not read sessions
    pks = {
        name: session_create(credentials=Credentials.LOGIN_PASSWORD, client=client, user=user).session.pk
        for name, user in users.items()
    }
    with django_assert_num_queries(1):
        states = _socket_states(dict.fromkeys(pks.values(), client))
    assert states == {pks[name]: name != "plain" for name in users}


def test_f03_admission_is_retried_when_a_role_change_is_handled_meanwhile(
    create_user: Callable[..., Any],
) -> None:
    reader, other = create_user("reader"), create_user("other")
    grant(reader, Role.AUTH_SESSIONS_READ)
    hub = Hub()
    calls: list[str] = []

    def register() -> None:
        calls.append("register")
        if len(calls) == 1:
            hub.roles_generation += 1  # the hub handled a roles event while the role was being read

    assert hub.admitted(reader.pk, register, lambda: calls.append("unregister")) is True
    assert calls == ["register", "unregister", "register"]
    assert hub.admitted(other.pk, register, lambda: calls.append("unregister")) is False
    assert hub.admitted(None, register, lambda: calls.append("unregister")) is False
    assert len(calls) == 3
