"""The audit history of the demo sessions: logins, failed attempts and session ends.

`_AuditHistory` collects what the seeder tells it about each session and writes the records the
services would have left for the last `AUDIT_WINDOW_MS`, marked ``"demo": true``.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from django.db import transaction

from sessions_app.management.demo.population import (
    CRED,
    DAY_MS,
    DEMO_PREFIX,
    EPOCH,
    HOUR_MS,
    REASON,
    ROOT_USERNAME,
)
from sessions_app.models import AuditEvent, AuditRecord, UserSession

# Audit history: the records of the last two days (the dashboard charts 24 h), at most this many
# logins and session ends (the most recent ones): about 14% of the sessions, 150,000 rows at most
# plus the failed attempts (a few % of the logins and two bursts of at most 400 each).
AUDIT_WINDOW_MS = 2 * DAY_MS
AUDIT_MAX_EVENTS = 150_000
# Failed attempts before a successful login: (share of logins, mechanism, error), by credential type.
_LOGIN_FAILURES: dict[str, tuple[float, str, str]] = {
    CRED.LOGIN_PASSWORD: (0.07, "PASSWORD_PLAIN", "wrong password"),
    CRED.LOGIN_TWOFACTOR: (0.10, "OTP_TOKEN", "wrong code"),
    CRED.LOGIN_ONETIME_PASSWORD: (0.05, "PASSWORD_PLAIN", "wrong password"),
    CRED.API_KEY: (0.01, "API_KEY_PLAIN", "invalid key"),
    CRED.TOKEN: (0.005, "TOKEN_PLAIN", "unknown or expired token"),
}
_MECHANISMS = {
    CRED.LOGIN_PASSWORD: "PASSWORD_PLAIN",
    CRED.LOGIN_TWOFACTOR: "OTP_TOKEN",
    CRED.LOGIN_ONETIME_PASSWORD: "PASSWORD_PLAIN",
    CRED.API_KEY: "API_KEY_PLAIN",
    CRED.TOKEN: "TOKEN_PLAIN",
    CRED.TRUENAS_NODE: "NODE_HMAC",
}
# Names tried by password guessers that are no account (demo-prefixed, so `demo_clear` finds them).
_GUESSED_NAMES = tuple(f"{DEMO_PREFIX}{n}" for n in ("admin", "test", "guest", "oracle", "user"))
ATTACK_NETWORK = "203.0.113."  # TEST-NET-3 (RFC 5737): the address of the demo's brute-force bursts


class _AuditHistory:
    """The audit records that the demo sessions would have left, for the last `AUDIT_WINDOW_MS`.

    `note` keeps what a record needs of every session that began or ended in the window (a tuple,
    only for those: about one in seven); `write` then builds the records as the services write
    them (``AUTHENTICATION`` for each login, ``LOGOUT`` or ``METHOD_CALL`` ``session.end`` for each
    end, as `session_end` does), adds failed attempts (a few before some logins, guessed account
    names, two brute-force bursts from TEST-NET-3) and inserts them in bulk, oldest first. Beyond
    `AUDIT_MAX_EVENTS` logins and ends, only the most recent are recorded (as if older records had
    been purged), so a million sessions add a bounded number of rows.
    """

    def __init__(self, *, rng: random.Random, now_ms: int, deterministic: bool) -> None:
        self.rng = rng
        self.now_ms = now_ms
        self.since_ms = now_ms - AUDIT_WINDOW_MS
        self.deterministic = deterministic
        # (time ms, kind, row fields...): kind 0 a login, 1 an end.
        self.events: list[tuple[Any, ...]] = []

    def note(
        self,
        row: UserSession,
        created_ms: int,
        ended_ms: int | None,
        *,
        key: tuple[int, str, Any] | None = None,
        parent: str | None = None,
    ) -> None:
        if created_ms >= self.since_ms:
            data: dict[str, Any] = {
                "credentials": row.credentials,
                "mechanism": _MECHANISMS.get(row.credentials),
            }
            if key is not None:
                data["api_key_ref"] = f"{key[0]}:{key[1]}"
            elif parent is not None:
                data["parent"] = parent
            elif row.credentials == CRED.UNIX_SOCKET:
                data = {"credentials": row.credentials, "transport": "websocket"}
            elif row.credentials == CRED.LOGIN_ONETIME_PASSWORD:
                data["onetime_password"] = True
            self.events.append((created_ms, 0, row.public_id, row.username, row.origin, data))
        if ended_ms is not None and ended_ms >= self.since_ms:
            self.events.append(
                (
                    ended_ms,
                    1,
                    row.public_id,
                    row.username,
                    row.origin,
                    row.credentials,
                    row.end_reason,
                    row.ended_by,
                )
            )

    def write(self, *, batch_size: int) -> int:
        """Insert the records (one transaction per ``batch_size``); returns how many."""
        events = self.events
        since = self.since_ms
        if len(events) > AUDIT_MAX_EVENTS:
            events.sort(key=lambda e: e[0], reverse=True)  # stable: ties keep their (seeded) order
            del events[AUDIT_MAX_EVENTS:]
            since = events[-1][0]
        records: list[AuditRecord] = []
        logins = 0
        for event in events:
            if event[1] == 0:
                logins += 1
                records.extend(self._login(*event[:1], *event[2:]))
            else:
                records.append(self._end(*event[:1], *event[2:]))
        records.extend(self._guesses(since, logins))
        records.sort(key=lambda r: r.timestamp)
        for start in range(0, len(records), batch_size):
            with transaction.atomic():
                AuditRecord.objects.bulk_create(records[start : start + batch_size])
        self.events = []
        return len(records)

    def _record(
        self,
        at_ms: int,
        event: str,
        *,
        success: bool,
        username: str | None,
        session: str | None = None,
        address: str = "",
        data: dict[str, Any],
    ) -> AuditRecord:
        audit_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4)) if self.deterministic else None
        return AuditRecord(
            **({"audit_id": audit_id} if audit_id else {}),
            timestamp=EPOCH + dt.timedelta(milliseconds=at_ms),
            event=event,
            success=success,
            username=username,
            session=session,
            address=address,
            event_data={**data, "demo": True},
        )

    def _login(
        self, at_ms: int, public_id: str, username: str | None, origin: str, data: dict[str, Any]
    ) -> list[AuditRecord]:
        """The login's record, after the failed attempts that some logins take first."""
        rng = self.rng
        records = []
        share, mechanism, error = _LOGIN_FAILURES.get(data["credentials"], (0.0, "", ""))
        if share and rng.random() < share:
            tries = 1 if rng.random() < 0.8 else rng.randint(2, 4)
            for i in range(tries, 0, -1):
                extra = {"api_key_ref": data["api_key_ref"]} if "api_key_ref" in data else {}
                records.append(
                    self._record(
                        max(self.since_ms, at_ms - i * rng.randint(4_000, 40_000)),
                        AuditEvent.AUTHENTICATION,
                        success=False,
                        username=None if mechanism == "TOKEN_PLAIN" else username,
                        address=origin,
                        data={"mechanism": mechanism, "error": error, **extra},
                    )
                )
        records.append(
            self._record(
                at_ms,
                AuditEvent.AUTHENTICATION,
                success=True,
                username=username,
                session=public_id,
                address=origin,
                data=data,
            )
        )
        return records

    def _end(
        self,
        at_ms: int,
        public_id: str,
        username: str | None,
        origin: str,
        credentials: str,
        reason: str,
        ended_by: str | None,
    ) -> AuditRecord:
        logout = reason == REASON.LOGOUT
        return self._record(
            at_ms,
            AuditEvent.LOGOUT if logout else AuditEvent.METHOD_CALL,
            success=True,
            username=ended_by or username,
            session=public_id,
            address=origin if logout else "",
            data={
                "method": "auth.logout" if logout else "session.end",
                "end_reason": reason,
                "target": public_id,
                "target_username": username,
                "credentials": credentials,
            },
        )

    def _guesses(self, since: int, logins: int) -> list[AuditRecord]:
        """Attempts on names that are no account (1 % of the logins, spread out) and two bursts from
        one address: the first within the last day (so the dashboard shows it), the other before."""
        rng = self.rng
        span = self.now_ms - since
        if span <= 0 or not logins:
            return []
        records = []
        for _ in range(max(1, logins // 100)):
            records.append(
                self._record(
                    since + rng.randrange(span),
                    AuditEvent.AUTHENTICATION,
                    success=False,
                    username=rng.choice(_GUESSED_NAMES),
                    address=f"{ATTACK_NETWORK}{rng.randrange(1, 255)}:{rng.randrange(32768, 61000)}",
                    data={"mechanism": "PASSWORD_PLAIN", "error": "unknown user"},
                )
            )
        size = min(400, max(15, logins // 40))
        for begin in (max(since, self.now_ms - DAY_MS), since):
            start = begin + rng.randrange(max(1, min(span, DAY_MS) - HOUR_MS))
            host = f"{ATTACK_NETWORK}{rng.randrange(1, 255)}"
            for i in range(size):
                name = rng.choice((ROOT_USERNAME, *_GUESSED_NAMES))
                error = "unknown user" if name != ROOT_USERNAME else ("wrong password" if i < 5 else "locked")
                records.append(
                    self._record(
                        min(self.now_ms, start + i * rng.randint(1_000, 6_000)),
                        AuditEvent.AUTHENTICATION,
                        success=False,
                        username=name,
                        address=f"{host}:{rng.randrange(32768, 61000)}",
                        data={"mechanism": "PASSWORD_PLAIN", "error": error},
                    )
                )
        return records
