"""``auth.login_ex`` / ``auth.login_ex_continue``: every login mechanism, one place.

Answers are TrueNAS's: ``SUCCESS`` (with ``user_info`` and ``authenticator``), ``OTP_REQUIRED``
(with ``username``), ``AUTH_ERR``, ``EXPIRED``. A wrong password, an unknown user, an inactive or
locked account and an unusable password all get the same ``AUTH_ERR`` after the same work (a
password hash is computed in every case) and the same failure delay; the audit record says which.

Policy (security.md): users with a confirmed TOTP device must use it for password logins; API keys,
tokens and the unix socket are exempt, as in TrueNAS. At ``LEVEL_2``, password logins need a second
factor, API keys are refused and tokens must be single-use.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app import conf
from sessions_app.audit import audit_record
from sessions_app.auth import keys, policy, throttle
from sessions_app.auth.clients import Client
from sessions_app.auth.fieldcrypt import FieldKeyError
from sessions_app.auth.scram import CLIENT_FINAL, SCRAM_TYPES
from sessions_app.exceptions import InvalidParams, NotSupported
from sessions_app.models import (
    ApiKey,
    AuditEvent,
    Credentials,
    EndReason,
    OneTimePassword,
    PendingLogin,
    ScramExchange,
    Token,
    UserSession,
)
from sessions_app.selectors import user_get_by_username
from sessions_app.services.api_keys import api_key_pepper, api_key_revoke, api_key_touch, verifier_backfill
from sessions_app.services.notices import sign_in_noticed
from sessions_app.services.sessions import NewSession, session_check, session_create, session_end

PENDING_LIFETIME = dt.timedelta(minutes=5)
MECHANISMS = ("PASSWORD_PLAIN", "API_KEY_PLAIN", "TOKEN_PLAIN", "SCRAM", "NODE_HMAC")
_PARAMS = {
    "PASSWORD_PLAIN": {"mechanism", "username", "password", "login_options"},
    "NODE_HMAC": {"mechanism", "node", "timestamp", "nonce", "signature", "login_options"},
    "API_KEY_PLAIN": {"mechanism", "username", "api_key", "login_options"},
    "TOKEN_PLAIN": {"mechanism", "token", "login_options"},
    "SCRAM": {"mechanism", "scram_type", "rfc_str", "login_options"},
    "OTP_TOKEN": {"mechanism", "otp_token", "login_options"},
}
_LOGIN_OPTIONS = {"user_info"}
_DUMMY_PASSWORD = "sessions-app-timing-equaliser"


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
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


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


def _validate(params: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidParams.one("login_data", "must be an object")
    errors = [(f"login_data.{k}", "unexpected field") for k in params if k not in allowed]
    if "scram_type" in allowed and params.get("scram_type") not in (None, *SCRAM_TYPES):
        errors.append(("login_data.scram_type", f"must be one of {', '.join(SCRAM_TYPES)}"))
    for name in allowed - {"mechanism", "login_options"}:
        value = params.get(name)
        if name == "timestamp":
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append((f"login_data.{name}", "an integer (unix seconds) is required"))
        elif not isinstance(value, str):
            errors.append((f"login_data.{name}", "a string is required"))
        elif "\x00" in value:
            errors.append((f"login_data.{name}", "must not contain NUL characters"))
    options = params.get("login_options", {})
    if not isinstance(options, dict):
        errors.append(("login_data.login_options", "must be an object"))
    else:
        errors += [
            (f"login_data.login_options.{k}", "unexpected option") for k in options if k not in _LOGIN_OPTIONS
        ]
        if "user_info" in options and not isinstance(options["user_info"], bool):
            errors.append(("login_data.login_options.user_info", "must be a boolean"))
    if errors:
        raise InvalidParams(errors)
    return params


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


def _discard_pending(pending_secret: str | None, client: Client) -> bool:
    """Drop the client's login step in progress: a pending second factor (audited as abandoned) or a
    SCRAM exchange. True when there was one."""
    if not pending_secret:
        return False
    if ScramExchange.objects.filter(secret_hash=keys.hash_secret(pending_secret)).delete()[0]:
        return True
    pending = (
        PendingLogin.objects.select_related("user")
        .filter(secret_hash=keys.hash_secret(pending_secret))
        .first()
    )
    if pending is None:
        return False
    with transaction.atomic():
        if PendingLogin.objects.filter(pk=pending.pk).delete()[0]:
            audit_record(
                event=AuditEvent.AUTHENTICATION,
                success=False,
                username=pending.user.get_username(),
                address=client.origin,
                event_data={"mechanism": "OTP_TOKEN", "error": "abandoned second factor"},
            )
    return True


def login_ex(
    *, params: Any, client: Client, pending_secret: str | None = None, replaces: UserSession | None = None
) -> LoginResult:
    """``auth.login_ex``. A new login discards a pending second factor of the same client (A17) and,
    when it succeeds, ends ``replaces`` (the client's current session) in the same transaction."""
    if not isinstance(params, dict):
        raise InvalidParams.one("login_data", "must be an object")
    mechanism = params.get("mechanism")
    if mechanism == "OTP_TOKEN":
        raise InvalidParams.one("login_data.mechanism", "OTP_TOKEN is only valid with auth.login_ex_continue")
    if mechanism not in _PARAMS:
        raise InvalidParams.one("login_data.mechanism", f"must be one of {', '.join(MECHANISMS)}")
    params = _validate(params, _PARAMS[mechanism])
    from sessions_app.services.scram_login import scram_login  # it builds on this module

    if mechanism == "SCRAM":
        if policy.assurance_level() != "LEVEL_1":
            raise NotSupported("API key authentication is not allowed at this assurance level")
        if params["scram_type"] == CLIENT_FINAL:  # continues the exchange the pending secret names
            return scram_login(params=params, client=client, pending_secret=pending_secret, replaces=replaces)
    cleared = _discard_pending(pending_secret, client)
    options = params.get("login_options", {})
    if mechanism == "SCRAM":
        result = scram_login(params=params, client=client, pending_secret=None, replaces=replaces)
    elif mechanism == "PASSWORD_PLAIN":
        result = _password_login(params["username"], params["password"], client, options, replaces)
    elif mechanism == "API_KEY_PLAIN":
        result = _api_key_login(params["username"], params["api_key"], client, options, replaces)
    elif mechanism == "NODE_HMAC":
        result = _node_login(params, client, replaces)
    else:
        result = _token_login(params["token"], client, options, replaces)
    result.pending_cleared = cleared
    return result


def _node_login(params: dict[str, Any], client: Client, replaces: UserSession | None) -> LoginResult:
    from sessions_app.services.node import node_login

    with transaction.atomic():
        new = node_login(
            node=params["node"],
            timestamp=params["timestamp"],
            nonce=params["nonce"],
            signature=params["signature"],
            client=client,
        )
        if new is not None and replaces is not None:
            session_end(
                session=replaces, reason=EndReason.LOGOUT, actor=replaces.username, address=client.origin
            )
    if new is None:
        return fail(
            client=client, mechanism="NODE_HMAC", username=None, reason="invalid node proof", count=False
        )
    response = {"response_type": "SUCCESS", "authenticator": policy.assurance_level(), "user_info": None}
    return LoginResult(response, new_session=new)


# --- passwords ---------------------------------------------------------------------------------------


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


# --- second factor -----------------------------------------------------------------------------------


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


# --- API keys ---------------------------------------------------------------------------------------


def _api_key_login(
    username: str, api_key: str, client: Client, options: dict[str, Any], replaces: UserSession | None
) -> LoginResult:
    now = timezone.now()
    parsed = keys.split_api_key(api_key)
    key = None
    if parsed is not None:
        key = ApiKey.objects.select_related("user").filter(pk=parsed[0]).first()
    digest = keys.api_key_hash(parsed[1] if parsed else api_key[:200], pepper=api_key_pepper())
    key_label = f"{key.pk}:{key.name}" if key is not None else "<INVALID>"
    # F7: a guess against key N counts toward key N (keyed by the id as presented, known or not) and
    # the client address (the login rate limit), never toward the owner or the name presented: nobody
    # can lock a user out, or learn who owns key N, by guessing its secret. Text that names no key id
    # counts toward the address only.
    counter = throttle.api_key_lockout_name(parsed[0]) if parsed is not None else None
    ref = {"api_key_ref": key_label}
    if counter is not None and throttle.locked_until(username=counter) is not None:
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason="locked key",
            count=False, extra=ref,
        )  # fmt: skip
    if key is None or not keys.same_hash(key.key_hash, digest) or key.user.get_username() != username:
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason="invalid key",
            count=counter is not None, lockout_name=counter, extra=ref,
        )  # fmt: skip
    # The right secret: the owner's own lock (password and second-factor failures) still covers
    # every pathway of the account (A6); asked only now, so it tells a guesser nothing.
    if throttle.locked_until(username=username[:150]) is not None:
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason="locked",
            count=False, extra=ref,
        )  # fmt: skip
    if key.revoked or not key.user.is_active:
        reason = "revoked key" if key.revoked else "inactive user"
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason=reason, count=False, extra=ref
        )
    if policy.assurance_level() != "LEVEL_1":
        return fail(
            client=client,
            mechanism="API_KEY_PLAIN",
            username=username,
            reason="refused at this level",
            count=False,
        )
    if key.expires_at is not None and key.expires_at <= now:
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason="expired key", count=False,
            response=EXPIRED, extra={"api_key_ref": key_label},
        )  # fmt: skip
    if not client.secure_transport:
        api_key_revoke(key=key, reason="Attempt to use over an insecure transport", actor=None)
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason="insecure transport: key revoked",
            count=False, response=EXPIRED, extra={"api_key_ref": key_label},
        )  # fmt: skip
    if key.scram_verifier is None and parsed is not None:
        verifier_backfill(key=key, secret=parsed[1])  # a key older than SCRAM: once, at its first use
    new = open_api_key_session(
        key=key,
        client=client,
        replaces=replaces,
        lockout_name=counter,
        now=now,
        audit_data={"mechanism": "API_KEY_PLAIN", "api_key_ref": key_label},
    )
    return success(key.user, new, options)


