"""D6: activity timestamps are written at most once per interval, so read traffic does not turn into
write contention, and the idle timeout stays correct to within that interval (security.md group D;
OWASP Session Management Cheat Sheet, idle timeout).

``last_seen_at`` of a session is written at most once per ``policy.last_seen_interval`` (60 s, or a
tenth of the idle limit); ``last_used_at`` of an API key used per request (``Bearer``) at most once a
minute. Writes are counted at the database cursor, in every thread. Time never passes by sleeping:
the stored timestamps are moved back instead.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from sessions_app.auth import keys, policy
from sessions_app.middleware import session_cookie_name
from sessions_app.models import ApiKey, AuditRecord, EndReason, UserSession
from sessions_app.services.api_keys import LAST_USED_INTERVAL, api_key_create
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


class Writes:
    """Counts ``UPDATE``s of one column of one table, and the rows they changed (all threads)."""

    def __init__(self, table: str, column: str) -> None:
        self.table, self.column = table, column
        self.statements = 0
        self.rows = 0
        self._lock = threading.Lock()

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        head = sql.lstrip()[:200].upper()
        if head.startswith("UPDATE") and self.table.upper() in head and self.column.upper() in sql.upper():
            with self._lock:
                self.statements += 1
                self.rows += max(context["cursor"].rowcount, 0)
        return result


def session_of(client: Any) -> UserSession:
    return UserSession.objects.get(
        secret_hash=keys.hash_secret(client.http.cookies[session_cookie_name()].value)
    )


def seen_ago(session: UserSession, seconds: float) -> None:
    """Pretend the last recorded activity of ``session`` was ``seconds`` ago."""
    UserSession.objects.filter(pk=session.pk).update(
        last_seen_at=timezone.now() - dt.timedelta(seconds=seconds)
    )


@pytest.fixture
def alice(make_user: Any, rpc: Any) -> Any:
    make_user("alice")
    client = rpc()
    client.login("alice", PASSWORD)
    return client


@pytest.mark.django_db  # one thread: a rolled-back transaction is enough
def test_D6_reads_write_last_seen_at_most_once_per_interval(alice: Any, scaled: Any) -> None:
    reads = scaled(50, 200)
    session = session_of(alice)
    interval = policy.last_seen_interval(None)
    writes = Writes(UserSession._meta.db_table, "last_seen_at")

    with connection.execute_wrapper(writes):
        for _ in range(reads):  # just logged in: nothing to write
            assert alice.call("auth.me")["pw_name"] == "alice"
    assert (writes.statements, writes.rows) == (0, 0)

    seen_ago(session, interval.total_seconds() + 1)
    with connection.execute_wrapper(writes):
        for _ in range(reads):  # one interval later: the first read writes, the others do not
            assert alice.call("auth.me")["pw_name"] == "alice"
    assert (writes.statements, writes.rows) == (1, 1)


def test_D6_concurrent_reads_write_last_seen_at_most_once_per_interval(
    alice: Any, rpc: Any, threads: Any, checks: Any, scaled: Any
) -> None:
    workers, reads = 20, scaled(10, 50)
    session = session_of(alice)
    secret = alice.http.cookies[session_cookie_name()].value
    seen_ago(session, policy.last_seen_interval(None).total_seconds() + 1)
    writes = Writes(UserSession._meta.db_table, "last_seen_at")

    def burst(i: int) -> list[Any]:
        client = rpc(remote_addr=f"127.0.3.{i + 1}")
        client.http.cookies[session_cookie_name()] = secret
        with connection.execute_wrapper(writes):
            return [checks.answer(client.raw("auth.me")) for _ in range(reads)]

    answers = [a for batch in threads.run(workers, burst) for a in batch]

    assert all(a.ok for a in answers)
    # A burst of reads arriving together when the interval is up: the row is written once.
    assert writes.rows == 1, f"{writes.rows} rows written by {writes.statements} statements"
    assert writes.statements <= workers


@pytest.mark.django_db  # one thread: a rolled-back transaction is enough
def test_D6_idle_timeout_is_accurate_to_the_write_interval(alice: Any, settings: Any) -> None:
    settings.SESSIONS_IDLE_TIMEOUT = 300
    alice.login("alice", PASSWORD)  # a new session under the new limit
    session = session_of(alice)
    idle = dt.timedelta(seconds=session.idle_timeout)
    interval = policy.last_seen_interval(idle).total_seconds()
    assert idle.total_seconds() == 300
    assert interval == 30

    # Activity just inside the interval is not written: the stored time lags the real one by up to
    # interval - 1 s, the worst case.
    seen_ago(session, interval - 1)
    assert alice.call("auth.me")["pw_name"] == "alice"
    session.refresh_from_db()
    assert timezone.now() - session.last_seen_at >= dt.timedelta(seconds=interval - 1)

    # Idle for idle - interval - 1 s after that request (the stored time moved back by as much): alive.
    seen_ago(session, (interval - 1) + (idle.total_seconds() - interval - 1))
    assert alice.call("auth.me")["pw_name"] == "alice"

    # Idle for the whole limit since the last written activity: ended, whatever the lag.
    seen_ago(session, idle.total_seconds())
    assert "error" in alice.raw("auth.me").json()
    session.refresh_from_db()
    assert session.end_reason == EndReason.IDLE


def test_D6_concurrent_bearer_requests_write_last_used_at_most_once_per_interval(
    make_user: Any, rpc: Any, threads: Any, checks: Any, scaled: Any
) -> None:
    workers, reads = 20, scaled(10, 50)
    user = make_user("alice")
    key, plaintext = api_key_create(user=user, name="d6")
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - LAST_USED_INTERVAL * 2)
    audits_before = AuditRecord.objects.count()
    writes = Writes(ApiKey._meta.db_table, "last_used_at")

    def burst(i: int) -> list[Any]:
        client = rpc(remote_addr="127.0.0.1")
        with connection.execute_wrapper(writes):
            return [
                checks.answer(client.raw("auth.me", HTTP_AUTHORIZATION=f"Bearer {plaintext}"))
                for _ in range(reads)
            ]

    answers = [a for batch in threads.run(workers, burst) for a in batch]

    assert all(a.ok for a in answers)
    assert writes.rows == 1, f"{writes.rows} rows written by {writes.statements} statements"
    # Use is audited when it is recorded: once per interval, not once per request.
    assert threads.read(lambda: AuditRecord.objects.count()) - audits_before == 1
