"""`sessions_app.auth.throttle`: failure delay, account lockout (security.md A4–A8, A11) and rate limits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from sessions_app.auth import throttle
from sessions_app.models import AccountLockout, AuditRecord, RateCounter
from tests.threads import Threads, threads_fixture

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def fail(
    times: int, *, username: str = "alice", at: dt.datetime = NOW, **kwargs: Any
) -> throttle.FailureResult:
    """``times`` failures of ``username``, one second apart from ``at``; the last result."""
    kwargs.setdefault("address", "192.0.2.1")
    kwargs.setdefault("mechanism", "LOGIN_PASSWORD")
    result = None
    for i in range(times):
        result = throttle.record_failure(username=username, now=at + dt.timedelta(seconds=i), **kwargs)
    assert result is not None
    return result


def lock(*, username: str = "alice", at: dt.datetime = NOW) -> throttle.FailureResult:
    """Lock ``username`` with exactly a threshold's worth of failures ending at ``at``."""
    result = fail(10, username=username, at=at - dt.timedelta(seconds=9))
    assert result.newly_locked
    return result


def lockout_audits() -> list[AuditRecord]:
    return list(AuditRecord.objects.filter(event_data__lockout=True).order_by("id"))


# --- Failure delay ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "low", "high"), [("LEVEL_1", 1.0, 2.0), ("LEVEL_2", 4.0, 5.0)])
def test_fail_delay_default_policy_is_random_within_the_level_range(
    settings: Any, level: str, low: float, high: float
) -> None:
    settings.SESSIONS_ASSURANCE_LEVEL = level
    del settings.SESSIONS_FAIL_DELAY  # unset = the policy
    delays = {throttle.fail_delay() for _ in range(50)}
    assert all(low <= d <= high for d in delays)
    assert len(delays) > 1
    settings.SESSIONS_FAIL_DELAY = ""  # empty = the policy as well
    assert low <= throttle.fail_delay() <= high


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), ("0", 0.0), (3, 3.0), ("1.5", 1.5), (0.25, 0.25)])
def test_fail_delay_setting_fixes_the_delay(settings: Any, value: object, expected: float) -> None:
    settings.SESSIONS_FAIL_DELAY = value
    assert throttle.fail_delay() == expected


@pytest.mark.parametrize("value", ["soon", -1, "nan", "inf", [1]])
def test_fail_delay_rejects_bad_settings(settings: Any, value: object) -> None:
    settings.SESSIONS_FAIL_DELAY = value
    with pytest.raises(ImproperlyConfigured, match="SESSIONS_FAIL_DELAY"):
        throttle.fail_delay()


