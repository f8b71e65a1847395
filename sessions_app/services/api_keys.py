"""API keys: create (the key is shown once), update / reset, revoke, delete -- with cascades.

A key is ``"<id>-<64 alphanumerics>"``; only an HMAC-SHA256 of the secret part is stored
(`sessions_app.auth.keys`), and its SCRAM-SHA-512 verifier, sealed (`services.scram_login`): computed
when the key is made or reset -- one PBKDF2 of ``SESSIONS_SCRAM_ITERATIONS`` rounds, before the
transaction, so that no row lock is held meanwhile. Revoking, expiring or deleting a key ends the sessions opened with it
(``CREDENTIAL_REVOKED``) in the same transaction; expiry is also enforced on every request.

An expiry must be in the future when it is set (`api_key_expiry_problem`): a key created, re-dated
or reset with an expiry that has passed could never be used, yet its page would say "copy the key
now". Every interface (browser, JSON-RPC, REST, ``manage.py api_key``) gets a field error
(``api_key_create.expires_at`` / ``api_key_update.expires_at``); to stop a key now, revoke it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from sessions_app import conf
from sessions_app.audit import audit_record
from sessions_app.auth import fieldcrypt, keys, scram
from sessions_app.exceptions import InvalidParams
from sessions_app.models import ApiKey, AuditEvent, EndReason, UserSession

logger = logging.getLogger(__name__)

LAST_USED_INTERVAL = dt.timedelta(seconds=60)


def api_key_pepper() -> bytes:
    """The HMAC key of API-key hashes: ``SESSIONS_API_KEY_PEPPER``, else derived from SECRET_KEY.

    Rotating it invalidates every API key (like rotating SECRET_KEY would); set it explicitly to
    decouple the two.
    """
    pepper = conf.get("SESSIONS_API_KEY_PEPPER")
    if pepper:
        return str(pepper).encode()
    return salted_hmac(
        "sessions_app.api_key_pepper", "v1", secret=settings.SECRET_KEY, algorithm="sha256"
    ).digest()


# --- SCRAM verifiers ------------------------------------------------------------------------------------


def verifier_aad(key_id: int) -> bytes:
    """Associated data of a key's sealed verifier: the column and the key (a verifier copied onto
    another key does not open)."""
    return b"sessions_app.apikey.scram_verifier|key:%d" % key_id


def verifier_seal(verifier: scram.Verifier, *, key_id: int) -> str:
    return fieldcrypt.seal(verifier.to_bytes(), aad=verifier_aad(key_id))


def verifier_open(key: ApiKey) -> scram.Verifier | None:
    """The key's verifier, or None (none yet, or sealed under no configured field key: logged)."""
    if not key.scram_verifier:
        return None
    try:
        return scram.Verifier.from_bytes(fieldcrypt.unseal(key.scram_verifier, aad=verifier_aad(key.pk)))
    except (fieldcrypt.FieldKeyError, scram.ScramError) as exc:
        logger.error("API key %s: its SCRAM verifier cannot be opened: %s", key.pk, exc)
        return None


def verifier_derive(secret: str) -> scram.Verifier:
    """A new verifier for a key's secret (one PBKDF2 of ``SESSIONS_SCRAM_ITERATIONS`` rounds)."""
    return scram.derive_verifier(secret, iterations=int(conf.get("SESSIONS_SCRAM_ITERATIONS")))


def verifier_backfill(*, key: ApiKey, secret: str) -> None:
    """Give a key made before SCRAM existed its verifier, now that its secret is known (its first
    successful plain-text use). Conditional on the column still being empty: of concurrent first
    uses one writes; the others change nothing."""
    if key.scram_verifier or not secret.isascii() or not secret.isalnum():
        return
    sealed = verifier_seal(verifier_derive(secret), key_id=key.pk)
    if ApiKey.objects.filter(pk=key.pk, scram_verifier__isnull=True).update(scram_verifier=sealed):
        key.scram_verifier = sealed


