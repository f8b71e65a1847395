"""What every ``auth.login_ex`` pathway shares: the answer it gives and the session it opens.

Answers are TrueNAS's: ``SUCCESS`` (with ``user_info`` and ``authenticator``), ``OTP_REQUIRED``
(with ``username``), ``AUTH_ERR``, ``EXPIRED``. A wrong password, an unknown user, an inactive or
locked account and an unusable password all get the same ``AUTH_ERR`` after the same work (a
password hash is computed in every case) and the same failure delay; the audit record says which.
A pathway ends in `success` (after `open_session`, where every login is remembered and noticed) or
in `fail` (audited, counted toward the lockout, delayed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.audit import audit_record
from sessions_app.auth import policy, throttle
from sessions_app.auth.clients import Client
from sessions_app.models import AuditEvent, Credentials, EndReason, UserSession
from sessions_app.services.notices import sign_in_noticed
from sessions_app.services.session_ending import session_end
from sessions_app.services.sessions import NewSession, session_create


@dataclass
class LoginResult:
    """The ``login_ex`` answer plus what the interface must hand to the client."""

    response: dict[str, Any]
    new_session: NewSession | None = None
    #: OTP_REQUIRED: the secret the client presents to ``login_ex_continue`` (cookie / connection).
    pending_secret: str | None = None
    #: The pending second factor that this call discarded (the client should drop its secret).
    pending_cleared: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """A session was opened (``SUCCESS``, or SCRAM's ``SERVER_FINAL_RESPONSE``)."""
        return self.new_session is not None


AUTH_ERR = {"response_type": "AUTH_ERR"}
EXPIRED = {"response_type": "EXPIRED"}


def user_info(user: Any, session: UserSession | None = None) -> dict[str, Any]:
    """A TrueNAS-like passwd entry of ``user`` (``auth.me`` / ``login_ex`` ``user_info``).

    ``account_attributes`` also says how ``session`` was opened: ``API_KEY`` for an API-key session,
    plus ``SCRAM`` when the key was proved by SCRAM, ``OTPW`` for a one-time-password session.
    """
    from sessions_app.auth.roles import user_roles

    attributes = ["LOCAL", *(["2FA"] if has_totp(user) else [])]
    if session is not None:
        if session.credentials == Credentials.API_KEY:
            attributes.append("API_KEY")
            if session.login_mechanism == "SCRAM":
                attributes.append("SCRAM")
        elif session.credentials == Credentials.LOGIN_ONETIME_PASSWORD:
            attributes.append("OTPW")
    roles = sorted(str(r) for r in user_roles(user))
    return {
        "pw_name": user.get_username(),
        "pw_gecos": user.get_full_name() if hasattr(user, "get_full_name") else "",
        "pw_dir": "/var/empty",
        "pw_shell": "/usr/sbin/nologin",
        "pw_uid": user.pk,
        "pw_gid": user.pk,
        "grouplist": [],
        "sid": None,
        "source": "LOCAL",
        "local": True,
        "attributes": {},
        "two_factor_config": {"secret_configured": has_totp(user)},
        "privilege": {"roles": {"$set": roles}, "web_shell": False},
        "account_attributes": attributes,
    }


def has_totp(user: Any) -> bool:
    return bool(TOTPDevice.objects.filter(user=user, confirmed=True).exists())  # django-otp is untyped


def open_session(
    *,
    user: Any,
    client: Client,
    replaces: UserSession | None,
    lockout_name: str | None = None,
    **kwargs: Any,
) -> NewSession:
    """Create the session of a successful login, reset its failure counter (the account's, or
    ``lockout_name``: an API key's, F7) and end the session this client had (B2) -- in one
    transaction, so that a database that stays busy past its timeout on any of these writes leaves
    none of them: no session the client never received (D5). Every login passes here, so this is
    where it is remembered and, from somewhere new, noticed (`services.notices`).
    """
    with transaction.atomic():
        new = session_create(user=user, client=client, **kwargs)
        sign_in_noticed(session=new.session, client=client, api_key=kwargs.get("api_key"))
        throttle.record_success(username=lockout_name or user.get_username())
        if replaces is not None:
            session_end(
                session=replaces, reason=EndReason.LOGOUT, actor=replaces.username, address=client.origin
            )
    return new


def success(user: Any, new_session: NewSession, login_options: dict[str, Any]) -> LoginResult:
    response: dict[str, Any] = {"response_type": "SUCCESS", "authenticator": policy.assurance_level()}
    response["user_info"] = (
        user_info(user, new_session.session) if login_options.get("user_info", True) else None
    )
    return LoginResult(response, new_session=new_session)


def fail(
    *,
    client: Client,
    mechanism: str,
    username: str | None,
    reason: str,
    count: bool = True,
    lockout_name: str | None = None,
    response: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> LoginResult:
    """Record and delay a failed attempt; the answer never says why. ``count``: toward the lockout
    counter ``lockout_name`` (an API key's, F7), else toward the account ``username``."""
    with transaction.atomic():
        audit_record(
            event=AuditEvent.AUTHENTICATION,
            success=False,
            username=(username or "")[:150] or None,
            address=client.origin,
            event_data={"mechanism": mechanism, "error": reason, **(extra or {})},
        )
    counter = lockout_name or (username or "")[:150]
    if count and counter:
        throttle.record_failure(username=counter, address=client.origin, mechanism=mechanism)
    throttle.sleep_after_failure()
    return LoginResult(dict(response or AUTH_ERR))  # a fresh dict: clients may change what they get
