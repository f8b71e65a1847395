"""Second factor: enrol, confirm and disable a TOTP device (django-otp ``TOTPDevice``).

Enrolment is two steps, as authenticator apps expect: `totp_device_start` creates an *unconfirmed*
device (its secret is shown once, as a QR code and in base32), and `totp_device_confirm` confirms it
with a code the app computed from that secret. Only confirmed devices count at sign-in
(`services.login.has_totp`). Disabling needs the account password again (`totp_device_disable`):
a wrong one counts towards the account lockout like any failed login; removing a confirmed device
ends the user's sessions (`sessions_app.signals`), so the caller signs in again.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app import throttle
from sessions_app.audit import audit_record
from sessions_app.clients import Client
from sessions_app.models import AuditEvent
from sessions_app.services.login import check_password


def _audit(method: str, user: Any, client: Client, success: bool = True, **data: Any) -> None:
    audit_record(
        event=AuditEvent.METHOD_CALL,
        success=success,
        username=user.get_username(),
        address=client.origin,
        event_data={"method": method, **data},
    )


def totp_device_start(*, user: Any, client: Client) -> TOTPDevice:
    """A new unconfirmed device for ``user`` (any earlier unconfirmed one is replaced)."""
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
        _audit("two_factor.start", user, client)
    return device


def totp_device_confirm(*, device: TOTPDevice, code: str, client: Client) -> bool:
    """Confirm an unconfirmed ``device`` with a current code; False (audited) when the code is wrong."""
    with transaction.atomic():
        locked = TOTPDevice.objects.select_for_update().filter(pk=device.pk, confirmed=False).first()
        allowed = locked is not None and locked.verify_is_allowed()[0]
        if locked is None or not allowed or not locked.verify_token(code):
            _audit("two_factor.confirm", device.user, client, success=False)
            return False
        locked.confirmed = True
        locked.save(update_fields=["confirmed"])
        _audit("two_factor.confirm", device.user, client)
    device.confirmed = True
    return True


def totp_device_disable(*, user: Any, password: str, client: Client) -> bool:
    """Remove ``user``'s TOTP devices after checking ``password``; False when it is wrong or the
    account is locked (the failure is counted and audited, and delayed like a failed login)."""
    username = user.get_username()
    if throttle.locked_until(username=username) is not None or not check_password(user, password):
        with transaction.atomic():
            _audit("two_factor.disable", user, client, success=False, error="password not confirmed")
        throttle.record_failure(username=username, address=client.origin, mechanism="PASSWORD_PLAIN")
        throttle.sleep_after_failure()
        return False
    with transaction.atomic():
        _audit("two_factor.disable", user, client)
        for device in TOTPDevice.objects.filter(user=user):
            device.delete()  # per row, so that the post_delete cascade ends the user's sessions
    return True
