"""Account changes that end sessions: one-time passwords, password changes, disabling, deleting."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from sessions_app import keys
from sessions_app.audit import audit_record
from sessions_app.models import AuditEvent, EndReason, OneTimePassword, UserSession
from sessions_app.services.sessions import session_rotate, sessions_end_for_user

ONETIME_PASSWORD_LIFETIME = dt.timedelta(hours=24)


def onetime_password_issue(*, user: Any, actor: str | None, address: str = "") -> str:
    """Issue a one-time password for ``user`` (24 characters, 24 h, single use); returns it once."""
    password = keys.new_onetime_password()
    with transaction.atomic():
        OneTimePassword.objects.create(
            user=user,
            password_hash=keys.hash_secret(password),
            expires_at=timezone.now() + ONETIME_PASSWORD_LIFETIME,
            issued_by=actor or "",
        )
        audit_record(
            event=AuditEvent.METHOD_CALL,
            success=True,
            username=actor,
            address=address,
            event_data={"method": "auth.generate_onetime_password", "target_username": user.get_username()},
        )
    return password


def user_set_password(
    *, user: Any, password: str, keep: UserSession | None = None, actor: str | None = None
) -> str | None:
    """Change ``user``'s password and end their other sessions (A21/A22).

    With ``keep`` (the session that asked for the change), that session survives with a new id and
    a new secret, which is returned; every other session, token and derived session ends.
    """
    with transaction.atomic():
        user.set_password(password)
        user._sessions_keep = keep  # read by the post_save receiver (signals.py)
        user.save(update_fields=["password"])
        secret = None
        if keep is not None:
            UserSession.objects.filter(pk=keep.pk).update(password_change_required=False)
            keep.user = user
            secret = session_rotate(session=keep)
        audit_record(
            event=AuditEvent.METHOD_CALL,
            success=True,
            username=actor or user.get_username(),
            event_data={"method": "user.set_password", "target_username": user.get_username()},
        )
    return secret


def user_sessions_end(*, user: Any, reason: str = EndReason.USER_DISABLED, actor: str | None = None) -> int:
    return sessions_end_for_user(user=user, reason=reason, actor=actor)
