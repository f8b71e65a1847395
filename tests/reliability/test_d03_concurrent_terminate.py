"""D3: terminating the same session many times at once, and "terminate all other sessions" twice at
once, is idempotent: one audit record per actual termination, no 5xx (security.md group D; TrueNAS
``terminate_session`` returns False for an id that is not active).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sessions_app.auth import keys
from sessions_app.middleware import session_cookie_name
from sessions_app.models import AuditEvent, AuditRecord, EndReason, UserSession
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


class Logins:
    """Sessions opened through ``auth.login_ex``, each from its own loopback address."""

    def __init__(self, rpc: Any) -> None:
        self.rpc = rpc
        self.count = 0

    def client(self, username: str) -> Any:
        self.count += 1
        client = self.rpc(remote_addr=f"127.0.{self.count // 250}.{self.count % 250 + 1}")
        client.login(username, PASSWORD)
        return client

    @staticmethod
    def secret(client: Any) -> str:
        return str(client.http.cookies[session_cookie_name()].value)

    def row(self, client: Any) -> UserSession:
        return UserSession.objects.get(secret_hash=keys.hash_secret(self.secret(client)))

    def with_cookie(self, secret: str, i: int) -> Any:
        client = self.rpc(remote_addr=f"127.1.0.{i + 1}")
        client.http.cookies[session_cookie_name()] = secret
        return client


def end_records() -> Counter[str]:
    """How many records say each session ended (any reason)."""
    return Counter(
        r.event_data["target"]
        for r in AuditRecord.objects.filter(event__in=[AuditEvent.LOGOUT, AuditEvent.METHOD_CALL])
        if r.event_data.get("end_reason") is not None
    )


def method_records(name: str) -> list[AuditRecord]:
    return [
        r for r in AuditRecord.objects.filter(event=AuditEvent.METHOD_CALL) if r.event_data["method"] == name
    ]


@pytest.mark.parametrize("method", ["auth.terminate_session", "auth.terminate_my_session"])
def test_D3_terminate_the_same_session_concurrently(
    rpc: Any, make_user: Any, threads: Any, checks: Any, scaled: Any, method: str
) -> None:
    racers = scaled(10, 20)
    make_user("alice")
    make_user("admin", superuser=True)
    logins = Logins(rpc)
    target = logins.row(logins.client("alice"))
    # The administrator's session, or another session of the owner (who may end their own).
    caller = logins.secret(logins.client("admin" if method == "auth.terminate_session" else "alice"))

    answers = threads.run(
        racers, lambda i: checks.answer(logins.with_cookie(caller, i).raw(method, target.public_id))
    )

    checks.no_undocumented_5xx(answers)
    assert sorted(a.json["result"] for a in answers) == [False] * (racers - 1) + [True]

    def stored() -> tuple[UserSession, Counter[str], int]:
        return (
            UserSession.objects.get(pk=target.pk),
            end_records(),
            len(method_records("auth.terminate_session")),
        )

    row, ends, role_calls = threads.read(stored)
    assert row.end_reason == EndReason.TERMINATED
    assert ends[target.public_id] == 1
    assert sum(ends.values()) == 1
    # auth.terminate_session is role-protected: every call is audited, once.
    assert role_calls == (racers if method == "auth.terminate_session" else 0)


def sessions_to_end(rpc: Any, make_user: Any, logins: Logins, per_user: int) -> list[UserSession]:
    make_user("alice")
    make_user("bob")
    clients = [logins.client(name) for name in ("alice", "bob") for _ in range(per_user)]
    # A session opened with a token: it ends with its parent (a cascade inside the termination).
    token = clients[0].call("auth.generate_token", 600, {}, False, False)
    derived = rpc(remote_addr="127.0.9.9")
    assert derived.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})["response_type"] == (
        "SUCCESS"
    )
    return [logins.row(c) for c in clients] + [logins.row(derived)]


def test_D3_terminate_all_others_twice_concurrently_by_one_caller(
    rpc: Any, make_user: Any, threads: Any, checks: Any, scaled: Any
) -> None:
    logins = Logins(rpc)
    targets = sessions_to_end(rpc, make_user, logins, scaled(8, 25))
    make_user("admin", superuser=True)
    admin = logins.client("admin")
    caller = logins.row(admin)

    answers = threads.run(
        2,
        lambda i: checks.answer(
            logins.with_cookie(logins.secret(admin), i).raw("auth.terminate_other_sessions")
        ),
    )

    checks.no_undocumented_5xx(answers)
    assert [a.json["result"] for a in answers] == [True, True]

    def stored() -> tuple[list[UserSession], UserSession, Counter[str], int]:
        return (
            list(UserSession.objects.filter(pk__in=[t.pk for t in targets])),
            UserSession.objects.get(pk=caller.pk),
            end_records(),
            len(method_records("auth.terminate_other_sessions")),
        )

    rows, caller_row, ends, role_calls = threads.read(stored)
    assert all(r.ended_at is not None for r in rows)
    assert caller_row.ended_at is None
    # Exactly one record per ended session, whichever call ended it; nothing else recorded as ended.
    assert ends == Counter({t.public_id: 1 for t in targets})
    assert role_calls == 2


def test_D3_terminate_all_others_concurrently_by_two_administrators(
    rpc: Any, make_user: Any, threads: Any, checks: Any, scaled: Any
) -> None:
    logins = Logins(rpc)
    targets = sessions_to_end(rpc, make_user, logins, scaled(8, 25))
    make_user("admin", superuser=True)
    make_user("root", superuser=True)
    admins = [logins.client("admin"), logins.client("root")]
    callers = [logins.row(a) for a in admins]

    answers = threads.run(
        2,
        lambda i: checks.answer(
            logins.with_cookie(logins.secret(admins[i]), i).raw("auth.terminate_other_sessions")
        ),
    )

    # Each call either ran (True) or found its own session already ended by the other one.
    checks.no_undocumented_5xx(answers)
    assert all(a.status == 200 for a in answers)
    assert all(a.ok or a.not_authenticated for a in answers), [a.json for a in answers]
    assert any(a.ok for a in answers)

    def stored() -> tuple[list[UserSession], list[UserSession], Counter[str]]:
        return (
            list(UserSession.objects.filter(pk__in=[t.pk for t in targets])),
            list(UserSession.objects.filter(pk__in=[c.pk for c in callers]).order_by("pk")),
            end_records(),
        )

    rows, caller_rows, ends = threads.read(stored)
    assert all(r.ended_at is not None for r in rows)
    ended_callers = [c for c in caller_rows if c.ended_at is not None]
    # A caller's session survives unless the other call ended it; its own call never ends it.
    for answer, caller in zip(answers, caller_rows, strict=True):
        if answer.not_authenticated:
            assert caller.ended_at is not None
    assert ends == Counter({s.public_id: 1 for s in [*targets, *ended_callers]})
