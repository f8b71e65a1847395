"""``auth.login_ex_continue`` with ``OTP_TOKEN``: the TOTP second factor of a password login.

The code is checked against the pending login's user, never one named in the call, with the device
rows locked (`totp_code_matches`); a reused code is told apart in the audit record only. Too many
wrong codes drop the pending login (``SESSIONS_OTP_MAX_FAILURES``).
"""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app import conf
from sessions_app.auth import keys, throttle
from sessions_app.auth.clients import Client
from sessions_app.auth.fieldcrypt import FieldKeyError
from sessions_app.exceptions import InvalidParams
from sessions_app.models import Credentials, PendingLogin, UserSession
from sessions_app.services.login import _PARAMS, _validate
from sessions_app.services.login_results import LoginResult, fail, open_session, success


def login_ex_continue(
    *, params: Any, client: Client, pending_secret: str | None, replaces: UserSession | None = None
) -> LoginResult:
    """``auth.login_ex_continue`` with ``OTP_TOKEN``: the pending login's user, never one named here."""
    if not isinstance(params, dict) or params.get("mechanism") != "OTP_TOKEN":
        raise InvalidParams.one("login_data.mechanism", "must be OTP_TOKEN")
    params = _validate(params, _PARAMS["OTP_TOKEN"])
    code = params["otp_token"]
    if not (code.isascii() and code.isdigit() and 6 <= len(code) <= 8):
        # A shape error, not a guess: answered like any invalid parameter (E4), before any lookup.
        raise InvalidParams.one("login_data.otp_token", "a code of 6 to 8 digits is required")
    now = timezone.now()
    pending = None
    if pending_secret:
        pending = (
            PendingLogin.objects.select_related("user")
            .filter(secret_hash=keys.hash_secret(pending_secret), expires_at__gt=now)
            .first()
        )
    if pending is None:
        return fail(
            client=client, mechanism="OTP_TOKEN", username=None, reason="no pending login", count=False
        )
    user = pending.user
    username = user.get_username()
    if throttle.locked_until(username=username) is not None:
        return fail(client=client, mechanism="OTP_TOKEN", username=username, reason="locked", count=False)
    code = params["otp_token"]
    if not user.is_active:
        return _otp_failed(pending, client, "inactive user")
    with transaction.atomic():
        verified = totp_code_matches(user=user, code=code)
        if verified is not None and not PendingLogin.objects.filter(pk=pending.pk).delete()[0]:
            verified = None  # the pending login was used by a concurrent request
    if verified is None:
        devices = TOTPDevice.objects.filter(user=user, confirmed=True)
        reused = any(_matches_ignoring_replay(d, code) for d in devices)
        return _otp_failed(pending, client, "reused code" if reused else "wrong code")
    new = open_session(
        credentials=Credentials.LOGIN_TWOFACTOR,
        client=client,
        user=user,
        replaces=replaces,
        audit_data={"mechanism": "OTP_TOKEN", "device": verified.persistent_id},
    )
    return success(user, new, params.get("login_options", {}))


def totp_code_matches(*, user: Any, code: str) -> TOTPDevice | None:
    """The confirmed device of ``user`` that accepts ``code`` now, or None (run inside a transaction).

    The device rows are locked while verifying: concurrent checks of one code are serialised, so it
    is accepted once and every failure is counted (stock django-otp verification is not race-safe).
    A device whose seed no configured field key opens accepts nothing (`auth.totp_seeds`).
    """
    if not (code.isascii() and code.isdigit() and 6 <= len(code) <= 8):
        return None
    for device in TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).order_by("pk"):
        allowed, _ = device.verify_is_allowed()
        if allowed and device.verify_token(code):
            return device
    return None


def _matches_ignoring_replay(device: TOTPDevice, code: str) -> bool:
    """Whether ``code`` is a currently valid code that was refused only because it was used (A12)."""
    try:
        seed = device.bin_key
    except FieldKeyError:
        return False  # logged by the failed verification
    totp = TOTP(seed, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    return bool(totp.verify(int(code), device.tolerance)) if code.isdigit() else False


def _otp_failed(pending: PendingLogin, client: Client, reason: str) -> LoginResult:
    limit = int(conf.get("SESSIONS_OTP_MAX_FAILURES"))
    with transaction.atomic():
        PendingLogin.objects.filter(pk=pending.pk).update(failures=F("failures") + 1)
        dropped = PendingLogin.objects.filter(pk=pending.pk, failures__gte=limit).delete()[0] > 0
    result = fail(
        client=client,
        mechanism="OTP_TOKEN",
        username=pending.user.get_username(),
        reason=reason,
        extra={"pending_dropped": dropped},
    )
    result.pending_cleared = dropped
    return result
