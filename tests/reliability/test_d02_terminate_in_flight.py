"""D2: terminate a session while requests using it are in flight -> once the terminate call has
returned, no request on that session succeeds; requests in flight either completed before or fail
as unauthenticated (security.md group D; ASVS 5.0 V8.3.2, ASVS 4.0.3 V2.8.6).

Twenty threads keep calling methods with the session's cookie (reads, and ``auth.generate_token``,
which writes) while an administrator terminates it. Each request records when it was sent and when
its answer came back, on one monotonic clock. A request sent after the terminate call returned must
be refused. A request still in flight when the terminate call returned may have succeeded only if it
was authorised before the termination committed: each request records when its session lookup began
(a wrapper around the middleware's lookup that only reads the clock) and the termination records when
it committed, and a lookup that began after that commit must not succeed (linearizability: the
database answers each lookup from a snapshot taken when it starts). Tokens minted by in-flight
requests must not outlive the session either.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import transaction

from sessions_app import middleware
from sessions_app.auth import keys
from sessions_app.middleware import session_cookie_name
from sessions_app.models import AuditRecord, EndReason, UserSession
from sessions_app.services import session_ending as session_services
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

IN_FLIGHT = 20
CALLS = (
    ("auth.me", ()),
    ("auth.my_sessions", ()),
    ("auth.generate_token", (600, {}, False, False)),
    ("api_key.my_keys", ()),
)


@dataclass
class Sent:
    method: str
    started: float
    looked_up: float | None  # when the middleware began to look the session up
    finished: float
    answer: Any


class Clock:
    """When each thread's last session lookup began, and when terminations had committed."""

    def __init__(self) -> None:
        self.thread = threading.local()
        self.committed: list[float] = []

    @property
    def looked_up(self) -> float | None:
        return getattr(self.thread, "looked_up", None)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Wraps the middleware's session lookup and the terminate service; both only read the clock."""
    clock = Clock()
    lookup, terminate = middleware.session_authenticate, session_services.session_terminate

    def timed_lookup(**kwargs: Any) -> Any:
        clock.thread.looked_up = time.monotonic()
        return lookup(**kwargs)

    def timed_terminate(**kwargs: Any) -> Any:
        ended = terminate(**kwargs)
        # After the outermost transaction commits (at once when there is none).
        transaction.on_commit(lambda: clock.committed.append(time.monotonic()))
        return ended

    monkeypatch.setattr(middleware, "session_authenticate", timed_lookup)
    monkeypatch.setattr(session_services, "session_terminate", timed_terminate)
    return clock


def login(rpc: Any, username: str, remote_addr: str) -> Any:
    client = rpc(remote_addr=remote_addr)
    client.login(username, PASSWORD)
    return client


def test_D2_terminate_while_requests_are_in_flight(
    rpc: Any, make_user: Any, threads: Any, checks: Any, scaled: Any, clock: Clock, settings: Any
) -> None:
    per_worker = scaled(200, 400)  # a safety bound: workers stop after two requests past the end
    # The ended cookie's failures are throttled per address (security.md F9); not what this is about.
    settings.SESSIONS_LOGIN_RATE = 0
    make_user("alice")
    make_user("admin", superuser=True)
    alice = login(rpc, "alice", "127.0.0.2")
    admin = login(rpc, "admin", "127.0.0.3")
    secret = alice.http.cookies[session_cookie_name()].value
    target = UserSession.objects.get(secret_hash=keys.hash_secret(secret))

    lock = threading.Lock()
    successes = [0]
    terminated_at: list[float] = []
    stop = threading.Event()
    after: list[int] = [0] * (IN_FLIGHT + 1)

    def use_session(i: int) -> list[Sent]:
        client = rpc(remote_addr=f"127.0.1.{i}")
        client.http.cookies[session_cookie_name()] = secret
        sent: list[Sent] = []
        deadline = time.monotonic() + 60
        for n in range(per_worker):  # bounded by count, by deadline, and stops once it saw enough
            if stop.is_set() or time.monotonic() > deadline:
                break
            method, params = CALLS[(i + n) % len(CALLS)]
            clock.thread.looked_up = None
            started = time.monotonic()
            answer = checks.answer(client.raw(method, *params))
            sent.append(Sent(method, started, clock.looked_up, time.monotonic(), answer))
            with lock:
                if answer.ok:
                    successes[0] += 1
                if terminated_at and started > terminated_at[0]:
                    after[i] += 1
                    if all(count >= 2 for count in after[1:]):
                        stop.set()
        return sent

    def terminate() -> Any:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the session is busy: a round of successes
            with lock:
                if successes[0] >= IN_FLIGHT:
                    break
            time.sleep(0.001)
        answer = checks.answer(admin.raw("auth.terminate_session", target.public_id))
        with lock:
            terminated_at.append(time.monotonic())
        return answer

    results = threads.run(IN_FLIGHT + 1, lambda i: terminate() if i == 0 else use_session(i))
    terminate_answer, sent = results[0], [s for batch in results[1:] for s in batch]

    assert terminate_answer.json["result"] is True
    answers = [s.answer for s in sent]
    checks.no_undocumented_5xx(answers)
    assert all(a.status == 200 for a in answers), {a.status for a in answers}
    assert all(a.ok or a.not_authenticated for a in answers), [
        a.json for a in answers if not (a.ok or a.not_authenticated)
    ][:3]

    returned = terminated_at[0]
    later = [s for s in sent if s.started > returned]
    assert len(later) >= IN_FLIGHT, "the workers stopped before the session was used after termination"
    assert not [s for s in later if s.answer.ok], "a request sent after terminate returned succeeded"
    assert any(s.answer.ok for s in sent if s.finished < returned), "nothing succeeded before"
    # Requests in flight: a success was authorised before the termination committed.
    committed = clock.committed[0]
    assert committed <= returned
    assert all(s.looked_up is not None for s in sent)
    assert not [s for s in sent if s.answer.ok and s.looked_up > committed], (
        "a session lookup that began after the termination committed succeeded"
    )

    # Tokens minted by requests that succeeded (in flight or before) do not outlive the session.
    tokens = [s.answer.json["result"] for s in sent if s.method == "auth.generate_token" and s.answer.ok]
    assert tokens

    def token_logins() -> list[str]:
        return [
            rpc(remote_addr=f"127.0.2.{n % 250 + 1}").call(
                "auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token}
            )["response_type"]
            for n, token in enumerate(tokens)
        ]

    assert set(threads.read(token_logins)) == {"AUTH_ERR"}

    def stored() -> tuple[Any, int]:
        row = UserSession.objects.get(pk=target.pk)
        ends = [
            r
            for r in AuditRecord.objects.filter(session=target.public_id)
            if r.event_data.get("end_reason") is not None
        ]
        return row, len(ends)

    row, end_records = threads.read(stored)
    assert row.end_reason == EndReason.TERMINATED
    assert row.ended_by == "admin"
    assert end_records == 1
