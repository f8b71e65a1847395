"""Re-authentication ("sudo mode", security.md F1/F2): proving the password again before a change
that would let one credential become the account.

Policy
    * **A check of the current password is a login** (F1). `password_confirm` — used by
      ``auth.set_password``, the password page and every step-up (`stepup_verify`) —
      answers exactly like a password login: while the account is locked even the right password is
      refused; a wrong one counts towards the same account lockout (`throttle.record_failure`), is
      audited (method, address, session) and waits the failed-login delay. A right one resets the
      counter, as a successful login does. Callers check the current password *before* any other
      field, so the answer to a wrong one never depends on whether the new password would be valid.
    * **Step-up before account-security changes** (F2). Enrolling, replacing or turning off the
      second factor, and creating an API key from the browser, need the password (and a current code
      of the second factor, when one is on) entered within the last ``SESSIONS_STEPUP_WINDOW``
      seconds (300) in this session: `stepup_verify` records the moment on the session
      (``reauthenticated_at``); a password login of the session itself counts from its creation.
      The window is per session, so another browser's re-authentication does not open this one.
    * **Only password sessions change the second factor.** Sessions that did not start with the
      password (API key, token, one-time password, unix socket, node) cannot enrol, replace or turn
      off a second factor at all (`second_factor_change_allowed`), re-authenticated or not: holding a
      key must never be enough to lock the owner out with a seed they do not have.

A refused step-up changes nothing but the lockout counter and writes its audit record.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from sessions_app import conf
from sessions_app.audit import audit_record
from sessions_app.auth import throttle
from sessions_app.auth.clients import Client
from sessions_app.models import AuditEvent, Credentials, UserSession
from sessions_app.services.login_results import has_totp
from sessions_app.services.password_login import check_password
from sessions_app.services.totp_login import totp_code_matches

#: Sessions opened by entering the password: the only ones that may change the second factor.
PASSWORD_CREDENTIALS = frozenset({Credentials.LOGIN_PASSWORD, Credentials.LOGIN_TWOFACTOR})


def stepup_window() -> dt.timedelta:
    return dt.timedelta(seconds=int(conf.get("SESSIONS_STEPUP_WINDOW")))


def second_factor_change_allowed(*, session: UserSession | None) -> bool:
    """Whether ``session`` may enrol, replace or turn off a second factor (F2)."""
    return session is not None and session.credentials in PASSWORD_CREDENTIALS


def stepup_recent(*, session: UserSession | None, now: dt.datetime | None = None) -> bool:
    """Whether the password was proven in ``session`` within the step-up window: by its own password
    login or by `stepup_verify`."""
    if session is None:
        return False
    now = now or timezone.now()
    moments = [session.reauthenticated_at]
    if session.credentials in PASSWORD_CREDENTIALS:
        moments.append(session.created_at)
    latest = max((m for m in moments if m is not None), default=None)
    return latest is not None and now - latest <= stepup_window()


def _audit(
    *,
    user: Any,
    client: Client,
    session: UserSession | None,
    purpose: str,
    mechanism: str,
    error: str | None = None,
) -> None:
    """The step-up's audit record: refused with ``error``, or successful (call inside the change's
    transaction)."""
    data = {"mechanism": mechanism, "method": purpose, "step_up": True, **({"error": error} if error else {})}
    audit_record(
        event=AuditEvent.AUTHENTICATION,
        success=error is None,
        username=user.get_username(),
        address=client.origin,
        session=session.public_id if session is not None else None,
        event_data=data,
    )


def _refuse(
    *, user: Any, client: Client, mechanism: str, reason: str, count: bool = True, **where: Any
) -> None:
    """Audit a refused check, count it towards the account lockout (``count``: not while the account
    is locked already) and wait the failed-login delay."""
    with transaction.atomic():
        _audit(user=user, client=client, mechanism=mechanism, error=reason, **where)
    if count:
        throttle.record_failure(username=user.get_username(), address=client.origin, mechanism=mechanism)
    throttle.sleep_after_failure()


def password_confirm(
    *, user: Any, password: Any, client: Client, session: UserSession | None, purpose: str
) -> bool:
    """Check ``user``'s current password as a login would (F1); see the module docstring.

    ``purpose`` names what asked (``auth.set_password``, ``web.password_change`` …) in the audit
    record. Returns False, after the failure delay, for a wrong password or a locked account.
    """
    username = user.get_username()
    locked = throttle.locked_until(username=username) is not None
    ok = check_password(user, password if isinstance(password, str) else "")  # the same work either way
    if locked or not ok:
        reason = "locked" if locked else "wrong password"
        _refuse(
            user=user,
            client=client,
            session=session,
            purpose=purpose,
            mechanism="PASSWORD_PLAIN",
            reason=reason,
            count=not locked,
        )
        return False
    throttle.record_success(username=username)
    return True


def stepup_verify(
    *,
    user: Any,
    session: UserSession | None,
    client: Client,
    password: Any,
    otp_token: Any = None,
    purpose: str,
) -> bool:
    """Re-authenticate: the password and, when the account has a second factor, a current code.

    On success the session (if any) is marked re-authenticated now, with an audit record, in one
    transaction. A wrong password or code counts towards the account lockout, is audited and waits
    the failed-login delay; nothing else changes.
    """
    if not password_confirm(user=user, password=password, client=client, session=session, purpose=purpose):
        return False
    now = timezone.now()
    with transaction.atomic():
        code = otp_token if isinstance(otp_token, str) else ""
        verified = not has_totp(user) or totp_code_matches(user=user, code=code) is not None
        if verified:
            if session is not None:
                UserSession.objects.filter(pk=session.pk).update(reauthenticated_at=now)
                session.reauthenticated_at = now
            _audit(user=user, client=client, session=session, purpose=purpose, mechanism="PASSWORD_PLAIN")
    if not verified:
        _refuse(
            user=user,
            client=client,
            session=session,
            purpose=purpose,
            mechanism="OTP_TOKEN",
            reason="wrong code",
        )
    return verified