def test_sleep_after_failure_sleeps_the_delay_and_skips_zero(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(throttle.time, "sleep", slept.append)
    settings.SESSIONS_FAIL_DELAY = 2
    throttle.sleep_after_failure()
    settings.SESSIONS_FAIL_DELAY = 0
    throttle.sleep_after_failure()
    assert slept == [2.0]


# --- Account lockout --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_A4_lock_after_threshold_keyed_by_account_not_address() -> None:
    for i in range(9):
        result = throttle.record_failure(
            username="alice", address=f"198.51.100.{i}", mechanism="LOGIN_PASSWORD", now=NOW + i * MINUTE
        )
        assert result == throttle.FailureResult(failures=i + 1, locked_until=None, newly_locked=False)
        assert throttle.locked_until(username="alice", now=NOW + i * MINUTE) is None
    tenth = NOW + 9 * MINUTE
    result = throttle.record_failure(
        username="alice", address="203.0.113.7", mechanism="LOGIN_PASSWORD", now=tenth
    )
    assert result == throttle.FailureResult(failures=10, locked_until=tenth + 5 * MINUTE, newly_locked=True)
    # The next attempt (right password or not) is refused until then: the caller reads this.
    assert throttle.locked_until(username="alice", now=tenth + MINUTE) == tenth + 5 * MINUTE
    assert throttle.locked_until(username="bob", now=tenth + MINUTE) is None
    assert throttle.locked_until(username="Alice", now=tenth + MINUTE) is None  # the name as presented


@pytest.mark.django_db
def test_A4_threshold_is_a_setting(settings: Any) -> None:
    settings.SESSIONS_LOCKOUT_THRESHOLD = 3
    assert not fail(2).newly_locked
    assert fail(1, at=NOW + MINUTE).newly_locked


@pytest.mark.django_db
def test_A4_unknown_and_overlong_names_lock_like_real_ones() -> None:
    name = "x" * 10_000
    result = fail(10, username=name)
    assert result.newly_locked
    assert throttle.locked_until(username=name, now=NOW + MINUTE) == result.locked_until
    assert throttle.locked_until(username="x" * 9_999, now=NOW + MINUTE) is None


@pytest.mark.django_db
def test_A5_one_counter_across_pathways() -> None:
    mechanisms = ["LOGIN_PASSWORD", "LOGIN_TWOFACTOR", "API_KEY", "LOGIN_ONETIME_PASSWORD", "browser"]
    for i in range(10):
        result = throttle.record_failure(
            username="alice", address="192.0.2.1", mechanism=mechanisms[i % 5], now=NOW + i * MINUTE
        )
    assert result.newly_locked
    assert result.failures == 10


@pytest.mark.django_db
def test_A6_attempts_during_the_lock_neither_count_nor_lengthen_it() -> None:
    until = lock().locked_until
    assert until == NOW + 5 * MINUTE
    for offset in (dt.timedelta(seconds=1), 2 * MINUTE, 5 * MINUTE - dt.timedelta(microseconds=1)):
        result = throttle.record_failure(
            username="alice", address="192.0.2.1", mechanism="LOGIN_PASSWORD", now=NOW + offset
        )
        assert result == throttle.FailureResult(failures=10, locked_until=until, newly_locked=False)
    row = AccountLockout.objects.get(username="alice")
    assert (row.failures, row.locked_until, row.lock_count, row.last_failure_at) == (10, until, 1, NOW)
    assert len(lockout_audits()) == 1


@pytest.mark.django_db
def test_A6_lock_expires_at_its_time_and_counting_restarts() -> None:
    until = lock().locked_until
    assert until is not None
    assert throttle.locked_until(username="alice", now=until - dt.timedelta(microseconds=1)) == until
    assert throttle.locked_until(username="alice", now=until) is None
    result = throttle.record_failure(username="alice", address="192.0.2.1", mechanism="API_KEY", now=until)
    assert result == throttle.FailureResult(failures=1, locked_until=None, newly_locked=False)


@pytest.mark.django_db
def test_lock_doubles_on_each_further_lock_up_to_the_cap() -> None:
    durations = []
    at = NOW
    for _ in range(7):
        result = lock(at=at)
        assert result.locked_until is not None
        durations.append((result.locked_until - at) / MINUTE)
        at = result.locked_until + dt.timedelta(seconds=9)  # the next run starts as the lock ends
    assert durations == [5, 10, 20, 40, 60, 60, 60]
    assert AccountLockout.objects.get(username="alice").lock_count == 7


@pytest.mark.django_db
def test_lock_durations_are_settings(settings: Any) -> None:
    settings.SESSIONS_LOCKOUT_SECONDS = 60
    settings.SESSIONS_LOCKOUT_MAX_SECONDS = 150
    first = lock().locked_until
    assert first == NOW + MINUTE
    second = lock(at=first + MINUTE).locked_until
    assert second == first + 3 * MINUTE
    assert lock(at=second + MINUTE).locked_until == second + MINUTE + dt.timedelta(seconds=150)


@pytest.mark.django_db
def test_A7_success_resets_the_counter_and_the_lock_level() -> None:
    fail(9)
    throttle.record_success(username="alice", now=NOW + MINUTE)
    assert fail(9, at=NOW + 2 * MINUTE).failures == 9  # from zero again
    locking = fail(1, at=NOW + 3 * MINUTE)
    assert locking.newly_locked
    until = locking.locked_until
    assert until == NOW + 8 * MINUTE
    throttle.record_success(username="alice", now=until)
    assert lock(at=until + MINUTE).locked_until == until + 6 * MINUTE  # 5 min again, not 10
    assert not AccountLockout.objects.filter(username="bob").exists()
    throttle.record_success(username="bob")  # nothing to reset: fine


@pytest.mark.django_db
def test_A7_success_does_not_lift_an_active_lock() -> None:
    until = lock().locked_until
    throttle.record_success(username="alice", now=NOW + MINUTE)
    assert throttle.locked_until(username="alice", now=NOW + MINUTE) == until


@pytest.mark.django_db
def test_A7_counter_restarts_after_the_observation_window() -> None:
    fail(9)
    last = NOW + dt.timedelta(seconds=8)
    # Exactly 15 min after the last failure it still counts ...
    assert fail(1, at=last + 15 * MINUTE).failures == 10
    # ... more than 15 min after, counting starts from zero.
    fail(5, username="bob")
    assert (
        fail(
            1, username="bob", at=NOW + dt.timedelta(seconds=4) + 15 * MINUTE + dt.timedelta(seconds=1)
        ).failures
        == 1
    )


@pytest.mark.django_db
def test_A7_observation_window_is_a_setting_and_keeps_the_lock_level(settings: Any) -> None:
    settings.SESSIONS_LOCKOUT_WINDOW = 60
    fail(9)
    assert fail(1, at=NOW + 2 * MINUTE).failures == 1
    until = lock(at=NOW + 10 * MINUTE).locked_until
    assert until is not None
    # Long after the window and the lock, the lock level survives: the next lock doubles.
    later = until + 120 * MINUTE
    assert lock(at=later).locked_until == later + 10 * MINUTE


@pytest.mark.django_db
def test_A8_lock_is_audited_in_the_same_transaction() -> None:
    fail(9, mechanism="API_KEY")
    assert lockout_audits() == []
    result = throttle.record_failure(
        username="alice", address="203.0.113.9", mechanism="API_KEY", now=NOW + dt.timedelta(seconds=9)
    )
    [record] = lockout_audits()
    assert result.locked_until is not None
    assert (record.event, record.success, record.username, record.address) == (
        "AUTHENTICATION",
        False,
        "alice",
        "203.0.113.9",
    )
    assert record.event_data == {
        "lockout": True,
        "locked_until": result.locked_until.isoformat(),
        "failures": 10,
        "mechanism": "API_KEY",
    }


@pytest.mark.django_db
def test_A8_admin_unlock_lifts_the_lock_early_and_is_audited() -> None:
    lock(at=dt.datetime.now(dt.UTC))
    assert throttle.locked_until(username="alice") is not None
    assert throttle.unlock(username="alice", actor="root", address="10.0.0.1") is True
    assert throttle.locked_until(username="alice") is None
    record = AuditRecord.objects.get(event="METHOD_CALL")
    assert (record.username, record.address, record.success) == ("root", "10.0.0.1", True)
    assert record.event_data == {"method": "auth.unlock_user", "username": "alice", "was_locked": True}
    # Counter and lock level are gone too: the next lock is a first lock.
    assert not AccountLockout.objects.filter(username="alice").exists()
    assert throttle.unlock(username="alice", actor=None) is False
    assert AuditRecord.objects.filter(event="METHOD_CALL").count() == 2


@pytest.mark.django_db
def test_A8_unlock_of_an_expired_lock_reports_not_locked() -> None:
    lock(at=dt.datetime.now(dt.UTC) - 6 * MINUTE)
    assert throttle.unlock(username="alice", actor="root") is False


@pytest.mark.django_db
def test_lockout_settings_are_validated(settings: Any) -> None:
    settings.SESSIONS_LOCKOUT_THRESHOLD = 0
    with pytest.raises(ImproperlyConfigured, match="SESSIONS_LOCKOUT_THRESHOLD"):
        fail(1)


# --- Rate limit -------------------------------------------------------------------------------------


def hit(at: dt.datetime = NOW, *, method: str = "auth.login_ex", address: str = "192.0.2.1") -> int | None:
    return throttle.hit_rate_limit(method=method, address=address, now=at)


@pytest.mark.django_db
def test_A9_rate_limit_window_and_retry_after() -> None:
    assert [hit(NOW + dt.timedelta(seconds=i)) for i in range(20)] == [None] * 20
    assert hit(NOW + dt.timedelta(seconds=20)) == 40
    assert hit(NOW + dt.timedelta(seconds=59, milliseconds=1)) == 1  # rounded up, never 0
    assert hit(NOW + dt.timedelta(seconds=59, milliseconds=999)) == 1
    assert RateCounter.objects.get().count == 20  # refused calls are not counted
    # The window ends 60 s after its first call; a new one starts with the next call.
    assert hit(NOW + MINUTE) is None
    assert [hit(NOW + MINUTE + dt.timedelta(seconds=30)) for _ in range(19)] == [None] * 19
    assert hit(NOW + MINUTE + dt.timedelta(seconds=30)) == 30


@pytest.mark.django_db
def test_A9_rate_limit_is_per_method_and_address() -> None:
    for _ in range(20):
        hit()
    assert hit() == 60
    assert hit(method="auth.generate_token") is None
    assert hit(address="192.0.2.2") is None
    # The key cannot be forged by a separator inside the method name.
    assert hit(method='auth.login_ex", "192.0.2.1') is None
    assert hit(method="m" * 1000, address="192.0.2.1") is None


@pytest.mark.django_db
def test_rate_limit_settings(settings: Any) -> None:
    settings.SESSIONS_LOGIN_RATE = 2
    settings.SESSIONS_LOGIN_RATE_WINDOW = 10
    assert [hit(), hit(), hit()] == [None, None, 10]
    settings.SESSIONS_LOGIN_RATE = 0  # disabled
    assert hit() is None


# --- Housekeeping -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_purge_counters_keeps_live_state() -> None:
    now = NOW + 30 * 24 * 60 * MINUTE
    fail(3, username="stale")
    fail(3, username="recent", at=now - 10 * MINUTE)
    lock(username="locked", at=now - MINUTE)
    hit(NOW, address="stale")
    hit(now - dt.timedelta(seconds=30), address="running")
    assert throttle.purge_counters(older_than=dt.timedelta(days=1), now=now) == 2
    assert set(AccountLockout.objects.values_list("username", flat=True)) == {"recent", "locked"}
    assert RateCounter.objects.count() == 1
    # A tiny older_than still spares the observation window, the lock and the running rate window.
    assert throttle.purge_counters(older_than=dt.timedelta(0), now=now) == 0


# --- Concurrency (A11) ------------------------------------------------------------------------------


@pytest.fixture
def threads(transactional_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Threads]:
    """Worker threads with connections of their own, on a database they share (tests/threads.py)."""
    yield from threads_fixture(tmp_path, monkeypatch)


def one_failure() -> throttle.FailureResult:
    return throttle.record_failure(username="alice", address="192.0.2.1", mechanism="LOGIN_PASSWORD")


def test_A11_concurrent_failures_are_all_counted(threads: Threads, settings: Any) -> None:
    settings.SESSIONS_LOCKOUT_THRESHOLD = 1000
    results = threads.run(50, lambda _: one_failure())
    assert sorted(r.failures for r in results) == list(range(1, 51))
    assert threads.read(lambda: AccountLockout.objects.get(username="alice").failures) == 50


def test_A11_concurrent_failures_lock_exactly_once(threads: Threads) -> None:
    results = threads.run(50, lambda _: one_failure())
    assert sum(r.newly_locked for r in results) == 1
    assert sorted(r.failures for r in results)[:10] == list(range(1, 11))
    assert all(r.failures == 10 for r in results if r.locked_until is not None)
    row = threads.read(lambda: AccountLockout.objects.get(username="alice"))
    assert (row.failures, row.lock_count) == (10, 1)
    assert row.locked_until is not None
    assert threads.read(lambda: AuditRecord.objects.filter(event_data__lockout=True).count()) == 1


def test_A11_concurrent_calls_respect_the_rate_limit(threads: Threads) -> None:
    results = threads.run(30, lambda _: throttle.hit_rate_limit(method="auth.login_ex", address="192.0.2.1"))
    assert results.count(None) == 20
    assert all(r is not None and 1 <= r <= 60 for r in results if r is not None)
    assert threads.read(lambda: RateCounter.objects.get().count) == 20


@pytest.mark.django_db(transaction=True)
def test_a_counter_that_conflicted_then_vanished_is_created_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent failure inserts the row, a concurrent success deletes it before get_or_create's
    second lookup: the conflict is not an error (A13 on PostgreSQL), the failure is still counted."""
    from django.db import IntegrityError
    from django.db.models import QuerySet

    real = QuerySet.get_or_create
    conflicts = iter([True])

    def get_or_create(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.model is AccountLockout and next(conflicts, False):
            raise IntegrityError("duplicate key value violates unique constraint")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "get_or_create", get_or_create)
    result = throttle.record_failure(username="alice", address="10.0.0.1:1", mechanism="OTP_TOKEN")
    assert result.failures == 1
    assert AccountLockout.objects.get(username="alice").failures == 1
