"""Session lifetime policy (security.md "Timeouts"), read from settings at call time.

LEVEL_1 (default): 30 days absolute, no idle limit. LEVEL_2: 12 hours absolute, 30 minutes idle
(NIST 800-63B AAL2). ``SESSIONS_MAX_AGE`` / ``SESSIONS_IDLE_TIMEOUT`` (seconds) can only shorten them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from sessions_app import conf

LEVELS = {
    "LEVEL_1": (dt.timedelta(days=30), None),
    "LEVEL_2": (dt.timedelta(hours=12), dt.timedelta(minutes=30)),
}


@dataclass(frozen=True, slots=True)
class Lifetime:
    max_age: dt.timedelta
    idle: dt.timedelta | None


def assurance_level() -> str:
    level = conf.get("SESSIONS_ASSURANCE_LEVEL")
    if level not in LEVELS:
        raise ImproperlyConfigured(f"SESSIONS_ASSURANCE_LEVEL must be one of {sorted(LEVELS)}, got {level!r}")
    return str(level)


def lifetime() -> Lifetime:
    max_age, idle = LEVELS[assurance_level()]
    override = conf.get("SESSIONS_MAX_AGE")
    if override:
        max_age = min(max_age, dt.timedelta(seconds=float(override)))
    idle_override = conf.get("SESSIONS_IDLE_TIMEOUT")
    if idle_override:
        limit = dt.timedelta(seconds=float(idle_override))
        idle = limit if idle is None else min(idle, limit)
    return Lifetime(max_age, idle)


def last_seen_interval(idle: dt.timedelta | None) -> dt.timedelta:
    """How stale ``last_seen_at`` may get before a request writes it (coalescing, D6).

    At most a tenth of the idle limit, so idle expiry stays accurate to 10 %; 60 s without one.
    """
    base = dt.timedelta(seconds=float(conf.get("SESSIONS_LAST_SEEN_INTERVAL")))
    return min(base, idle / 10) if idle is not None else base
