"""D1: parallel logins of one user -> distinct sessions with unique ids, no 5xx; with a session cap,
the number of active sessions never exceeds it (security.md group D; ASVS 5.0 V15.4.2, V7.1.2).

The logins go through ``POST /api/current`` (Django's test client), one thread and one client
address each, all released together; rate limiting stays on (one call per address).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sessions_app.auth import keys
from sessions_app.middleware import session_cookie_name
from sessions_app.models import AuditEvent, AuditRecord, EndReason, UserSession
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


def address(i: int) -> str:
    return f"127.0.{i // 250}.{i % 250 + 1}"


def login(rpc: Any, checks: Any, i: int) -> Any:
    client = rpc(remote_addr=address(i))
    response = client.raw(
        "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}
    )
    return checks.answer(response)


def test_D1_parallel_logins_distinct_sessions(
    rpc: Any, make_user: Any, threads: Any, checks: Any, scaled: Any
) -> None:
    count = scaled(50, 100)
    user = make_user("alice")

    answers = threads.run(count, lambda i: login(rpc, checks, i))

    checks.no_undocumented_5xx(answers)
    assert [a.status for a in answers] == [200] * count
    assert [a.json["result"]["response_type"] for a in answers] == ["SUCCESS"] * count
    secrets = [a.cookies[session_cookie_name()] for a in answers]
    assert len(set(secrets)) == count

    def stored() -> tuple[list[Any], list[Any]]:
        rows = list(UserSession.objects.filter(user=user).values("public_id", "secret_hash", "ended_at"))
        audits = list(
            AuditRecord.objects.filter(event=AuditEvent.AUTHENTICATION, username="alice").values(
                "session", "success"
            )
        )
        return rows, audits

    rows, audits = threads.read(stored)
    assert len(rows) == count
    assert all(row["ended_at"] is None for row in rows)
    assert len({row["public_id"] for row in rows}) == count
    # Each cookie names exactly one of the rows, and each row is named by exactly one cookie.
    assert {row["secret_hash"] for row in rows} == {keys.hash_secret(s) for s in secrets}
    # One successful AUTHENTICATION record per session, none lost, none doubled.
    assert sorted(a["session"] for a in audits) == sorted(row["public_id"] for row in rows)
    assert all(a["success"] for a in audits)

    # Every session works on its own.
    def me(i: int) -> Any:
        client = rpc(remote_addr=address(i))
        client.http.cookies[session_cookie_name()] = secrets[i]
        return client.call("auth.me")["pw_name"]

    assert threads.read(lambda: [me(i) for i in range(count)]) == ["alice"] * count


def test_D1_parallel_logins_never_exceed_the_session_cap(
    rpc: Any, make_user: Any, threads: Any, checks: Any, scaled: Any, settings: Any
) -> None:
    count, cap = scaled(50, 100), 5
    settings.SESSIONS_MAX_PER_USER = cap
    user = make_user("alice")
    done = threading.Event()
    finished = [0]
    lock = threading.Lock()
    observed: list[int] = []

    def watch() -> None:
        # Bounded: stops when every login has answered, or after 60 s, or after 10 000 samples.
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline and len(observed) < 10_000:
            observed.append(UserSession.objects.active().filter(user=user).count())
            time.sleep(0.002)

    def work(i: int) -> Any:
        if i == count:
            watch()
            return None
        try:
            return login(rpc, checks, i)
        finally:
            with lock:
                finished[0] += 1
                if finished[0] == count:
                    done.set()

    answers = threads.run(count + 1, work)[:count]

    checks.no_undocumented_5xx(answers)
    assert [a.json["result"]["response_type"] for a in answers] == ["SUCCESS"] * count
    assert observed, "the watcher never sampled"
    assert max(observed) <= cap, max(observed)

    def stored() -> tuple[int, list[str], list[str]]:
        active = UserSession.objects.active().filter(user=user).count()
        evicted = list(
            UserSession.objects.filter(user=user, end_reason=EndReason.EVICTED).values_list(
                "public_id", flat=True
            )
        )
        audited = [
            r.event_data["target"]
            for r in AuditRecord.objects.filter(event=AuditEvent.METHOD_CALL)
            if r.event_data.get("end_reason") == EndReason.EVICTED
        ]
        return active, evicted, audited

    active, evicted, audited = threads.read(stored)
    assert active == cap
    assert len(evicted) == count - cap
    # Each eviction is audited exactly once.
    assert sorted(audited) == sorted(evicted)
