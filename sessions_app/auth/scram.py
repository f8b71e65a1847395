"""SCRAM-SHA-512 (RFC 5802, H = SHA-512) as TrueNAS speaks it: the protocol alone, no database.

The wire contract is ``../shared/spec/scram.md``; the TrueNAS-specific rules are marked **(TN)**:

* the principal is ``<username>:<API key id>``, split at the first ``:``; the username is taken
  literally (the official client refuses ``,`` and ``=`` in names, so there is no ``=2C`` escaping);
* **(TN)** the combined nonce is base64 of the *raw bytes* of the client nonce followed by 32 random
  server bytes -- not RFC 5802's textual concatenation, which the official client rejects;
* **(TN)** the SCRAM password is the key's secret, the text after the first ``-`` of the key;
* channel binding is ``tls-server-end-point`` (RFC 5929) or none.

Every parse error is a `ScramError`; its message names what is wrong for the audit record and is
never shown to the client (who gets ``AUTH_ERR``). Base64 is the standard alphabet with padding,
decoded strictly. The server nonce comes from `new_server_nonce`, which the spec's test vector
replaces to make the exchange deterministic.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

#: Longest ``rfc_str`` accepted, in characters; longer input is refused before it is parsed.
MAX_MESSAGE_LENGTH = 1024
#: Bytes of the server's share of the nonce (TN: 32).
SERVER_NONCE_BYTES = 32
#: Accepted sizes of the client's nonce, raw bytes (the official client sends 32).
CLIENT_NONCE_BYTES = range(16, 65)
SALT_BYTES = 16
#: The official client refuses fewer iterations than this, and more than `MAX_ITERATIONS`.
MIN_ITERATIONS = 50_000
MAX_ITERATIONS = 5_000_000
KEY_BYTES = 64  # SHA-512
MAX_KEY_ID = 2**31 - 1

#: ``scram_type`` of the client's two ``auth.login_ex`` calls.
CLIENT_FIRST, CLIENT_FINAL = "CLIENT_FIRST_MESSAGE", "CLIENT_FINAL_MESSAGE"
SCRAM_TYPES = (CLIENT_FIRST, CLIENT_FINAL)

GS2_NONE = "n,,"
GS2_UNSUPPORTED = "y,,"
GS2_BOUND = "p=tls-server-end-point,,"

_VERIFIER = struct.Struct(f">{SALT_BYTES}sI{KEY_BYTES}s{KEY_BYTES}s")


class ScramError(ValueError):
    """A message that does not follow the protocol (the client is answered ``AUTH_ERR``)."""


def new_server_nonce() -> bytes:
    """The server's random share of a nonce (replaced by the test vector)."""
    return os.urandom(SERVER_NONCE_BYTES)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    """Strict standard base64 with padding; `ScramError` naming ``what`` otherwise."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ScramError(f"{what} is not base64") from None


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha512).digest()


# --- verifiers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verifier:
    """What the server keeps per API key (spec §5): never the client key, never the secret."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_bytes(self) -> bytes:
        return _VERIFIER.pack(self.salt, self.iterations, self.stored_key, self.server_key)

    @classmethod
    def from_bytes(cls, data: bytes) -> Verifier:
        if len(data) != _VERIFIER.size:
            raise ScramError("a stored verifier has the wrong size")
        salt, iterations, stored_key, server_key = _VERIFIER.unpack(data)
        return cls(salt, iterations, stored_key, server_key)


def derive_verifier(secret: str, *, iterations: int, salt: bytes | None = None) -> Verifier:
    """One PBKDF2-HMAC-SHA512 of ``iterations`` rounds over ``secret`` (the key's text after ``-``).

    CPU-bound for a noticeable time at the production count (500 000 rounds: about 0.3-1 s);
    ``hashlib`` releases the GIL meanwhile, so other threads and an event loop keep running.
    """
    if len(salt or b"") not in (0, SALT_BYTES):
        raise ValueError(f"a salt of {SALT_BYTES} bytes is required")
    salt = salt or os.urandom(SALT_BYTES)
    salted = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, iterations, KEY_BYTES)
    client_key = _hmac(salted, b"Client Key")
    return Verifier(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha512(client_key).digest(),
        server_key=_hmac(salted, b"Server Key"),
    )


