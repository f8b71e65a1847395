"""D14: the expiry and retention job (``manage.py sessions purge``) works in short batches while logins
go on, and expired or idle sessions never authenticate, even before the job has ended them
(security.md group D; Django sessions docs on ``clearsessions``; OWASP Session Management CS).

The database holds sessions past their absolute or idle limit but still marked active, old ended
sessions and old audit records (250 / 5k / 20k by default, 12k / 100k / 1M with
``RELIABILITY_SCALE=full``). While the command runs (in a thread of this process, so that its batches
can be observed), two clients log in through a gunicorn with two workers, a login every 0.25 s each; every
login must succeed, and the latencies are the figures of the test.
"""

from __future__ import annotations

import datetime as dt
import secrets as random
import statistics
import threading
import time
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections
from django.db.models import Count
from django.utils import timezone

from sessions_app.auth import keys
from sessions_app.models import AuditRecord, EndReason, UserSession
from sessions_app.services import maintenance
from tests.conftest import PASSWORD
from tests.reliability.helpers_late import (
    AUDIT_COLUMNS,
    SESSION_COLUMNS,
    Instance,
    analyze,
    audit_rows,
    bulk_insert,
    create_user,
    gunicorn,
    leak_guard,  # noqa: F401 - fixture
    log_problems,
    me,
    new_run,
    record_figures,
    refused,
    scaled,
    secret,
    session_rows,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("leak_guard"),
]

PROBES = 10
#: A hang ceiling, not a latency target: ten times the slowest login measured during a full-size
#: purge (1.4 s, docs/operations.md "Retention and the cleanup job", where the measured p50/p95/max are reported). A login blocked until
#: SQLite's busy timeout (20 s) fails, which `all(ok ...)` catches first.
MAX_LOGIN_SECONDS = 15.0
LOOP_SECONDS = 300.0
LOOP_LOGINS = 2_000
#: Each client starts a login at most this often: ~8 logins/s in all, about half a core of password
#: hashing, so that what the latencies show is waiting for the database, not for the CPU.
PACE_SECONDS = 0.25


def populate(*, expired: int, idle: int, ended: int, records: int) -> dict[str, list[str]]:
    """Rows to purge and rows to keep; the secrets of a few expired and idle sessions."""
    now = timezone.now()
    run = new_run()
    users = [(create_user(f"user{i}").pk, f"user{i}") for i in range(20)]
    probes: dict[str, list[str]] = {"expired": [], "idle": []}

    def probe(kind: str) -> Any:
        def secret_hash(i: int) -> str | None:
            if len(probes[kind]) >= PROBES:
                return None
            value = secret(random.token_urlsafe(32))
            probes[kind].append(value)
            return keys.hash_secret(value)

        return secret_hash

    day = dt.timedelta(days=1)
    rows = [
        # Past the absolute limit, never ended: the sweep ends them (EXPIRED).
        session_rows(
            expired, run=run, users=users, created=now - 31 * day, expires=now - dt.timedelta(hours=1),
            secret_hash=probe("expired"),
        ),
        # Idle for two hours with a 30 min idle limit: the sweep ends them (IDLE).
        session_rows(
            idle, run=run, users=users, created=now - day, expires=now + day, last_seen=now - dt.timedelta(hours=2),
            idle_timeout=1800, secret_hash=probe("idle"), start=expired,
        ),
        # Ended 100 days ago: deleted.
        session_rows(
            ended, run=run, users=users, created=now - 120 * day, expires=now - 90 * day, ended=now - 100 * day,
            end_reason="LOGOUT", start=expired + idle,
        ),
        # Active and recent: kept.
        session_rows(200, run=run, users=users, created=now, expires=now + day, start=expired + idle + ended),
    ]  # fmt: skip
    for generated in rows:
        bulk_insert(UserSession, SESSION_COLUMNS, generated)
    bulk_insert(AuditRecord, AUDIT_COLUMNS, audit_rows(records, run=run, at=now - 100 * day))
    bulk_insert(AuditRecord, AUDIT_COLUMNS, audit_rows(1_000, run=run, at=now - day, start=records))
    analyze()
    return probes


