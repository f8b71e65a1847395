"""D4 (SQLite): concurrent writers doing read-then-write in ``atomic()`` never fail with "database is
locked": transactions are ``BEGIN IMMEDIATE`` with a busy timeout, so writers queue instead of failing
when a read transaction tries to upgrade (security.md group D; measured with DEFERRED: 183 of 320
failed).

The writers run the registry's own read-then-write transactions: the rate-limit counter and the
failure counter (``SELECT … FOR UPDATE`` / get-or-create, then ``UPDATE``), session creation under a
per-user cap (count, evict, insert, audit), and an audit write after a read. Afterwards no update is
lost: every counter equals the number of operations.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction

from sessions_app.audit import audit_record
from sessions_app.auth import throttle
from sessions_app.auth.clients import Client
from sessions_app.models import AccountLockout, AuditEvent, AuditRecord, Credentials, RateCounter, UserSession
from sessions_app.services.sessions import session_create

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

CAP = 5
KINDS = ("rate", "failure", "session", "audit")


@pytest.mark.parametrize("writers", [8, 16])
def test_D4_sqlite_writers_never_see_database_is_locked(
    make_user: Any,
    threads: Any,
    scaled: Any,
    settings: Any,
    vendor_only: Any,
    writers: int,
    record_property: Any,
) -> None:
    vendor_only.sqlite()
    options = connection.settings_dict["OPTIONS"]
    assert options.get("transaction_mode") == "IMMEDIATE", options
    assert float(options.get("timeout", 5)) >= 1, options
    operations = scaled(320, 1280)
    per_writer = operations // writers
    settings.SESSIONS_LOGIN_RATE = 10**9
    settings.SESSIONS_LOCKOUT_THRESHOLD = 10**9
    settings.SESSIONS_MAX_PER_USER = CAP
    user = make_user("alice")
    client = Client(address="127.0.0.1", port=40000)

    def audit_after_read() -> None:
        with transaction.atomic():
            seen = AuditRecord.objects.filter(event_data__d4=True).count()
            audit_record(event=AuditEvent.METHOD_CALL, success=True, event_data={"d4": True, "seen": seen})

    work: dict[str, Callable[[], Any]] = {
        "rate": lambda: throttle.hit_rate_limit(method="d4", address="127.0.0.1"),
        "failure": lambda: throttle.record_failure(username="d4", address="127.0.0.1", mechanism="D4"),
        "session": lambda: session_create(credentials=Credentials.LOGIN_PASSWORD, client=client, user=user),
        "audit": audit_after_read,
    }

    def writer(i: int) -> tuple[list[float], list[str]]:
        latencies: list[float] = []
        errors: list[str] = []
        for n in range(per_writer):  # bounded by count
            started = time.monotonic()
            try:
                work[KINDS[(i + n) % len(KINDS)]]()
            except OperationalError as exc:
                errors.append(str(exc))
            latencies.append(time.monotonic() - started)
        return latencies, errors

    results = threads.run(writers, writer, timeout=120)

    latencies = sorted(x for lat, _ in results for x in lat)
    errors = [e for _, errs in results for e in errs]
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    record_property("D4 operations", len(latencies))
    record_property("D4 errors", len(errors))
    record_property("D4 p50 ms", round(statistics.median(latencies) * 1000, 2))
    record_property("D4 p95 ms", round(p95 * 1000, 2))
    assert errors == [], f"{len(errors)} of {len(latencies)} failed: {sorted(set(errors))}"

    done = dict.fromkeys(KINDS, 0)
    for i in range(writers):
        for n in range(per_writer):
            done[KINDS[(i + n) % len(KINDS)]] += 1

    def stored() -> dict[str, int]:
        return {
            "rate": RateCounter.objects.get().count,
            "failure": AccountLockout.objects.get(username="d4").failures,
            "session": UserSession.objects.filter(user=user).count(),
            "active": UserSession.objects.active().filter(user=user).count(),
            "audit": AuditRecord.objects.filter(event_data__d4=True).count(),
            "session audits": AuditRecord.objects.filter(
                event=AuditEvent.AUTHENTICATION, username="alice"
            ).count(),
        }

    counts = threads.read(stored)
    # No lost update, no lost or doubled row.
    assert counts["rate"] == done["rate"]
    assert counts["failure"] == done["failure"]
    assert counts["session"] == counts["session audits"] == done["session"]
    assert counts["active"] == CAP
    assert counts["audit"] == done["audit"]