# --- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientFirst:
    gs2_header: str
    username: str
    key_id: int
    nonce: bytes  # raw bytes of the client's nonce
    bare: str  # client-first-message-bare: everything after the gs2 header

    @property
    def bound(self) -> bool:
        return self.gs2_header == GS2_BOUND


def _attributes(text: str, names: tuple[str, ...], what: str) -> list[str]:
    """The values of exactly the attributes ``names``, in that order (``n=…,r=…``)."""
    parts = text.split(",")
    if len(parts) != len(names):
        raise ScramError(f"{what} must have exactly the attributes {', '.join(names)}")
    values = []
    for part, name in zip(parts, names, strict=True):
        if not part.startswith(name + "="):
            raise ScramError(f"{what} must have {name}= here, not {part[:2]!r}")
        values.append(part[len(name) + 1 :])
    return values


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ScramError(f"{what} must be a string")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise ScramError(f"{what} is longer than {MAX_MESSAGE_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ScramError(f"{what} contains control characters")
    return text


def parse_client_first(text: object) -> ClientFirst:
    text = _check_text(text, "client-first")
    for header in (GS2_NONE, GS2_BOUND, GS2_UNSUPPORTED):
        if text.startswith(header):
            break
    else:
        raise ScramError("client-first has an unsupported gs2 header (authzid or channel binding type)")
    bare = text[len(header) :]
    principal, nonce_text = _attributes(bare, ("n", "r"), "client-first")
    username, colon, key_text = principal.partition(":")
    if not colon or not username:
        raise ScramError("the name must be <username>:<API key id>")
    if not (key_text.isascii() and key_text.isdigit() and len(key_text) <= 10):
        raise ScramError("the API key id must be a decimal number")
    key_id = int(key_text)
    if not 1 <= key_id <= MAX_KEY_ID:
        raise ScramError("the API key id is out of range")
    nonce = unb64(nonce_text, "the client nonce")
    if len(nonce) not in CLIENT_NONCE_BYTES:
        raise ScramError("the client nonce has the wrong length")
    return ClientFirst(header, username, key_id, nonce, bare)


def server_first(first: ClientFirst, *, salt: bytes, iterations: int) -> tuple[str, str]:
    """``(server-first-message, combined nonce)``; the combined nonce is TN's: base64 of the raw
    client nonce followed by the server's 32 bytes."""
    combined = b64(first.nonce + new_server_nonce())
    return f"r={combined},s={b64(salt)},i={iterations}", combined


@dataclass(frozen=True)
class ClientFinal:
    channel_binding: bytes  # the decoded c= (gs2 header, plus the binding bytes when bound)
    nonce: str
    proof: bytes
    without_proof: str


def parse_client_final(text: object) -> ClientFinal:
    text = _check_text(text, "client-final")
    cbind, nonce, proof_text = _attributes(text, ("c", "r", "p"), "client-final")
    proof = unb64(proof_text, "the proof")
    if len(proof) != KEY_BYTES:
        raise ScramError("the proof has the wrong length")
    return ClientFinal(
        channel_binding=unb64(cbind, "the channel binding"),
        nonce=nonce,
        proof=proof,
        without_proof=text[: text.rindex(",p=")],
    )


def expected_channel_binding(first: ClientFirst, binding: bytes | None) -> bytes:
    """What ``c=`` must decode to: the gs2 header, followed by the binding when bound."""
    return first.gs2_header.encode("ascii") + ((binding or b"") if first.bound else b"")


def verify(
    *, verifier: Verifier, client_first_bare: str, server_first_message: str, final: ClientFinal
) -> str | None:
    """The server-final-message (``v=…``) when the proof is right, else None (constant time)."""
    auth_message = f"{client_first_bare},{server_first_message},{final.without_proof}".encode()
    client_signature = _hmac(verifier.stored_key, auth_message)
    client_key = bytes(a ^ b for a, b in zip(final.proof, client_signature, strict=True))
    if not hmac.compare_digest(hashlib.sha512(client_key).digest(), verifier.stored_key):
        return None
    return f"v={b64(_hmac(verifier.server_key, auth_message))}"
