"""App settings, read at call time so that ``override_settings`` works (never bound at import)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "SESSIONS_ASSURANCE_LEVEL": "LEVEL_1",
    "SESSIONS_MAX_PER_USER": 100,
    "SESSIONS_HISTORY_DAYS": 90,
    "SESSIONS_TRUSTED_PROXIES": [],
    "SESSIONS_NODE_SECRET": "",
    "SESSIONS_FAIL_DELAY": "",
    "SESSIONS_LOGIN_RATE": 20,
}


def get(name: str) -> Any:
    """The value of app setting ``name`` (project settings first, then `DEFAULTS`)."""
    return getattr(settings, name, DEFAULTS[name])
