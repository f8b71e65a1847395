"""Session lifecycle: create, authenticate on every request, rotate.

Every session row is checked against the database on every request (`session_authenticate`); no
process keeps a "valid" answer. A session found invalid is ended there (`session_ending`).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from sessions_app import conf, events
from sessions_app.audit import audit_record
from sessions_app.auth import keys, policy
from sessions_app.auth.clients import Client
from sessions_app.auth.prepared import RowLoader
from sessions_app.devices.agents import describe
from sessions_app.devices.places import locate
from sessions_app.models import ApiKey, AuditEvent, Credentials, EndReason, Token, UserSession
from sessions_app.services.session_ending import session_end

_USER_LOGINS = {
    Credentials.LOGIN_PASSWORD,
    Credentials.LOGIN_TWOFACTOR,
    Credentials.LOGIN_ONETIME_PASSWORD,
    Credentials.UNIX_SOCKET,
}


def user_auth_hash(user: Any) -> str:
    """Fingerprint of the user's password hash: changes whenever the password does."""
    if user is None:
        return ""
    return _fingerprint(settings.SECRET_KEY, user.password or "")


@functools.lru_cache(maxsize=4096)
def _fingerprint(secret_key: str, password_hash: str) -> str:
    # A pure function of its arguments, remembered: every authenticated request compares it.
    return salted_hmac(
        "sessions_app.user_auth_hash", password_hash, secret=secret_key, algorithm="sha256"
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class NewSession:
    """A created session and its secret (the cookie value; shown once, stored only hashed)."""

    session: UserSession
    secret: str


def _describe_client(row: UserSession, client: Client) -> None:
    """Device and place of a login that came over HTTP or a WebSocket, parsed once, here
    (`sessions_app.devices`); pages and queries read the columns."""
    device = describe(client.user_agent, websocket=client.websocket)
    row.user_agent = client.user_agent
    row.client_address = client.address
    row.device_label, row.device_browser = device.label, device.browser
    row.device_os, row.device_family = device.os, device.device
    place = locate(client.address)
    if place is not None:
        row.location_country, row.location_city = place.country, place.city


def session_create(
    *,
    credentials: str,
    client: Client,
    user: Any = None,
    api_key: ApiKey | None = None,
    token: Token | None = None,
    internal: bool = False,
    password_change_required: bool = False,
    audit_data: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> NewSession:
    """Create an authenticated session (and its audit record) in one transaction.

    ``credentials_data`` is filled from the arguments by type. TOKEN sessions take their parent and
    root credential from ``token`` and never outlive the parent's absolute lifetime. At
    ``SESSIONS_MAX_PER_USER`` active sessions the oldest other one ends with ``EVICTED``.
    """
    now = now or timezone.now()
    life = policy.lifetime()
    secret = keys.new_token()
    row = UserSession(
        public_id=keys.new_token(),
        secret_hash=keys.hash_secret(secret),
        credentials=credentials,
        origin=client.origin,
        internal=internal,
        secure_transport=client.secure_transport,
        created_at=now,
        last_seen_at=now,
        expires_at=now + life.max_age,
        idle_timeout=int(life.idle.total_seconds()) if life.idle else None,
        password_change_required=password_change_required,
        login_mechanism=(audit_data or {}).get("mechanism"),
    )
    if client.peer is not None:
        row.peer_pid, row.peer_uid, row.peer_gid = client.peer
    else:
        _describe_client(row, client)
    if user is not None:
        row.user = user
        row.username = user.get_username()
        row.user_auth_hash = user_auth_hash(user)
    if credentials in _USER_LOGINS or credentials == Credentials.API_KEY:
        row.login_at = now
    if api_key is not None:
        row.api_key = api_key
        row.api_key_name = api_key.name
    if token is not None:
        parent = token.session
        row.parent = parent
        row.token = token
        row.expires_at = min(row.expires_at, parent.expires_at)
        if parent.credentials == Credentials.TOKEN:
            for name in (
                "root_credentials",
                "root_username",
                "root_login_at",
                "root_api_key_id",
                "root_api_key_name",
            ):
                setattr(row, name, getattr(parent, name))
        else:
            row.root_credentials = parent.credentials
            row.root_username = parent.username
            row.root_login_at = parent.login_at
            row.root_api_key_id = parent.api_key_id
            row.root_api_key_name = parent.api_key_name
    row.username_folded = row.username.casefold() if row.username is not None else None

    with transaction.atomic():
        if user is not None:
            # Serialise this user's logins so the concurrent-session cap holds (D1, B24).
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
            _evict_over_cap(user=user, now=now)
        row.save()
        events.session_added(row)
        audit_record(
            event=AuditEvent.AUTHENTICATION,
            success=True,
            username=row.username,
            session=row.public_id,
            address=client.origin,
            event_data={"credentials": credentials, **(audit_data or {})},
        )
    return NewSession(row, secret)


def _evict_over_cap(*, user: Any, now: dt.datetime) -> None:
    cap = int(conf.get("SESSIONS_MAX_PER_USER"))
    active = UserSession.objects.active(now).filter(user=user).order_by("created_at", "id")
    excess = active.count() - (cap - 1)
    if excess > 0:
        for victim in active[:excess]:
            session_end(session=victim, reason=EndReason.EVICTED, now=now)


def _invalid_reason(row: UserSession, now: dt.datetime) -> str | None:
    """Why an active-looking row must end now (None: still valid)."""
    if row.expires_at <= now:
        return EndReason.EXPIRED
    if row.idle_timeout is not None and row.last_seen_at + dt.timedelta(seconds=row.idle_timeout) <= now:
        return EndReason.IDLE
    if row.credentials != Credentials.TRUENAS_NODE and row.user_id is None:
        return EndReason.USER_DISABLED  # the user was deleted
    user = row.user
    if user is not None:
        if not user.is_active:
            return EndReason.USER_DISABLED
        if row.user_auth_hash and not keys.same_hash(row.user_auth_hash, user_auth_hash(user)):
            return EndReason.PASSWORD_CHANGED
    if row.api_key_id is not None:
        key = row.api_key if _related_exists(row, "api_key") else None
        if key is None or key.revoked:
            return EndReason.CREDENTIAL_REVOKED
        if key.expires_at is not None and key.expires_at <= now:
            return EndReason.EXPIRED
    if row.parent_id is not None:
        parent = row.parent if _related_exists(row, "parent") else None
        # An ancestor past its own limits (idle, expiry, revoked key...) has ended even if no request
        # of its own has recorded that yet (B21).
        if parent is None or parent.ended_at is not None or _invalid_reason(parent, now) is not None:
            return EndReason.PARENT_ENDED
    return None


def _related_exists(row: UserSession, name: str) -> bool:
    try:
        return getattr(row, name) is not None
    except UserSession.DoesNotExist:
        return False
    except Exception as exc:  # related object deleted (db_constraint=False)
        if exc.__class__.__name__ == "DoesNotExist":
            return False
        raise


def session_check(
    *, row: UserSession, client: Client, now: dt.datetime | None = None, touch: bool = True
) -> UserSession | None:
    """Validate a loaded session row; end it (with the reason) and return None when it is invalid.

    Writes ``last_seen_at`` at most once per `policy.last_seen_interval` (coalesced); ``touch=False``
    (the periodic check of open sockets, which is not activity) never writes it.
    """
    now = now or timezone.now()
    if row.ended_at is not None:
        return None
    reason = _invalid_reason(row, now)
    if reason is not None:
        parent = row.parent if reason == EndReason.PARENT_ENDED and _related_exists(row, "parent") else None
        if parent is not None and parent.ended_at is None:
            # End the invalid ancestor with its own reason; that cascades to this row.
            session_check(row=parent, client=client, now=now)
        session_end(session=row, reason=reason, address=client.origin, now=now)
        return None
    idle = dt.timedelta(seconds=row.idle_timeout) if row.idle_timeout is not None else None
    interval = policy.last_seen_interval(idle)
    if touch and now - row.last_seen_at >= interval:
        # Only while the stored value is still stale: of concurrent requests that all read the old
        # value, one writes the row and the others change nothing (D6).
        UserSession.objects.filter(pk=row.pk, ended_at__isnull=True, last_seen_at__lte=now - interval).update(
            last_seen_at=now
        )
        row.last_seen_at = now
    return row


def session_authenticate(
    *, secret: str, client: Client, now: dt.datetime | None = None
) -> UserSession | None:
    """The active session whose secret is ``secret``, checked against the database, or None.

    One indexed lookup (by the secret's hash) with the user joined, through precompiled SQL; the API
    key or parent session of API_KEY / TOKEN sessions is loaded only for those.
    """
    if not secret or len(secret) > 256:
        return None
    row = _BY_SECRET.load(keys.hash_secret(secret))
    if row is None:
        return None
    return session_check(row=row, client=client, now=now)


_BY_SECRET = RowLoader(UserSession, "secret_hash", related="user")


def session_rotate(*, session: UserSession) -> str:
    """Give ``session`` a new secret and a new public id (after a password change, A21)."""
    secret = keys.new_token()
    old_id = session.public_id
    with transaction.atomic():
        # Tokens minted under the old identity die with it (A21).
        Token.objects.filter(session_id=session.pk).delete()
        session.secret_hash = keys.hash_secret(secret)
        session.public_id = keys.new_token()
        session.user_auth_hash = user_auth_hash(session.user)
        session.save(update_fields=["secret_hash", "public_id", "user_auth_hash"])
        # Subscribers see the old id go and the new one come; the session itself (and its socket) lives on.
        events.session_removed(session, public_id=old_id, ended=False)
        events.session_added(session)
    return secret
