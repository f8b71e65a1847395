"""Two gunicorn instances (1 worker each) on one database: a session is one session everywhere, and
ending it through either process is seen by the other on the very next request (spec §3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.servers import Server, free_port, running_servers

pytestmark = pytest.mark.django_db(transaction=True)

NOT_AUTHENTICATED = 207


@pytest.fixture(scope="module")
def servers(django_db_setup: Any, server_tmp: Path) -> Iterator[list[Server]]:
    with running_servers([[f"127.0.0.1:{free_port()}"], [f"127.0.0.1:{free_port()}"]], server_tmp) as started:
        yield started


def assert_not_authenticated(server: Server, cookie: str) -> None:
    error = server.call("auth.me", cookie=cookie).error
    assert error["code"] == -32001, error
    assert error["data"]["error"] == NOT_AUTHENTICATED, error
    assert error["data"]["errname"] == "ENOTAUTHENTICATED", error


def test_servers_are_separate_processes(servers: list[Server]) -> None:
    first, second = servers
    assert first.process.pid != second.process.pid
    assert first.bind != second.bind


def test_session_terminated_through_one_process_is_refused_by_the_other(
    servers: list[Server], create_user: Callable[..., Any]
) -> None:
    first, second = servers
    create_user("alice")
    create_user("admin", superuser=True)

    alice = first.login("alice")
    assert second.call("auth.me", cookie=alice).result["pw_name"] == "alice"

    admin = first.login("admin")
    rows = first.call("auth.sessions", [["credentials_data.username", "=", "alice"]], cookie=admin).result
    assert [row["credentials"] for row in rows] == ["LOGIN_PASSWORD"]
    target = rows[0]["id"]
    assert first.call("auth.terminate_session", target, cookie=admin).result is True

    assert_not_authenticated(second, alice)
    assert_not_authenticated(first, alice)
    history = second.call(
        "auth.sessions", [["id", "=", target]], {"extra": {"history": True}}, cookie=admin
    ).result
    assert [(row["end_reason"], row["ended_by"]) for row in history] == [("TERMINATED", "admin")]
    # The admin's own session is untouched on both processes.
    assert second.call("auth.me", cookie=admin).result["pw_name"] == "admin"


def test_logout_through_one_process_is_refused_by_the_other(
    servers: list[Server], create_user: Callable[..., Any]
) -> None:
    first, second = servers
    create_user("bob")
    bob = first.login("bob")
    assert first.call("auth.me", cookie=bob).result["pw_name"] == "bob"  # known to process 1 first

    logout = second.call("auth.logout", cookie=bob)
    assert logout.result is True
    assert logout.cookies.get("__Host-sid") == ""  # the cookie is cleared too

    assert_not_authenticated(first, bob)
    assert_not_authenticated(second, bob)


def test_api_key_deleted_through_one_process_stops_working_on_the_other(
    servers: list[Server], create_user: Callable[..., Any]
) -> None:
    first, second = servers
    create_user("carol")
    carol = second.login("carol")
    created = second.call("api_key.create", {"name": "deploy"}, cookie=carol).result
    bearer = {"Authorization": f"Bearer {created['key']}"}
    assert first.call("auth.me", headers=bearer).result["pw_name"] == "carol"
    login = first.call(
        "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "carol", "api_key": created["key"]}
    )
    assert login.result["response_type"] == "SUCCESS"
    key_session = login.cookies["__Host-sid"]
    assert first.call("auth.me", cookie=key_session).result["pw_name"] == "carol"

    assert second.call("api_key.delete", created["id"], cookie=carol).result is True

    error = first.call("auth.me", headers=bearer).error
    assert error["data"]["error"] == NOT_AUTHENTICATED, error
    assert_not_authenticated(first, key_session)  # the API_KEY session ended with its key
    assert second.call("auth.me", cookie=carol).result["pw_name"] == "carol"  # the password one did not
