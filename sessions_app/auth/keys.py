"""Secrets: generation, hashing at rest and constant-time verification (pure Python).

Every secret the service hands out -- session secrets (cookies), tokens, API keys, one-time
passwords -- is generated with `secrets` (>= 256 bits, no structure: no user id, time or sequence
in it) and stored only as a hash. These secrets are high-entropy, so a fast hash is the right tool:
a password hasher (PBKDF2/Argon2, ~0.4 s) protects guessable secrets, while a random 256-bit value
cannot be brute-forced from its SHA-256 and checking it must cost microseconds on every request.

API keys additionally use a *keyed* hash (HMAC-SHA256 with a server-side pepper): a leaked database
alone is not enough to test candidate keys offline. Comparisons use `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

TOKEN_BYTES = 48  # -> 64 URL-safe characters (384 bits), as TrueNAS's generate_token(48)
API_KEY_SECRET_LENGTH = 64
ONETIME_PASSWORD_LENGTH = 24
_ALNUM = string.ascii_letters + string.digits


def new_token() -> str:
    """A 64-character URL-safe random string (session secrets, public ids, tokens)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of a high-entropy secret (what the database stores)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_api_key_secret() -> str:
    """64 random alphanumeric characters (~381 bits)."""
    return "".join(secrets.choice(_ALNUM) for _ in range(API_KEY_SECRET_LENGTH))


def new_onetime_password() -> str:
    """24 random alphanumeric characters (~143 bits), typed by a person once."""
    return "".join(secrets.choice(_ALNUM) for _ in range(ONETIME_PASSWORD_LENGTH))


def api_key_hash(secret: str, *, pepper: bytes) -> str:
    """Keyed hash (HMAC-SHA256, hex) of an API key's secret part."""
    return hmac.new(pepper, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def split_api_key(key: str) -> tuple[int, str] | None:
    """``"<id>-<secret>"`` -> ``(id, secret)``; None when the text does not have that shape."""
    if not isinstance(key, str) or len(key) > 200:
        return None
    head, sep, secret = key.partition("-")
    if not sep or not head.isascii() or not head.isdigit() or len(head) > 18 or not secret:
        return None
    return int(head), secret


def same_hash(expected: str, actual: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(expected.encode("ascii", "replace"), actual.encode("ascii", "replace"))
