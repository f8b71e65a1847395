"""D7 (PostgreSQL): the database connection of a server is lost -> a request that was using it gets
the documented 503, the next request succeeds on a new connection (``CONN_HEALTH_CHECKS``, bounded
``CONN_MAX_AGE``), and nothing half-done remains (security.md group D; ASVS 5.0 V16.5.2, V13.1.3).

A real gunicorn on 127.0.0.1 keeps a persistent connection (``CONN_MAX_AGE``), named by its
``application_name``; the test ends that backend with ``pg_terminate_backend``, between requests or
while a request waits on a lock the test holds. Every backend of the service going away is what a
database restart looks like from the service; the shared PostgreSQL server itself is not restarted
(other test runs use it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from sessions_app.models import ApiKey, AuditRecord, UserSession
from tests.integration.servers import Server, free_port, running_servers, shared_database_url

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

APPLICATION = "reliability-d7-server"
LOGIN = {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": "correct horse battery staple"}


@pytest.fixture(scope="module", params=["pool", "persistent"])
def server(
    request: pytest.FixtureRequest, django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The server with its connection pool (the default), and with the pool off (one persistent
    connection per process, health-checked at each request's first query)."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL-only: SQLite has no server connection to lose")
    env = {
        "DATABASE_URL": f"{shared_database_url()}?application_name={APPLICATION}",
        "DJANGO_CONN_MAX_AGE": "60",
        "DJANGO_DB_POOL_SIZE": "10" if request.param == "pool" else "0",
        "PG_STATEMENT_TIMEOUT_MS": "10000",  # a bound on how long a request can wait on the test's lock
    }
    with running_servers([[f"127.0.0.1:{free_port()}"]], tmp_path_factory.mktemp("d7"), **env) as started:
        yield started[0]


def backends(db_locks: Any, *, waiting: bool = False) -> list[int]:
    return list(db_locks.pg_backends(APPLICATION, waiting_on_lock=waiting))


def wait_for(predicate: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def in_background(send: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(send()), daemon=True)
    thread.start()
    return thread, result


def login(server: Server, server_call: Any, username: str = "alice") -> str:
    answer = server_call(server, "auth.login_ex", {**LOGIN, "username": username})
    assert answer.json["result"]["response_type"] == "SUCCESS", answer.json
    return str(answer.cookies["__Host-sid"])


def test_D7_connection_lost_between_requests_next_request_succeeds(
    server: Server, server_call: Any, server_user: Any, db_locks: Any
) -> None:
    server_user("alice")
    cookie = login(server, server_call)
    assert server_call(server, "auth.me", cookie=cookie).ok
    pids = backends(db_locks)
    assert pids, "the server keeps no persistent connection"

    for pid in pids:
        assert db_locks.pg_terminate(pid)
    wait_for(lambda: not set(backends(db_locks)) & set(pids), "the backends to go")

    # The dead connection is noticed before use (health check) and replaced: no error at all.
    assert server_call(server, "auth.me", cookie=cookie).ok
    assert not set(backends(db_locks)) & set(pids)


def test_D7_connection_lost_mid_request_answers_503_then_recovers(
    server: Server, server_call: Any, server_user: Any, db_locks: Any, checks: Any
) -> None:
    server_user("alice")
    cookie = login(server, server_call)

    with db_locks.pg_table_lock(UserSession._meta.db_table, "ACCESS EXCLUSIVE"):
        thread, result = in_background(lambda: server_call(server, "auth.me", cookie=cookie))
        pid = wait_for(lambda: backends(db_locks, waiting=True), "the request to wait on the lock")[0]
        assert db_locks.pg_terminate(pid)
        thread.join(15)
    assert result, "the request never answered"

    checks.documented_503(result[0])
    assert server_call(server, "auth.me", cookie=cookie).ok


def test_D7_connection_lost_mid_login_answers_503_and_creates_nothing(
    server: Server, server_call: Any, server_user: Any, db_locks: Any, checks: Any
) -> None:
    server_user("alice")

    # The session row is written, then the audit record waits on the lock: the connection dies there.
    with db_locks.pg_table_lock(AuditRecord._meta.db_table, "EXCLUSIVE"):
        thread, result = in_background(lambda: server_call(server, "auth.login_ex", LOGIN))
        pid = wait_for(lambda: backends(db_locks, waiting=True), "the login to wait on the lock")[0]
        assert db_locks.pg_terminate(pid)
        thread.join(15)
    assert result, "the login never answered"

    checks.documented_503(result[0])
    assert "__Host-sid" not in result[0].cookies
    assert not UserSession.objects.filter(username="alice").exists()
    assert not AuditRecord.objects.filter(username="alice", success=True).exists()
    assert login(server, server_call)
    assert UserSession.objects.filter(username="alice").count() == 1


@pytest.mark.parametrize("method", ["auth.sessions", "api_key.query", "auth.terminate_session"])
def test_D7_connection_lost_inside_a_method_answers_503_then_recovers(
    server: Server, server_call: Any, server_user: Any, db_locks: Any, checks: Any, method: str
) -> None:
    """The connection dies inside the method, after authentication (a Bearer key: the sessions
    table is not read before the method), and the failure path still wants the database (a
    role-protected call audits its failure)."""
    server_user("admin", superuser=True)
    cookie = login(server, server_call, "admin")
    key = server_call(server, "api_key.create", {"name": "d7"}, cookie=cookie).json["result"]["key"]
    bearer = {"Authorization": f"Bearer {key}"}
    params = ["no-such-session"] if method == "auth.terminate_session" else []
    assert server_call(server, method, *params, headers=bearer).status == 200

    table = (ApiKey if method == "api_key.query" else UserSession)._meta.db_table
    with db_locks.pg_table_lock(table, "ACCESS EXCLUSIVE"):
        if method == "api_key.query":  # the key is read before the method: use the session instead
            thread, result = in_background(lambda: server_call(server, method, cookie=cookie))
        else:
            thread, result = in_background(lambda: server_call(server, method, *params, headers=bearer))
        pid = wait_for(lambda: backends(db_locks, waiting=True), "the call to wait on the lock")[0]
        assert db_locks.pg_terminate(pid)
        thread.join(15)
    assert result, "the call never answered"

    checks.documented_503(result[0])
    assert server_call(server, method, *params, headers=bearer).status == 200
