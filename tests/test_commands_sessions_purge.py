"""``manage.py sessions purge``: the expiry sweep, retention, every kind of leftover, batches, dry run."""

from __future__ import annotations

import datetime as dt
import re
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from sessions_app.models import (
    AccountLockout,
    AuditEvent,
    AuditRecord,
    EndReason,
    KnownDevice,
    NodeNonce,
    OneTimePassword,
    PendingLogin,
    RateCounter,
    ScramExchange,
    SignInNotice,
    Token,
    UserSession,
)
from sessions_app.services.maintenance import _Batches, history_purge, purge_plan
from tests.factories import session

ACTOR = "manage.py:tester"
DAY = dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def _os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sessions_app.management.cli.getpass.getuser", lambda: "tester")


def purge(*args: str) -> str:
    out = StringIO()
    call_command("sessions", "purge", "--no-progress", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def saved(**fields: Any) -> UserSession:
    row = session(**fields)
    row.save()
    return row


def counts(out: str) -> dict[str, int]:
    """The table of the command's output: description -> count."""
    found = {}
    for line in out.splitlines():
        match = re.match(r"^([\d,]+)\s+(.+)$", line)
        if match:
            found[match[2].strip()] = int(match[1].replace(",", ""))
    return found


@pytest.fixture
def world(make_user: Any) -> dict[str, Any]:
    """One row of each kind on both sides of a 30-day cutoff, and overdue active sessions."""
    now = timezone.now()
    alice = make_user("alice")
    old = now - 40 * DAY
    w: dict[str, Any] = {"now": now}
    w["old_ended"] = [
        saved(ended_at=old, end_reason=EndReason.LOGOUT, created_at=old - DAY) for _ in range(3)
    ]
    w["recent_ended"] = saved(ended_at=now - 5 * DAY, end_reason=EndReason.LOGOUT)
    w["active"] = saved(user=alice)
    w["expired"] = saved(user=alice, expires_at=now - DAY)
    w["idle"] = saved(user=alice, idle_timeout=60, last_seen_at=now - dt.timedelta(minutes=5))
    w["fresh_idle"] = saved(user=alice, idle_timeout=3600, last_seen_at=now - dt.timedelta(minutes=5))
    w["old_token"] = Token.objects.create(
        token_hash="a" * 64, session=w["old_ended"][0], expires_at=old + DAY
    )
    w["expired_token"] = Token.objects.create(token_hash="b" * 64, session=w["active"], expires_at=now - DAY)
    w["live_token"] = Token.objects.create(token_hash="c" * 64, session=w["active"], expires_at=now + DAY)
    PendingLogin.objects.create(secret_hash="d" * 64, user=alice, expires_at=now - dt.timedelta(minutes=1))
    w["pending"] = PendingLogin.objects.create(secret_hash="e" * 64, user=alice, expires_at=now + DAY)
    exchange = {
        "key_id": 1,
        "username": "alice",
        "gs2_header": "n,,",
        "client_first_bare": "n=",
        "server_first": "r=",
    }
    ScramExchange.objects.create(secret_hash="i" * 64, expires_at=now - dt.timedelta(minutes=1), **exchange)
    w["scram"] = ScramExchange.objects.create(secret_hash="j" * 64, expires_at=now + DAY, **exchange)
    notice = {"user": alice, "signature": "Safari|iOS|iPhone", "network": "10.0.0.0/24", "device_label": "x"}
    SignInNotice.objects.create(created_at=old, **notice)
    w["notice"] = SignInNotice.objects.create(created_at=now - DAY, **notice)
    KnownDevice.objects.create(user=alice, signature="a", network="n", last_seen_at=old)
    w["device"] = KnownDevice.objects.create(user=alice, signature="b", network="n", last_seen_at=now - DAY)
    OneTimePassword.objects.create(user=alice, password_hash="f" * 64, expires_at=now + DAY, used_at=now)
    OneTimePassword.objects.create(user=alice, password_hash="g" * 64, expires_at=now - DAY)
    w["otp"] = OneTimePassword.objects.create(user=alice, password_hash="h" * 64, expires_at=now + DAY)
    NodeNonce.objects.create(nonce="old-nonce-000000", seen_at=now - dt.timedelta(hours=1))
    w["nonce"] = NodeNonce.objects.create(nonce="new-nonce-000000", seen_at=now)
    AccountLockout.objects.create(username="stale", failures=3, last_failure_at=now - 3 * DAY)
    AccountLockout.objects.create(username="fresh", failures=3, last_failure_at=now)
    RateCounter.objects.create(key="stale", window_start=now - 3 * DAY, count=1)
    for days in (100, 40, 31):
        AuditRecord.objects.create(event=AuditEvent.LOGOUT, success=True, timestamp=now - days * DAY)
    w["recent_audit"] = AuditRecord.objects.create(event=AuditEvent.LOGOUT, success=True, timestamp=now - DAY)
    return w


EXPECTED = {
    "active sessions past their absolute limit, ended (EXPIRED)": 1,
    "active sessions past their idle limit, ended (IDLE)": 1,
    "ended sessions deleted (ended before the cutoff)": 3,
    "expired tokens deleted": 2,
    "expired pending second factors deleted": 1,
    "abandoned SCRAM exchanges deleted": 1,
    "used or expired one-time passwords deleted": 2,
    "node nonces past the replay window deleted": 1,
    "stale throttle counters deleted": 2,
    "audit records deleted (older than the cutoff)": 3,
    "new-sign-in notices deleted (older than the cutoff)": 1,
    "remembered devices deleted (unused since the cutoff)": 1,
}


@pytest.mark.django_db
def test_purge_sweeps_then_deletes_everything_past_retention(world: dict[str, Any]) -> None:
    out = purge("--older-than", "30d")
    assert counts(out) == EXPECTED
    # The sweep ends (never deletes) overdue sessions, with the right reason and no actor.
    world["expired"].refresh_from_db()
    world["idle"].refresh_from_db()
    assert (world["expired"].end_reason, world["expired"].ended_by) == (EndReason.EXPIRED, None)
    assert world["idle"].end_reason == EndReason.IDLE
    sweep = AuditRecord.objects.get(event_data__end_reason=EndReason.IDLE)
    assert sweep.event_data["note"] == "ended by sessions purge"
    # Kept: recent history, active and fresh rows.
    survivors = set(UserSession.objects.values_list("pk", flat=True))
    assert survivors == {world[k].pk for k in ("recent_ended", "active", "expired", "idle", "fresh_idle")}
    assert list(Token.objects.all()) == [world["live_token"]]
    assert list(PendingLogin.objects.all()) == [world["pending"]]
    assert list(ScramExchange.objects.all()) == [world["scram"]]
    assert list(SignInNotice.objects.all()) == [world["notice"]]
    assert list(KnownDevice.objects.all()) == [world["device"]]
    assert list(OneTimePassword.objects.all()) == [world["otp"]]
    assert list(NodeNonce.objects.all()) == [world["nonce"]]
    assert list(AccountLockout.objects.values_list("username", flat=True)) == ["fresh"]
    assert not RateCounter.objects.exists()
    remaining = AuditRecord.objects.filter(timestamp__lt=world["now"] - 30 * DAY)
    assert not remaining.exists()
    assert AuditRecord.objects.filter(pk=world["recent_audit"].pk).exists()
    summary = AuditRecord.objects.get(event_data__method="sessions.purge")
    assert summary.username == ACTOR
    assert summary.event_data["older_than_seconds"] == 30 * 86400
    assert summary.event_data["sessions"] == 3
    assert summary.event_data["ended_idle"] == 1
    # Running again finds nothing more.
    assert set(counts(purge("--older-than", "30d")).values()) == {0}


@pytest.mark.django_db
def test_dry_run_counts_the_same_and_changes_nothing(world: dict[str, Any]) -> None:
    before = {
        model: model.objects.count()
        for model in (UserSession, Token, AuditRecord, AccountLockout, RateCounter, OneTimePassword)
    }
    out = purge("--older-than", "30d", "--dry-run")
    assert "dry run: nothing changed" in out
    found = counts(out)
    assert found == EXPECTED
    after = {model: model.objects.count() for model in before}
    assert after == before
    assert UserSession.objects.filter(ended_at__isnull=True).count() == 4


@pytest.mark.django_db
def test_default_window_is_sessions_history_days(settings: Any) -> None:
    settings.SESSIONS_HISTORY_DAYS = 10
    now = timezone.now()
    saved(ended_at=now - 11 * DAY, end_reason=EndReason.LOGOUT)
    saved(ended_at=now - 9 * DAY, end_reason=EndReason.LOGOUT)
    out = purge()
    assert counts(out)["ended sessions deleted (ended before the cutoff)"] == 1
    cutoff = re.search(r"Cutoff (\S+)Z", out)
    assert cutoff is not None
    shown = dt.datetime.fromisoformat(cutoff[1]).replace(tzinfo=dt.UTC)
    assert abs(shown - (now - 10 * DAY)) < dt.timedelta(seconds=30)


@pytest.mark.django_db
def test_batches_are_small_and_reported_to_progress() -> None:
    now = timezone.now()
    UserSession.objects.bulk_create(
        session(ended_at=now - 100 * DAY, end_reason=EndReason.LOGOUT) for _ in range(25)
    )
    plan = purge_plan(older_than=90 * DAY, now=now)
    assert plan.sessions == 25
    progress: list[int] = []
    result = history_purge(older_than=90 * DAY, actor=ACTOR, now=now, batch_size=4, progress=progress.append)
    assert result.sessions == 25
    assert max(progress) <= 4
    assert sum(progress) == 25
    assert not UserSession.objects.exists()


def test_batch_sizes_adapt_to_the_time_budget() -> None:
    batches = _Batches(1000, start=100)
    batches.pause = 0
    batches.done(100, 0.01)  # fast: grow, at most 2x
    assert batches.size == 200
    batches.done(200, 1.0)  # slow: shrink to about 0.1 s worth at once
    assert batches.size == 20
    batches.done(5, 0.0)  # a short last batch says nothing about the rate
    assert batches.size == 20
    for _ in range(10):
        batches.done(batches.size, 0.001)
    assert batches.size == 1000  # never above the limit


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "90"], r"--older-than: '90' is not a duration \(e\.g\. 90d, 24h, 15m, 3600s\)"),
        (["--older-than", "0d"], "--older-than: the duration must be greater than zero"),
        (["--older-than=-5d"], "is not a duration"),
        (["--older-than", "99999w"], "longer than a century"),
        (["--older-than", "9d\n\x1b[31m"], r"'9d\\n\\x1b\[31m' is not a duration"),
        (["--batch-size", "0"], "--batch-size: must be between 1 and 10000"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message) as info:
        purge(*args)
    assert info.value.returncode == 1
    assert "\n" not in str(info.value)
    assert not AuditRecord.objects.exists()


@pytest.mark.django_db
def test_the_sweep_checks_each_session_again_when_it_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session listed as idle but used before its batch runs is not ended."""
    now = timezone.now()
    idle = saved(idle_timeout=60, last_seen_at=now - dt.timedelta(minutes=5))
    used = saved(idle_timeout=60, last_seen_at=now - dt.timedelta(minutes=5))

    def listed_then_used(*, now: dt.datetime) -> Any:
        # Both were idle when listed; one is used before its batch runs.
        UserSession.objects.filter(pk=used.pk).update(last_seen_at=timezone.now())
        return UserSession.objects.filter(pk__in=[idle.pk, used.pk])

    monkeypatch.setattr("sessions_app.services.maintenance.sessions_past_idle_limit", listed_then_used)
    result = history_purge(older_than=90 * DAY, actor=ACTOR)
    assert result.ended_idle == 1
    idle.refresh_from_db()
    used.refresh_from_db()
    assert (idle.end_reason, used.ended_at) == (EndReason.IDLE, None)
