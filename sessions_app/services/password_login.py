"""``auth.login_ex`` with ``PASSWORD_PLAIN``: a password, a one-time password, or the first step of
a TOTP login.

A user with a confirmed TOTP device gets ``OTP_REQUIRED`` and a pending login (`PendingLogin`,
`PENDING_LIFETIME`) that ``auth.login_ex_continue`` completes (`totp_login`). A one-time password
(set by an administrator) opens a session that must change its password.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.utils import timezone

from sessions_app import conf
from sessions_app.auth import keys, policy, throttle
from sessions_app.auth.clients import Client
from sessions_app.models import Credentials, OneTimePassword, PendingLogin, UserSession
from sessions_app.selectors import user_get_by_username
from sessions_app.services.login_results import LoginResult, fail, has_totp, open_session, success

PENDING_LIFETIME = dt.timedelta(minutes=5)
_DUMMY_PASSWORD = "sessions-app-timing-equaliser"


def check_password(user: Any, password: str) -> bool:
    """Verify a password with the same cost whether or not the account exists or is usable.

    Hashes are upgraded on success (Django re-hashes with the first hasher in PASSWORD_HASHERS).
    """
    if len(password) > int(conf.get("SESSIONS_MAX_PASSWORD_LENGTH")):
        return False  # refused before any hashing
    if user is None or not user.has_usable_password():
        make_password(password)  # same work as a real check (A2)
        return False
    return bool(user.check_password(password))


def _onetime_password(user: Any, password: str, now: dt.datetime) -> OneTimePassword | None:
    if user is None or len(password) != keys.ONETIME_PASSWORD_LENGTH:
        return None
    return OneTimePassword.objects.filter(
        user=user, password_hash=keys.hash_secret(password), used_at__isnull=True, expires_at__gt=now
    ).first()


def _password_login(
    username: str, password: str, client: Client, options: dict[str, Any], replaces: UserSession | None
) -> LoginResult:
    now = timezone.now()
    user = user_get_by_username(username=username)
    locked = throttle.locked_until(username=username[:150]) if username else None
    password_ok = check_password(user, password)
    if locked is not None:
        return fail(
            client=client, mechanism="PASSWORD_PLAIN", username=username, reason="locked", count=False
        )
    if user is None or not user.is_active:
        reason = "unknown user" if user is None else "inactive user"
        return fail(client=client, mechanism="PASSWORD_PLAIN", username=username, reason=reason)
    if not password_ok:
        otpw = _onetime_password(user, password, now)
        new = None
        if otpw is not None:
            # Used up in the transaction that opens the session and writes its audit record (D10).
            with transaction.atomic():
                if OneTimePassword.objects.filter(pk=otpw.pk, used_at__isnull=True).update(used_at=now):
                    new = open_session(
                        credentials=Credentials.LOGIN_ONETIME_PASSWORD,
                        client=client,
                        user=user,
                        replaces=replaces,
                        password_change_required=True,
                        audit_data={"mechanism": "PASSWORD_PLAIN", "onetime_password": True},
                    )
        if new is not None:
            result = success(user, new, options)
            if result.response["user_info"] is not None:
                # Flag the one-time-password session to the client, as TrueNAS does (A20).
                result.response["user_info"]["account_attributes"].append("OTPW")
            result.extra["password_change_required"] = True
            return result
        return fail(client=client, mechanism="PASSWORD_PLAIN", username=username, reason="wrong password")
    if has_totp(user):
        secret = keys.new_token()
        PendingLogin.objects.create(
            secret_hash=keys.hash_secret(secret),
            user=user,
            origin=client.origin,
            expires_at=now + PENDING_LIFETIME,
        )
        return LoginResult(
            {"response_type": "OTP_REQUIRED", "username": user.get_username()}, pending_secret=secret
        )
    if policy.assurance_level() != "LEVEL_1":
        return fail(
            client=client,
            mechanism="PASSWORD_PLAIN",
            username=username,
            reason="second factor required",
            count=False,
        )
    new = open_session(
        credentials=Credentials.LOGIN_PASSWORD,
        client=client,
        user=user,
        replaces=replaces,
        audit_data={"mechanism": "PASSWORD_PLAIN"},
    )
    return success(user, new, options)
