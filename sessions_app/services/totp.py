"""Second factor: enrol, confirm and disable a TOTP device (django-otp ``TOTPDevice``).

Enrolment is two steps, as authenticator apps expect: `totp_device_start` creates an *unconfirmed*
device (its secret is shown once, as a QR code and in base32), and `totp_device_confirm` confirms it
with a code the app computed from that secret. Only confirmed devices count at sign-in
(`services.login_results.has_totp`). Disabling needs the account password and a current code again
(`totp_device_disable`): a wrong one counts towards the account lockout like any failed login;
removing a confirmed device ends the user's sessions (`sessions_app.signals`), so the caller signs
in again.

Step-up (security.md F2, `services.stepup`): every change is refused with `NotAuthorized` unless
the session started with the password, and starting or confirming an enrolment also needs the
password proven within the step-up window. The interfaces check first, to show a page instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.audit import audit_record
from sessions_app.auth.clients import Client
from sessions_app.exceptions import NotAuthorized
from sessions_app.models import AuditEvent, UserSession
from sessions_app.services import stepup


def _audit(method: str, user: Any, client: Client, success: bool = True, **data: Any) -> None:
    audit_record(
        event=AuditEvent.METHOD_CALL,
        success=success,
        username=user.get_username(),
        address=client.origin,
        event_data={"method": method, **data},
    )


def _require_stepup(
    *, user: Any, session: UserSession | None, client: Client, method: str, recent: bool = True
) -> None:
    """Refuse (audited, `NotAuthorized`) unless ``session`` started with the password and, with
    ``recent``, proved it within the step-up window."""
    if stepup.second_factor_change_allowed(session=session) and (
        not recent or stepup.stepup_recent(session=session)
    ):
        return
    with transaction.atomic():
        _audit(method, user, client, success=False, error="step-up required")
    raise NotAuthorized("the password must be entered again in a session that signed in with it")


def totp_device_start(*, user: Any, session: UserSession | None, client: Client) -> TOTPDevice:
    """A new unconfirmed device for ``user`` (any earlier unconfirmed one is replaced)."""
    _require_stepup(user=user, session=session, client=client, method="two_factor.start")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
        _audit("two_factor.start", user, client)
    return device


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    """What `totp_device_confirm` did. ``retry_after`` (seconds) is set when the code was not even
    checked because django-otp's throttle holds the device after a wrong code (each failure doubles
    the wait): the page says "wait", not "check the time on your device" (issue 17)."""

    confirmed: bool
    retry_after: float | None = None

    def __bool__(self) -> bool:
        return self.confirmed


def _throttle_wait(device: TOTPDevice, now: dt.datetime) -> float | None:
    allowed, why = device.verify_is_allowed()
    if allowed:
        return None
    until = (why or {}).get("locked_until")
    return max((until - now).total_seconds(), 1.0) if until is not None else 1.0


def totp_device_confirm(
    *, device: TOTPDevice, session: UserSession | None, code: str, client: Client
) -> ConfirmResult:
    """Confirm an unconfirmed ``device`` with a current code; not confirmed (audited) when the code is
    wrong or the device is throttled after a wrong one (then with how long to wait)."""
    _require_stepup(user=device.user, session=session, client=client, method="two_factor.confirm")
    with transaction.atomic():
        locked = TOTPDevice.objects.select_for_update().filter(pk=device.pk, confirmed=False).first()
        wait = _throttle_wait(locked, timezone.now()) if locked is not None else None
        if locked is None or wait is not None or not locked.verify_token(code):
            extra = {"throttled": True} if wait is not None else {}
            _audit("two_factor.confirm", device.user, client, success=False, **extra)
            return ConfirmResult(False, retry_after=wait)
        locked.confirmed = True
        locked.save(update_fields=["confirmed"])
        _audit("two_factor.confirm", device.user, client)
    device.confirmed = True
    return ConfirmResult(True)


def totp_device_disable(
    *, user: Any, session: UserSession | None, password: str, otp_token: str, client: Client
) -> bool:
    """Remove ``user``'s TOTP devices after the step-up (password and a current code); False when
    either is wrong or the account is locked (counted, audited and delayed like a failed login)."""
    _require_stepup(user=user, session=session, client=client, method="two_factor.disable", recent=False)
    if not stepup.stepup_verify(
        user=user,
        session=session,
        client=client,
        password=password,
        otp_token=otp_token,
        purpose="two_factor.disable",
    ):
        with transaction.atomic():
            _audit("two_factor.disable", user, client, success=False, error="step-up failed")
        return False
    with transaction.atomic():
        _audit("two_factor.disable", user, client)
        for device in TOTPDevice.objects.filter(user=user):
            device.delete()  # per row, so that the post_delete cascade ends the user's sessions
    return True


def totp_devices_reset(*, devices: list[TOTPDevice], actor: str, client: Client) -> int:
    """An administrator removes second-factor devices of other users (the admin's delete): one
    ``two_factor.reset`` audit record per device, by ``actor``, in the transaction of the removal;
    removing a confirmed device ends its user's sessions (`sessions_app.signals`)."""
    with transaction.atomic():
        for device in devices:
            target = device.user.get_username() if device.user_id is not None else None
            audit_record(
                event=AuditEvent.METHOD_CALL,
                success=True,
                username=actor,
                address=client.origin,
                event_data={"method": "two_factor.reset", "target_username": target, "device": device.pk},
            )
            device.delete()
    return len(devices)