def _validate_name(name: Any) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or "\x00" in name:
        raise InvalidParams.one("api_key_create.name", "a name of 1 to 200 characters is required")
    return name


def _utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def api_key_expiry_problem(
    expires_at: dt.datetime | None, *, now: dt.datetime, current: dt.datetime | None = None
) -> str | None:
    """Why ``expires_at`` cannot be set on a key, or None when it can.

    None (never expires) and any later instant can. An instant at or before ``now`` cannot, with one
    exception: ``current``, the key's stored expiry, left unchanged (to the second, as the browser's
    form sends it) -- renaming a key that has already expired must not be refused for a date the
    caller did not touch.
    """
    if expires_at is None or expires_at > now:
        return None
    if current is not None and expires_at.replace(microsecond=0) == current.replace(microsecond=0):
        return None
    return f"must be in the future ({_utc_text(expires_at)} has passed)"


def _check_expiry(
    attribute: str, expires_at: dt.datetime | None, *, current: dt.datetime | None = None, hint: str = ""
) -> None:
    problem = api_key_expiry_problem(expires_at, now=timezone.now(), current=current)
    if problem is not None:
        raise InvalidParams.one(attribute, problem + hint)


def _audit(method: str, key: ApiKey, actor: str | None, address: str, **data: Any) -> None:
    audit_record(
        event=AuditEvent.METHOD_CALL,
        success=True,
        username=actor,
        address=address,
        event_data={"method": method, "api_key": {"id": key.pk, "name": key.name}, **data},
    )


def api_key_create(
    *,
    user: Any,
    name: Any,
    expires_at: dt.datetime | None = None,
    actor: str | None = None,
    address: str = "",
) -> tuple[ApiKey, str]:
    """Create a key for ``user``; returns it and the plaintext key, which is never shown again.

    A user holds at most ``SESSIONS_MAX_KEYS_PER_USER`` keys (security.md F11): at the cap the
    answer is a validation error (`InvalidParams`) and nothing is written. Every stored key counts,
    revoked and expired ones included -- they are rows that the user's queries scan, and if they
    did not count, creating and revoking would grow the table without bound; deleting a key frees
    its place. The count is taken inside the transaction with the user's row locked, so concurrent
    creations cannot overshoot the cap. An ``expires_at`` that has passed is a validation error
    (``api_key_create.expires_at``), checked before anything is computed or written.
    """
    name = _validate_name(name)
    _check_expiry("api_key_create.expires_at", expires_at)
    secret = keys.new_api_key_secret()
    verifier = verifier_derive(secret)
    try:
        with transaction.atomic():
            _check_key_cap(user)
            key = ApiKey.objects.create(
                name=name,
                user=user,
                key_hash=keys.api_key_hash(secret, pepper=api_key_pepper()),
                expires_at=expires_at,
            )
            # Sealed with the key's id in its associated data, known once the row exists.
            key.scram_verifier = verifier_seal(verifier, key_id=key.pk)
            key.save(update_fields=["scram_verifier"])
            _audit("api_key.create", key, actor, address)
    except IntegrityError:
        raise InvalidParams.one("api_key_create.name", "an API key with this name already exists") from None
    return key, f"{key.pk}-{secret}"


def _check_key_cap(user: Any) -> None:
    """Lock ``user``'s row (serialising their key creations) and refuse a key over the cap."""
    cap = int(conf.get("SESSIONS_MAX_KEYS_PER_USER"))
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    if ApiKey.objects.filter(user=user).count() >= cap:
        raise InvalidParams.one(
            "api_key_create",
            f"this account already has {cap} API keys, the most allowed; delete one to create another",
        )