def login_once(server: Instance, username: str) -> tuple[float, bool]:
    started = time.perf_counter()
    reply = server.call(
        "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": username, "password": PASSWORD}
    )
    ok = reply.status == 200 and reply.payload.get("result", {}).get("response_type") == "SUCCESS"
    if ok:
        secret(reply.cookies["__Host-sid"])
    return time.perf_counter() - started, ok


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_D14_purge_in_batches_never_blocks_logins(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    expired, idle = scaled(200, 10_000), scaled(50, 2_000)
    ended, records = scaled(5_000, 100_000), scaled(20_000, 1_000_000)
    probes = populate(expired=expired, idle=idle, ended=ended, records=records)
    for i in range(4):
        create_user(f"login{i}")
    batches: list[tuple[int, float]] = []
    original = maintenance._Batches.done

    def observed(self: Any, rows: int, seconds: float) -> None:
        batches.append((rows, seconds))
        original(self, rows, seconds)

    monkeypatch.setattr(maintenance._Batches, "done", observed)

    with gunicorn(tmp_path, name="d14", workers=2) as (server,):
        # Expired and idle rows never authenticate, before any cleanup (half the probes now).
        for value in probes["expired"][: PROBES // 2] + probes["idle"][: PROBES // 2]:
            assert refused(me(server, value))
        baseline = [login_once(server, f"login{i % 4}") for i in range(8)]
        assert all(ok for _, ok in baseline)

        finished = threading.Event()
        outcome: dict[str, Any] = {}

        def purge() -> None:
            started = time.perf_counter()
            try:
                out = StringIO()
                call_command(
                    "sessions", "purge", "--older-than", "30d", "--no-progress", stdout=out, stderr=StringIO()
                )
                outcome["output"] = out.getvalue()
            except BaseException as exc:  # reported in the main thread
                outcome["error"] = exc
            finally:
                outcome["seconds"] = time.perf_counter() - started
                connections.close_all()
                finished.set()

        during: list[tuple[float, bool]] = []
        probed: list[bool] = []

        def clients(number: int) -> None:
            deadline = time.monotonic() + LOOP_SECONDS
            while not finished.is_set() and len(during) < LOOP_LOGINS and time.monotonic() < deadline:
                started = time.monotonic()
                during.append(login_once(server, f"login{number}"))
                finished.wait(max(0.0, PACE_SECONDS - (time.monotonic() - started)))
                if number == 0 and len(probed) < PROBES:
                    kind, index = ("expired", "idle")[len(probed) % 2], PROBES // 2 + len(probed) // 2
                    probed.append(refused(me(server, probes[kind][index])))

        purger = threading.Thread(target=purge)
        workers = [threading.Thread(target=clients, args=(n,)) for n in range(2)]
        purger.start()
        for worker in workers:
            worker.start()
        purger.join(LOOP_SECONDS + 60)
        for worker in workers:
            worker.join(60)
        assert not purger.is_alive()
        assert "error" not in outcome, outcome.get("error")
        # The probes the purge did not leave time for: refused after it as well.
        for i in range(len(probed), PROBES):
            kind, index = ("expired", "idle")[i % 2], PROBES // 2 + i // 2
            after = refused(me(server, probes[kind][index]))
            assert after
        problems = log_problems([server])

    latencies = [seconds for seconds, _ in during]
    record_figures(
        "D14",
        expired=expired,
        idle=idle,
        ended_sessions=ended,
        old_audit_records=records,
        purge_seconds=round(outcome["seconds"], 2),
        batches=len(batches),
        max_batch_rows=max(rows for rows, _ in batches),
        max_batch_seconds=round(max(seconds for _, seconds in batches), 3),
        baseline_login_max_ms=round(1000 * max(s for s, _ in baseline)),
        logins_during_purge=len(during),
        login_p50_ms=round(1000 * statistics.median(latencies)) if latencies else None,
        login_p95_ms=round(1000 * percentile(latencies, 0.95)) if latencies else None,
        login_max_ms=round(1000 * max(latencies)) if latencies else None,
    )
    # Logins went on during the purge, every one succeeded, none waited long.
    assert during, "no login ran while the purge did"
    assert all(ok for _, ok in during)
    assert max(latencies) < MAX_LOGIN_SECONDS
    assert all(probed)
    assert problems == []
    # Batches: many short transactions, none over the batch size.
    assert len(batches) >= 10
    assert max(rows for rows, _ in batches) <= maintenance.DEFAULT_BATCH_SIZE
    # The work was done: overdue sessions ended (not deleted), history past retention deleted, the rest kept.
    reasons = dict(
        UserSession.objects.filter(end_reason__in=[EndReason.EXPIRED, EndReason.IDLE])
        .values_list("end_reason")
        .annotate(n=Count("pk"))
        .order_by()
    )
    assert reasons == {EndReason.EXPIRED: expired, EndReason.IDLE: idle}
    cutoff = timezone.now() - dt.timedelta(days=30)
    assert not UserSession.objects.filter(ended_at__lt=cutoff).exists()
    assert not AuditRecord.objects.filter(timestamp__lt=cutoff).exists()
    assert AuditRecord.objects.filter(timestamp__gte=cutoff, event_data__method="sessions.purge").count() == 1
    assert UserSession.objects.filter(ended_at__isnull=True, username__startswith="user").count() == 200
    assert AuditRecord.objects.filter(timestamp__gte=cutoff).count() >= 1_000
