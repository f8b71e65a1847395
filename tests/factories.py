"""Builders of test rows (plain functions; no factory library needed for this few models)."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django.utils import timezone

from sessions_app.models import Credentials, UserSession

FAR_FUTURE = timezone.now() + dt.timedelta(days=3650)


def session(**fields: Any) -> UserSession:
    """An unsaved `UserSession` with valid defaults for its credential type."""
    credentials = fields.setdefault("credentials", Credentials.LOGIN_PASSWORD)
    fields.setdefault("public_id", secrets.token_urlsafe(48))
    fields.setdefault("origin", "127.0.0.1:50000")
    fields.setdefault("expires_at", FAR_FUTURE)
    if credentials != Credentials.TRUENAS_NODE:
        fields.setdefault("username", "alice")
    if credentials not in (Credentials.TRUENAS_NODE, Credentials.TOKEN):
        fields.setdefault("login_at", fields.get("created_at") or timezone.now())
    username = fields.get("username")
    fields["username_folded"] = username.casefold() if isinstance(username, str) else None
    return UserSession(**fields)