def api_key_update(
    *,
    key: ApiKey,
    name: Any = None,
    expires_at: Any = ...,
    reset: bool = False,
    actor: str | None = None,
    address: str = "",
) -> tuple[ApiKey, str | None]:
    """Rename, change expiry or ``reset`` (new secret and verifier: the old value stops working at
    once).

    A new ``expires_at`` that has passed is refused (``api_key_update.expires_at``), the stored one
    sent back unchanged is not (`api_key_expiry_problem`). A reset of a key whose expiry -- the new
    one, else the stored one -- has passed is refused the same way: its new secret could never be
    used; give it a later expiry (or none, ``null``) in the same call.
    """
    if expires_at is not ...:
        _check_expiry(
            "api_key_update.expires_at",
            expires_at,
            current=key.expires_at,
            hint="; to stop the key now, revoke it",
        )
    if reset:
        effective = key.expires_at if expires_at is ... else expires_at
        if effective is not None and effective <= timezone.now():
            raise InvalidParams.one(
                "api_key_update.expires_at",
                f"this key expired at {_utc_text(effective)}; give it a later expiry (or none) "
                "to reset it, or its new secret could never be used",
            )
    plaintext = None
    secret = keys.new_api_key_secret() if reset else None
    verifier = verifier_derive(secret) if secret is not None else None
    fields: list[str] = []
    if name is not None:
        key.name = _validate_name(name)
        fields.append("name")
    if expires_at is not ...:
        key.expires_at = expires_at
        fields.append("expires_at")
    try:
        with transaction.atomic():
            if secret is not None and verifier is not None:
                key.key_hash = keys.api_key_hash(secret, pepper=api_key_pepper())
                key.scram_verifier = verifier_seal(verifier, key_id=key.pk)
                key.revoked, key.revoked_reason = False, None
                fields += ["key_hash", "scram_verifier", "revoked", "revoked_reason"]
                plaintext = f"{key.pk}-{secret}"
                _end_key_sessions(key, EndReason.CREDENTIAL_REVOKED, actor, address)
            if fields:
                key.save(update_fields=fields)
            if key.expires_at is not None and key.expires_at <= timezone.now():
                _end_key_sessions(key, EndReason.EXPIRED, actor, address)
            _audit("api_key.update", key, actor, address, reset=reset, fields=fields)
    except IntegrityError:
        raise InvalidParams.one("api_key_update.name", "an API key with this name already exists") from None
    return key, plaintext


def _end_key_sessions(key: ApiKey, reason: str, actor: str | None, address: str) -> int:
    from sessions_app.services.session_ending import sessions_end

    return sessions_end(
        sessions=UserSession.objects.filter(api_key_id=key.pk, ended_at__isnull=True),
        reason=reason,
        actor=actor,
        address=address,
    )


def api_key_revoke(*, key: ApiKey, reason: str, actor: str | None, address: str = "") -> None:
    """Revoke ``key`` with ``reason`` and end the sessions opened with it."""
    with transaction.atomic():
        ApiKey.objects.filter(pk=key.pk).update(revoked=True, revoked_reason=reason[:200])
        key.revoked, key.revoked_reason = True, reason[:200]
        _end_key_sessions(key, EndReason.CREDENTIAL_REVOKED, actor, address)
        _audit("api_key.revoke", key, actor, address, reason=reason[:200])


def api_key_delete(*, key: ApiKey, actor: str | None, address: str = "") -> None:
    with transaction.atomic():
        _end_key_sessions(key, EndReason.CREDENTIAL_REVOKED, actor, address)
        _audit("api_key.delete", key, actor, address)
        key.delete()


def api_key_touch_due(*, key: ApiKey, now: dt.datetime) -> bool:
    """Whether the loaded ``key``'s last use is old enough to be recorded again (`api_key_touch`)."""
    return key.last_used_at is None or now - key.last_used_at >= LAST_USED_INTERVAL


def api_key_touch(*, key: ApiKey, now: dt.datetime) -> bool:
    """Record use, at most once a minute per key (no write per request); True when this call did.

    Conditional on the stored value: of concurrent requests that all read the same stale value, one
    records the use (and its caller audits it), the others change nothing (D6).
    """
    if api_key_touch_due(key=key, now=now):
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_INTERVAL)
        if ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now):
            key.last_used_at = now
            return True
    return False
