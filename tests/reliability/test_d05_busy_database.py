"""D5: a database still busy past the server's lock wait -> 503 JSON with ``Retry-After``, never a 500
page, and no half-done change: no session without its audit record, no ended session without its
record (security.md group D; ASVS 5.0 V16.5.2, V16.5.3, V2.3.3).

A real gunicorn on 127.0.0.1 waits at most one second for a lock (SQLite: ``SQLITE_BUSY_TIMEOUT=1``;
PostgreSQL: ``statement_timeout`` 1 s) while the test holds one from its own connection:

* SQLite: the database's write lock (``BEGIN IMMEDIATE``), so the request's first write waits.
* PostgreSQL: ``EXCLUSIVE`` on the audit table, so a request gets as far as writing the session row
  and then waits on its audit record: the transaction must roll back as a whole.

Reads go on while writers wait (WAL; row locks), and once the lock is gone the same calls succeed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection

from sessions_app.models import AuditRecord, UserSession
from tests.integration.servers import Server, free_port, running_servers

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

LOGIN = {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": "correct horse battery staple"}


@pytest.fixture(scope="module")
def server(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"SQLITE_BUSY_TIMEOUT": "1", "PG_STATEMENT_TIMEOUT_MS": "1000"}
    with running_servers([[f"127.0.0.1:{free_port()}"]], tmp_path_factory.mktemp("d5"), **env) as started:
        yield started[0]


@pytest.fixture
def busy(db_locks: Any) -> Any:
    """``with busy():`` holds the lock that makes the server's writes wait past its limit."""

    def hold() -> AbstractContextManager[None]:
        if connection.vendor == "sqlite":
            return db_locks.sqlite_write_lock()
        if connection.vendor == "postgresql":
            return db_locks.pg_table_lock(AuditRecord._meta.db_table, "EXCLUSIVE")
        pytest.skip(f"no way to hold {connection.vendor} busy")

    return hold


def login(server: Server, server_call: Any, username: str) -> str:
    answer = server_call(server, "auth.login_ex", {**LOGIN, "username": username})
    assert answer.json["result"]["response_type"] == "SUCCESS", answer.json
    return str(answer.cookies["__Host-sid"])


def test_D5_busy_database_login_answers_503_and_creates_nothing(
    server: Server, server_call: Any, server_user: Any, busy: Any, checks: Any, tmp_path: Path
) -> None:
    server_user("alice")

    with busy():
        answer = server_call(server, "auth.login_ex", LOGIN)

    checks.documented_503(answer)
    assert "__Host-sid" not in answer.cookies
    assert not UserSession.objects.filter(username="alice").exists()
    assert not AuditRecord.objects.filter(username="alice", success=True).exists()
    # The database is free again: the same call succeeds, without restarting anything.
    assert login(server, server_call, "alice")
    assert UserSession.objects.filter(username="alice").count() == 1
    assert AuditRecord.objects.filter(username="alice", success=True).count() == 1


def test_D5_busy_database_logout_and_terminate_answer_503_and_end_nothing(
    server: Server, server_call: Any, server_user: Any, busy: Any, checks: Any
) -> None:
    server_user("alice")
    server_user("admin", superuser=True)
    alice, admin = login(server, server_call, "alice"), login(server, server_call, "admin")
    target = UserSession.objects.get(username="alice")
    records = AuditRecord.objects.count()

    with busy():
        # Reading needs no write: it goes on while writers wait.
        assert server_call(server, "auth.me", cookie=alice).json["result"]["pw_name"] == "alice"
        logout = server_call(server, "auth.logout", cookie=alice)
        terminate = server_call(server, "auth.terminate_session", target.public_id, cookie=admin)

    checks.documented_503(logout)
    checks.documented_503(terminate)
    target.refresh_from_db()
    assert target.ended_at is None, "half-ended: the session ended although the call failed"
    assert AuditRecord.objects.count() == records
    assert server_call(server, "auth.me", cookie=alice).json["result"]["pw_name"] == "alice"
    # Retried once the database is free, the same calls succeed.
    assert (
        server_call(server, "auth.terminate_session", target.public_id, cookie=admin).json["result"] is True
    )
    assert server_call(server, "auth.me", cookie=alice).not_authenticated