def open_api_key_session(
    *,
    key: ApiKey,
    client: Client,
    replaces: UserSession | None,
    lockout_name: str | None,
    now: dt.datetime,
    audit_data: dict[str, Any],
) -> NewSession:
    """The session of a key proved right (``API_KEY_PLAIN``, SCRAM): its use recorded, an
    ``API_KEY`` session opened, the key's failure counter (``lockout_name``, F7) reset."""
    api_key_touch(key=key, now=now)
    return open_session(
        credentials=Credentials.API_KEY,
        client=client,
        user=key.user,
        replaces=replaces,
        lockout_name=lockout_name,
        api_key=key,
        audit_data=audit_data,
    )


# --- tokens -----------------------------------------------------------------------------------------


def _token_login(
    token_text: str, client: Client, options: dict[str, Any], replaces: UserSession | None
) -> LoginResult:
    now = timezone.now()
    token = (
        Token.objects.select_related("session", "session__user", "session__api_key", "session__parent")
        .filter(token_hash=keys.hash_secret(token_text))
        .first()
        if 0 < len(token_text) <= 256
        else None
    )
    refused = {"client": client, "mechanism": "TOKEN_PLAIN", "username": None, "count": False}
    if token is None or token.expires_at <= now:
        return fail(**refused, reason="unknown or expired token")
    parent = session_check(row=token.session, client=client, now=now)
    if parent is None or parent.user is None:
        return fail(**refused, reason="parent session ended")
    if token.attrs:
        return fail(**refused, reason="scoped token cannot open a session")
    if not token.single_use and policy.assurance_level() != "LEVEL_1":
        # Minted before the level was raised: multi-use tokens are LEVEL_1 only (A19).
        return fail(**refused, reason="multi-use token refused at this level")
    if token.match_origin:
        if token.origin_uid is not None:
            same = client.peer is not None and (client.peer[1], client.peer[2]) == (
                token.origin_uid,
                token.origin_gid,
            )
        else:
            same = client.peer is None and client.address is not None and client.address == token.origin_ip
        if not same:
            return fail(**refused, reason="origin does not match")
    # The token is used up (or its expiry slides) in the transaction that opens the session and writes
    # its audit record: a process killed in between leaves the token as it was (D10).
    with transaction.atomic():
        if token.single_use:
            used = not Token.objects.filter(pk=token.pk).delete()[0]
        else:
            used = False
            Token.objects.filter(pk=token.pk).update(
                expires_at=min(now + dt.timedelta(seconds=token.ttl), parent.expires_at)
            )
        new = None
        if not used:
            new = open_session(
                credentials=Credentials.TOKEN,
                client=client,
                user=parent.user,
                replaces=replaces,
                token=token,
                audit_data={"mechanism": "TOKEN_PLAIN", "parent": parent.public_id},
            )
    if new is None:
        return fail(**refused, reason="token already used")
    return success(parent.user, new, options)
