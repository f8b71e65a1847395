"""Secrets at rest: authenticated encryption of single column values (security.md F6).

A value that must be *read back* (a TOTP seed; later the SCRAM verifiers of API keys) cannot be
hashed, so it is sealed with AES-256-GCM under a key that is **not in the database**: a dump of the
database alone yields ciphertext. The associated data names the value's place (``column|row
owner``); GCM's tag binds it, so a sealed value copied into another row or column does not open
(an attacker who can write rows cannot move their own seed onto a victim's device).

The stored text is a versioned envelope that fits a ``CharField``::

    enc1:<base64url without padding of: key id (4) | nonce (12) | ciphertext | tag (16)>

(a 20-byte seed: 52 bytes, 75 characters). The key id is the first 4 bytes of an HMAC of the key,
so rotation can tell which values are still under an old key without trying to open them.

Keys: ``SESSIONS_FIELD_KEY`` (at least 32 characters; e.g. ``secrets.token_urlsafe(32)``), or,
when it is empty, ``SECRET_KEY``. Either is stretched with HKDF-SHA256 into the AES key. Sealing
always uses that *current* key; opening also accepts the keys in ``SESSIONS_FIELD_KEY_PREVIOUS``
(comma-separated), ``SECRET_KEY`` when ``SESSIONS_FIELD_KEY`` is set (moving to an explicit key
needs no other step) and Django's ``SECRET_KEY_FALLBACKS``. ``manage.py rotate_field_key``
re-seals every value under the current key, after which the previous keys can be dropped.

Generic over bytes: `seal` / `unseal` take any payload and the caller's associated data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from sessions_app import conf

PREFIX = "enc1:"
MIN_KEY_LENGTH = 32
_KID_BYTES = 4
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HKDF_INFO = b"sessions_app.fieldcrypt.v1"


class FieldKeyError(Exception):
    """A sealed value that no configured key opens: wrong or missing key, or a moved or altered value.

    The message never contains the value or a key.
    """


@dataclass(frozen=True, eq=False)
class FieldKey:
    """An AES-256-GCM key and its public id (``kid``)."""

    kid: bytes
    aead: AESGCM = field(repr=False)


@lru_cache(maxsize=16)
def _derive(secret: str) -> FieldKey:
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret.encode())
    kid = hmac.new(material, b"sessions_app.fieldcrypt.kid", hashlib.sha256).digest()[:_KID_BYTES]
    return FieldKey(kid=kid, aead=AESGCM(material))


def _split(text: object) -> list[str]:
    if isinstance(text, str):
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(text, Iterable):
        return [str(part).strip() for part in text if str(part).strip()]
    return []


def _configured_key() -> str:
    explicit = str(conf.get("SESSIONS_FIELD_KEY") or "")
    if explicit and len(explicit) < MIN_KEY_LENGTH:
        raise ImproperlyConfigured(f"SESSIONS_FIELD_KEY must be at least {MIN_KEY_LENGTH} characters")
    return explicit


def current_key() -> FieldKey:
    """The key that seals: ``SESSIONS_FIELD_KEY``, else one derived from ``SECRET_KEY``."""
    return _derive(_configured_key() or settings.SECRET_KEY)


def decryption_keys() -> list[FieldKey]:
    """Every key that opens, the current one first (see the module docstring)."""
    explicit = _configured_key()
    secrets = [explicit or settings.SECRET_KEY, *_split(conf.get("SESSIONS_FIELD_KEY_PREVIOUS"))]
    if explicit:
        secrets.append(settings.SECRET_KEY)
    secrets += _split(getattr(settings, "SECRET_KEY_FALLBACKS", ()))
    keys: dict[bytes, FieldKey] = {}
    for secret in secrets:
        key = _derive(secret)
        keys.setdefault(key.kid, key)
    return list(keys.values())


def is_sealed(value: object) -> bool:
    """Whether ``value`` is a sealed envelope (as opposed to a legacy plain value)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def _decode(value: str) -> bytes:
    body = value[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise FieldKeyError("not a valid sealed value") from None
    if len(raw) < _KID_BYTES + _NONCE_BYTES + _TAG_BYTES:
        raise FieldKeyError("not a valid sealed value")
    return raw


def key_id(value: str) -> bytes:
    """The id of the key ``value`` was sealed with."""
    return _decode(value)[:_KID_BYTES]


def is_current(value: object) -> bool:
    """Whether ``value`` is sealed under the current key (rotation leaves it alone)."""
    return is_sealed(value) and key_id(str(value)) == current_key().kid


def seal(data: bytes, *, aad: bytes, key: FieldKey | None = None) -> str:
    """``data`` encrypted and authenticated with ``aad`` under the current key, as envelope text."""
    key = key or current_key()
    nonce = os.urandom(_NONCE_BYTES)
    sealed = key.kid + nonce + key.aead.encrypt(nonce, data, aad)
    return PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def unseal(value: str, *, aad: bytes) -> bytes:
    """The bytes sealed in ``value`` with ``aad``; `FieldKeyError` when no configured key opens it."""
    raw = _decode(value)
    kid, nonce, body = (
        raw[:_KID_BYTES],
        raw[_KID_BYTES : _KID_BYTES + _NONCE_BYTES],
        raw[_KID_BYTES + _NONCE_BYTES :],
    )
    for key in decryption_keys():
        if key.kid == kid:
            try:
                return key.aead.decrypt(nonce, body, aad)
            except InvalidTag:
                break
    raise FieldKeyError(
        "a sealed value cannot be opened with SESSIONS_FIELD_KEY, SESSIONS_FIELD_KEY_PREVIOUS or the "
        "secret key (wrong key, or the value was moved or altered)"
    )


def reseal(value: str, *, aad: bytes) -> str:
    """``value`` sealed under the current key: itself when it already is, else opened and sealed again."""
    if is_current(value):
        unseal(value, aad=aad)  # authenticates it: a moved or altered value is not passed on
        return value
    return seal(unseal(value, aad=aad), aad=aad)