# --- the lock wait expiring at any write of a request ------------------------------------------------


class FailNthWrite:
    """``connection.execute_wrapper``: the ``n``-th write statement fails as SQLite's busy timeout does."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.writes = 0
        self.failed: str | None = None

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            self.writes += 1
            if self.writes == self.n:
                self.failed = sql
                raise OperationalError("database is locked")
        return execute(sql, params, many, context)


def each_write_failing(send: Any, limit: int = 40) -> Iterator[tuple[FailNthWrite, Any]]:
    """``send()`` once with its first write failing, once with its second, … until one runs through."""
    for n in range(1, limit + 1):
        fault = FailNthWrite(n)
        with connection.execute_wrapper(fault):
            answer = send()
        if fault.failed is None:
            return
        yield fault, answer
    pytest.fail(f"more than {limit} writes in one request")


@pytest.mark.parametrize("relogin", [False, True], ids=["new-client", "client-with-a-session"])
def test_D5_lock_timeout_at_any_write_of_a_login_creates_no_session(
    rpc: Any, make_user: Any, checks: Any, relogin: bool
) -> None:
    make_user("alice")
    client = rpc()
    if relogin:  # a new login replaces the client's session (B2): both changes or neither
        client.login("alice", LOGIN["password"])

    def active() -> set[str]:
        return set(UserSession.objects.filter(ended_at__isnull=True).values_list("public_id", flat=True))

    def logins() -> int:
        return AuditRecord.objects.filter(username="alice", success=True, event="AUTHENTICATION").count()

    before, logged = active(), logins()
    tried = 0
    for fault, response in each_write_failing(lambda: client.raw("auth.login_ex", LOGIN)):
        tried += 1
        answer = checks.answer(response)
        checks.no_undocumented_5xx([answer])
        if answer.status == 503:
            # The client was told the login failed: no session may exist that nobody holds, no
            # audit record may claim a successful login, and the session it had is still its own.
            assert not answer.cookies.get("__Host-sid"), fault.failed
            assert active() == before, fault.failed
            assert logins() == logged, fault.failed
        else:  # a write the login could do without: then the login is complete
            assert answer.json["result"]["response_type"] == "SUCCESS", (fault.failed, answer.json)
            now = active()
            assert len(now - before) == 1, fault.failed
            if relogin:
                assert not before & now, fault.failed  # the replaced session ended
            assert logins() == logged + 1, fault.failed
            before, logged, relogin = now, logged + 1, True
    assert tried >= 2  # the rate counter, the session, its audit record...


@pytest.mark.parametrize("method", ["auth.logout", "auth.terminate_session"])
def test_D5_lock_timeout_at_any_write_of_an_ending_leaves_no_half_ended_session(
    rpc: Any, make_user: Any, checks: Any, method: str
) -> None:
    make_user("alice")
    make_user("admin", superuser=True)
    alice, admin = rpc(), rpc()
    alice.login("alice", LOGIN["password"])
    admin.login("admin", LOGIN["password"])
    target = UserSession.objects.get(username="alice")
    caller, params = (alice, ()) if method == "auth.logout" else (admin, (target.public_id,))

    def records() -> tuple[int, int]:
        """(records of the session's end, successful role-call records of the method)"""
        ends = [
            r for r in AuditRecord.objects.filter(session=target.public_id) if r.event_data.get("end_reason")
        ]
        calls = [
            r
            for r in AuditRecord.objects.filter(event="METHOD_CALL", success=True)
            if r.event_data.get("method") == method
        ]
        return len(ends), len(calls)

    tried = 0
    for fault, response in each_write_failing(lambda: caller.raw(method, *params)):
        tried += 1
        answer = checks.answer(response)
        checks.no_undocumented_5xx([answer])
        target.refresh_from_db()
        # All or nothing, and the answer says which.
        if answer.status == 503:
            assert target.ended_at is None, f"ended, yet answered 503: {fault.failed}"
            assert records() == (0, 0), fault.failed
        else:
            assert answer.json["result"] is True, (fault.failed, answer.json)
            assert target.ended_at is not None, fault.failed
            assert records() == (1, 1 if method == "auth.terminate_session" else 0), fault.failed
            break
    assert tried >= 1
