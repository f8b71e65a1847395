"""Brute-force protection and rate limits: the written-down policy (ASVS 5.0 V6.1.1, security.md "Policy").

Failure delay
    Every failed login waits a random 1–2 s before answering (4–5 s at assurance ``LEVEL_2``), so a
    single connection cannot try more than about one password a second and failures cannot be told
    apart by timing. ``SESSIONS_FAIL_DELAY`` overrides it: empty or unset = this policy, a number =
    that many seconds, ``0`` = no delay (tests).

Account lockout
    * An account locks after ``SESSIONS_LOCKOUT_THRESHOLD`` (10) consecutive failed logins, counted
      across every pathway (password, second factor, one-time password, API key): one counter per
      account name, kept in the database (`AccountLockout`) and changed only under a row lock, so
      concurrent failures on several workers are all counted.
    * The first lock lasts ``SESSIONS_LOCKOUT_SECONDS`` (5 min); each further lock of the same
      account doubles it, up to ``SESSIONS_LOCKOUT_MAX_SECONDS`` (1 h): 5, 10, 20, 40, 60, 60… min.
    * While locked, every attempt, right password or wrong, gets the same generic failure (the
      caller answers; `locked_until` exposes the state). Attempts during a lock neither count nor
      lengthen it, and the lock ends at the time it was set for.
    * A lock consumes its failures: after it expires, counting starts again from zero, so the next
      lock again needs a full run of consecutive failures.
    * Counting also restarts from zero when the last failure is older than the observation window,
      ``SESSIONS_LOCKOUT_WINDOW`` (15 min). The window does not reset the lock level (otherwise
      locks longer than the window could never double).
    * A successful login resets the counter and the lock level. An early unlock (`unlock`, used by
      ``manage.py`` and the admin) does the same and is audited, as is every lock.
    * The counter is keyed by the account name as presented, known account or not, and not by
      client address: a botnet spreading guesses over many addresses still hits one counter, and
      the lock answer is the same for names that do not exist, so it reveals nothing.
    * The price of a per-account counter is that an attacker can lock a victim out. That is bounded:
      a lock lasts at most 1 h, costs the attacker a full run of failures each time, and an
      administrator can lift it at once with `unlock`.

API keys (F7)
    Failures against an API key id count toward that key, never toward its owner's account: the
    counter is the lockout row named ``api_key:<id>`` (`api_key_lockout_name`; no account name holds
    a ``:``), keyed by the id as presented, known or not, with the same threshold, durations and
    unlock as an account. Wrong secrets over ``API_KEY_PLAIN``, ``auth.login_with_api_key`` and
    ``Authorization: Bearer`` all count; a locked key refuses key logins with the generic failure.
    So nobody can lock a user out, or learn who owns key N (the sign-in page names an account's
    lock), by guessing secrets for key N. A Bearer request does not look the lock up (that would be
    a query on every request); a key secret has ~380 bits, so the lock there only stops a logged-in
    session from being made, and Bearer guessing is bounded per address (below). A key login neither
    resets nor is blocked by anything but the key's counter and the owner's own account lock (set by
    password and second-factor failures, which still covers every pathway of the account).

A right password is not a failure (F8)
    A right password refused only because the account must use a second factor (a TOTP device, or
    assurance ``LEVEL_2``) is not counted: ``Authorization: Basic`` answers "second factor required;
    Basic cannot carry it" (REST: 401; JSON-RPC: ``ENOTAUTHENTICATED`` with that reason), a
    ``login_ex`` answers ``OTP_REQUIRED`` (or, at ``LEVEL_2`` without a device, ``AUTH_ERR``).

Login rate limit (F4)
    Every login attempt from one client address counts toward one limit, whatever the caller already
    presents (a cookie, a Bearer key, a Basic header, a logged-in WebSocket): at most
    ``SESSIONS_LOGIN_RATE`` (20) per ``SESSIONS_LOGIN_RATE_WINDOW`` (60 s) per client address,
    shared by every login entrance -- ``auth.login_ex``, ``auth.login_ex_continue``, ``auth.login``,
    ``auth.login_with_api_key``, ``auth.login_with_token`` over JSON-RPC (HTTP and WebSocket), the
    REST login views, the sign-in page and every ``Authorization: Basic`` request (a password login
    per request, counted before the password is checked). `hit_login_limit` keys it ``("login",
    address)``. The window is fixed and starts with the first call of the pair; further calls are
    refused (``EBUSY`` / HTTP 429) with ``Retry-After`` = the seconds until the window ends, at
    least 1. Refused calls are not counted. ``SESSIONS_LOGIN_RATE`` = 0 disables the limit (tests).
    The client address is the trusted one (`SESSIONS_TRUSTED_PROXIES`), resolved by the caller (the
    uid on the unix socket). `hit_rate_limit` is the general (name, address) counter under it.

Failed credentials on ordinary requests (F9)
    A request whose ``Authorization: Bearer``, ``Basic`` or session cookie is refused counts toward a
    second counter per address, ``("failed-credentials", address)``, in windows of
    ``SESSIONS_LOGIN_RATE_WINDOW``: beyond ``SESSIONS_LOGIN_RATE`` failures in the window, every
    further failed credential from the address is answered 429 with ``Retry-After`` instead of being
    served as anonymous. Only failures are counted and only failures are refused: the check runs
    after the credential was found wrong, so a valid credential from the same address is always
    served and costs no query or write for this (the per-request hot path is unchanged). The 429
    for a rejected cookie also deletes the cookie, so a browser holding a stale one is served (and
    can sign in) from its next request on.
    Audit records of these failures are aggregated (`record_request_failure`): the first failure of
    a window writes one ``AUTHENTICATION`` record (``success`` false, ``per_request`` true, the first
    failure's mechanism, reason and account name, ``failures_from`` = the address), written as the
    window starts; every further failure in the window raises its ``event_data.count``. Counter and
    record change in one transaction under the counter's row lock (``SELECT … FOR UPDATE`` on
    PostgreSQL, the IMMEDIATE write lock on SQLite), so concurrent failures are all counted, on one
    record. Repeated failures from one address within a window are thus one record with a count,
    and one address writes at most one audit row a window however many requests it sends.
    This bookkeeping waits at most ``FAILURE_LOCK_WAIT`` (1 s) for a database lock: while a long
    writer holds SQLite's write lock (or a PostgreSQL lock), a refused credential is still refused,
    at once, and only its count and record are skipped (logged) -- a rejected cookie must not hold
    a worker for the database's full busy timeout (security.md D15).

Rows of both tables are small and bounded by activity; `purge_counters` removes stale ones (a
purged lockout row forgets its lock level, so purge only well past the longest lock).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from sessions_app import conf
from sessions_app.audit import audit_record
from sessions_app.db.connections import atomic_or_give_up
from sessions_app.models import AccountLockout, AuditEvent, AuditRecord, RateCounter

logger = logging.getLogger(__name__)
_random = random.SystemRandom()

# Column widths of the key columns: longer keys are replaced by a digest (see `_bounded_key`).
_USERNAME_MAX = AccountLockout._meta.get_field("username").max_length or 150
_RATE_KEY_MAX = RateCounter._meta.get_field("key").max_length or 255


@dataclass(frozen=True, slots=True)
class FailureResult:
    """What `record_failure` did: the failures counted so far and the lock, if any."""

    failures: int
    locked_until: datetime | None
    newly_locked: bool


# --- Failure delay --------------------------------------------------------------------------------


def fail_delay() -> float:
    """Seconds a failed login waits before answering, per the policy and ``SESSIONS_FAIL_DELAY``."""
    value = conf.get("SESSIONS_FAIL_DELAY")
    if value is None or (isinstance(value, str) and not value.strip()):
        low, high = (1.0, 2.0) if conf.get("SESSIONS_ASSURANCE_LEVEL") == "LEVEL_1" else (4.0, 5.0)
        return _random.uniform(low, high)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(f"SESSIONS_FAIL_DELAY must be empty or a number, not {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ImproperlyConfigured(f"SESSIONS_FAIL_DELAY must be a number >= 0, not {value!r}")
    return seconds


def sleep_after_failure() -> None:
    """Wait `fail_delay` seconds; call after every failed login, before answering."""
    seconds = fail_delay()
    if seconds > 0:
        time.sleep(seconds)


# --- Account lockout ------------------------------------------------------------------------------


def _bounded_key(value: str, max_length: int) -> str:
    """``value``, or a digest of it when it does not fit the column (no real name is that long)."""
    if len(value) <= max_length:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _seconds_setting(name: str, *, minimum: int) -> int:
    value = int(conf.get(name))
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, not {value}")
    return value


def _lock_duration(previous_locks: int) -> timedelta:
    base = _seconds_setting("SESSIONS_LOCKOUT_SECONDS", minimum=1)
    cap = _seconds_setting("SESSIONS_LOCKOUT_MAX_SECONDS", minimum=1)
    return timedelta(seconds=min(base * 2 ** min(previous_locks, 32), cap))


def locked_until(*, username: str, now: datetime | None = None) -> datetime | None:
    """When the lock of ``username`` ends, or None if the account is not locked at ``now``.

    Callers check this before verifying any credential and, while locked, answer every attempt with
    the generic authentication failure (and `sleep_after_failure`), without calling `record_failure`.
    """
    now = now or timezone.now()
    return (
        AccountLockout.objects.filter(username=_bounded_key(username, _USERNAME_MAX), locked_until__gt=now)
        .values_list("locked_until", flat=True)
        .first()
    )


def _locked_counter(key: str, attempts: int = 3) -> AccountLockout:
    """The lockout row of ``key``, created if missing, locked for this transaction.

    `get_or_create` retries its lookup once after a unique-key conflict, but the row that conflicted
    can be gone by then: a successful login of the same account deletes it (`record_success`), so
    "inserted by a concurrent failure, deleted by a concurrent success" leaves neither to find (seen
    on PostgreSQL under A13's parallel second factors). Trying again converges: each round either
    finds the row or inserts it.
    """
    for attempt in range(attempts):
        try:
            row, _ = AccountLockout.objects.select_for_update().get_or_create(username=key)
            return row
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def record_failure(
    *, username: str, address: str, mechanism: str, now: datetime | None = None
) -> FailureResult:
    """Count one failed login of ``username`` (any pathway) and lock the account at the threshold.

    Runs in one transaction under a row lock (``SELECT … FOR UPDATE`` on PostgreSQL, the IMMEDIATE
    write lock on SQLite), so concurrent failures are all counted; the first insert of a name is
    race-safe (`get_or_create` retries the lookup on the unique-key conflict). A failure while the
    account is locked changes nothing. A failure that locks the account writes an ``AUTHENTICATION``
    audit record (``lockout: true``) in the same transaction. ``mechanism`` is the credential type
    that failed and ``address`` the client's origin (``Client.origin``, as in every audit record);
    both are only recorded.
    """
    now = now or timezone.now()
    threshold = _seconds_setting("SESSIONS_LOCKOUT_THRESHOLD", minimum=1)
    window = timedelta(seconds=_seconds_setting("SESSIONS_LOCKOUT_WINDOW", minimum=1))
    key = _bounded_key(username, _USERNAME_MAX)
    with transaction.atomic():
        row = _locked_counter(key)
        if row.locked_until is not None and row.locked_until > now:
            return FailureResult(failures=row.failures, locked_until=row.locked_until, newly_locked=False)
        if row.locked_until is not None or row.last_failure_at is None or now - row.last_failure_at > window:
            row.failures = 0  # an expired lock, or a quiet observation window: counting restarts
            row.locked_until = None
        row.failures += 1
        row.last_failure_at = now
        newly_locked = row.failures >= threshold
        if newly_locked:
            lock_end = now + _lock_duration(row.lock_count)
            row.locked_until = lock_end
            row.lock_count += 1
        row.save(update_fields=["failures", "last_failure_at", "locked_until", "lock_count"])
        if newly_locked:
            audit_record(
                event=AuditEvent.AUTHENTICATION,
                success=False,
                username=key,
                address=address,
                event_data={
                    "lockout": True,
                    "locked_until": lock_end.isoformat(),
                    "failures": row.failures,
                    "mechanism": mechanism,
                },
            )
    return FailureResult(failures=row.failures, locked_until=row.locked_until, newly_locked=newly_locked)


def record_success(*, username: str, now: datetime | None = None) -> None:
    """A successful login of ``username``: reset its failure counter and lock level.

    An active lock is left in place (only `unlock` lifts a lock early); callers that checked
    `locked_until` first never get here while the account is locked.
    """
    now = now or timezone.now()
    AccountLockout.objects.filter(username=_bounded_key(username, _USERNAME_MAX)).exclude(
        locked_until__gt=now
    ).delete()


def unlock(*, username: str, actor: str | None, address: str = "") -> bool:
    """Lift the lock of ``username`` early and reset its counter and lock level; audited.

    Returns whether the account was locked. The ``METHOD_CALL`` audit record (``auth.unlock_user``,
    by ``actor``, None for a local command) is written either way, in the same transaction.
    """
    now = timezone.now()
    key = _bounded_key(username, _USERNAME_MAX)
    with transaction.atomic():
        row = AccountLockout.objects.select_for_update().filter(username=key).first()
        was_locked = row is not None and row.locked_until is not None and row.locked_until > now
        if row is not None:
            row.delete()
        audit_record(
            event=AuditEvent.METHOD_CALL,
            success=True,
            username=actor,
            address=address,
            event_data={"method": "auth.unlock_user", "username": username, "was_locked": was_locked},
        )
    return was_locked


# --- Rate limits -----------------------------------------------------------------------------------

#: The name every login entrance counts under (F4): one limit per client address.
LOGIN = "login"
#: The name failed per-request credentials count under (F9).
FAILED_CREDENTIALS = "failed-credentials"
#: Seconds a failed credential's bookkeeping waits for a database lock before it is skipped.
FAILURE_LOCK_WAIT = 1.0


def api_key_lockout_name(key_id: int | str) -> str:
    """The lockout counter of API key ``key_id`` (F7); no account name contains ``:``."""
    return f"api_key:{key_id}"


def hit_login_limit(*, address: str, now: datetime | None = None) -> int | None:
    """Count one login attempt from ``address`` at any login entrance (`hit_rate_limit`'s answer)."""
    return hit_rate_limit(method=LOGIN, address=address, now=now)


def hit_rate_limit(*, method: str, address: str, now: datetime | None = None) -> int | None:
    """Count one unauthenticated call of ``method`` from ``address``.

    Returns None when the call is allowed, or the ``Retry-After`` seconds (>= 1) until the window of
    the pair ends when it is over ``SESSIONS_LOGIN_RATE``; refused calls are not counted. Atomic
    like `record_failure`. The key is the JSON pair, so no (method, address) can spell another's.
    """
    limit = int(conf.get("SESSIONS_LOGIN_RATE") or 0)
    if limit <= 0:
        return None
    now = now or timezone.now()
    window = timedelta(seconds=_seconds_setting("SESSIONS_LOGIN_RATE_WINDOW", minimum=1))
    key = _bounded_key(json.dumps([method, address], ensure_ascii=False), _RATE_KEY_MAX)
    with transaction.atomic():
        row, _ = RateCounter.objects.select_for_update().get_or_create(
            key=key, defaults={"window_start": now, "count": 0}
        )
        if now >= row.window_start + window:
            row.window_start, row.count = now, 0
        if row.count >= limit:
            return _retry_after(row.window_start, window, now)
        row.count += 1
        row.save(update_fields=["window_start", "count"])
    return None


def record_request_failure(
    *,
    address: str,
    origin: str,
    mechanism: str,
    username: str | None,
    reason: str,
    data: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> int | None:
    """Count one failed per-request credential from ``address`` (``Client.rate_key``) and audit it.

    The first failure of a window writes an ``AUTHENTICATION`` record (``origin`` as its address)
    as the window starts; later ones in the window raise its ``event_data.count`` --
    in the transaction that counts them, under the counter's row lock. Returns None while the address
    is within ``SESSIONS_LOGIN_RATE`` failures in the window, else the ``Retry-After`` seconds (>= 1):
    the caller then answers 429 instead of serving the request as anonymous. Every failure is
    counted, refused or not, so the record's count is the number of failed requests.
    """
    limit = int(conf.get("SESSIONS_LOGIN_RATE") or 0)
    now = now or timezone.now()
    window = timedelta(seconds=_seconds_setting("SESSIONS_LOGIN_RATE_WINDOW", minimum=1))
    key = _bounded_key(json.dumps([FAILED_CREDENTIALS, address], ensure_ascii=False), _RATE_KEY_MAX)
    try:
        return atomic_or_give_up(
            lambda: _count_request_failure(
                key, address, origin, mechanism, username, reason, data, limit, now, window
            ),
            within=FAILURE_LOCK_WAIT,
        )
    except OperationalError:
        # The database is write-locked past FAILURE_LOCK_WAIT (a long writer): the credential is
        # refused all the same; only its bookkeeping is skipped, rather than holding the request.
        logger.warning("failed %s from %s not counted: the database is busy", mechanism, origin)
        return None


def _count_request_failure(
    key: str,
    address: str,
    origin: str,
    mechanism: str,
    username: str | None,
    reason: str,
    data: dict[str, Any] | None,
    limit: int,
    now: datetime,
    window: timedelta,
) -> int | None:
    row, created = RateCounter.objects.select_for_update().get_or_create(
        key=key, defaults={"window_start": now, "count": 0}
    )
    if created or now >= row.window_start + window or row.count == 0:
        row.window_start, row.count = now, 1
        audit_record(
            event=AuditEvent.AUTHENTICATION,
            success=False,
            username=(username or "")[:150] or None,
            address=origin,
            event_data={
                "mechanism": mechanism,
                "per_request": True,
                "error": reason,
                **(data or {}),
                "failures_from": address,
                "count": 1,
            },
        )
    else:
        row.count += 1
        record = (
            # The window's record: written at its first failure, so at or after the window's start.
            AuditRecord.objects.filter(
                event=AuditEvent.AUTHENTICATION,
                timestamp__gte=row.window_start,
                event_data__failures_from=address,
            )
            .only("pk", "event_data")
            .order_by("-pk")
            .first()
        )
        if record is not None:  # None only if an operator deleted it mid-window
            AuditRecord.objects.filter(pk=record.pk).update(
                event_data={**record.event_data, "count": row.count}
            )
    row.save(update_fields=["window_start", "count"])
    if limit <= 0 or row.count <= limit:
        return None
    return _retry_after(row.window_start, window, now)


def _retry_after(window_start: datetime, window: timedelta, now: datetime) -> int:
    """Seconds until the window that started at ``window_start`` ends: at least 1, at most the window
    (clamped: ``now`` was read before the row lock, so it can be a little older than window_start)."""
    remaining = math.ceil((window_start + window - now).total_seconds())
    return min(max(1, remaining), math.ceil(window.total_seconds()))


# --- Housekeeping ---------------------------------------------------------------------------------


def purge_counters(*, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete counters idle for longer than ``older_than``; returns how many rows went.

    Never deletes an active lock, a failure count still inside the observation window or a rate
    window still running, whatever ``older_than`` says. A deleted lockout row forgets its lock level.
    """
    now = now or timezone.now()
    lock_window = timedelta(seconds=_seconds_setting("SESSIONS_LOCKOUT_WINDOW", minimum=1))
    rate_window = timedelta(seconds=_seconds_setting("SESSIONS_LOGIN_RATE_WINDOW", minimum=1))
    locks, _ = (
        AccountLockout.objects.filter(
            Q(last_failure_at__isnull=True) | Q(last_failure_at__lt=now - max(older_than, lock_window))
        )
        .exclude(locked_until__gt=now)
        .delete()
    )
    rates, _ = RateCounter.objects.filter(window_start__lt=now - max(older_than, rate_window)).delete()
    return locks + rates
