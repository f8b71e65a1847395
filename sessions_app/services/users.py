"""Account changes that end sessions: one-time passwords, password changes, disabling, deleting."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from sessions_app.audit import audit_record
from sessions_app.auth import keys
from sessions_app.auth.clients import Client
from sessions_app.exceptions import InvalidParams
from sessions_app.models import AuditEvent, EndReason, OneTimePassword, UserSession
from sessions_app.services.session_ending import sessions_end_for_user
from sessions_app.services.sessions import session_rotate
from sessions_app.services.stepup import password_confirm

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
    *, user: Any, password: str, keep: UserSession | None = None, actor: str | None = None, address: str = ""
) -> str | None:
    """Change ``user``'s password and end their other sessions (A21/A22).

    With ``keep`` (the session that asked for the change), that session survives with a new id and
    a new secret, which is returned; every other session, token and derived session ends. A pending
    `PasswordChangeDemand` (a denied new sign-in) is met: the ``post_save`` receiver drops it, as it
    does for a change made anywhere else (the admin, ``changepassword``).
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
            address=address,
            event_data={"method": "user.set_password", "target_username": user.get_username()},
        )
    return secret


def user_change_password(
    *,
    user: Any,
    session: UserSession | None,
    client: Client,
    current_password: Any,
    new_password: str,
    new_password_again: str | None = None,
    purpose: str,
) -> str | None:
    """Change one's own password: the current one first, checked as a login (security.md F1), then
    the confirmation of the new one (pages ask twice), Django's validators on it, then
    `user_set_password`.

    A session that must set a password (one-time password) is not asked for the current one. Errors
    are `InvalidParams` on ``current_password`` or ``new_password``; the answer to a wrong current
    password is always the same, whatever the new one is. Returns the kept session's new secret.
    """
    forced = session is not None and session.password_change_required
    if not forced and not password_confirm(
        user=user, password=current_password, client=client, session=session, purpose=purpose
    ):
        raise InvalidParams.one("current_password", "the current password is not correct")
    if new_password_again is not None and new_password_again != new_password:
        raise InvalidParams.one("new_password_again", "the two new passwords differ")
    try:
        validate_password(new_password, user)
    except ValidationError as exc:
        raise InvalidParams([("new_password", message) for message in exc.messages]) from None
    return user_set_password(
        user=user, password=new_password, keep=session, actor=user.get_username(), address=client.origin
    )


def user_sessions_end(*, user: Any, reason: str = EndReason.USER_DISABLED, actor: str | None = None) -> int:
    return sessions_end_for_user(user=user, reason=reason, actor=actor)
