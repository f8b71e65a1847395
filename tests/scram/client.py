"""A SCRAM-SHA-512 client written from RFC 5802 with the TrueNAS rules of ``../shared/spec/scram.md``,
independent of the service's own ``sessions_app.auth.scram``, and a self-signed certificate maker.

The client is what ``truenas_api_client`` does on ``login_with_api_key``: ``<user>:<key id>`` as the
name, the key's secret (the text after its first ``-``) as the password, a 32-byte client nonce, and
the TrueNAS nonce rule: the server's ``r=`` is base64 of the raw client nonce followed by 32 raw server
bytes (not the textual concatenation of RFC 5802). It checks everything a careful client checks --
the nonce prefix, the salt, the iteration count, and the server's ``v=`` signature -- and can be made
to send wrong messages (another ``c=``, another ``r=``, a proof of its choice) for the failure tests.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

GS2_NONE = "n,,"
GS2_BOUND = "p=tls-server-end-point,,"
CLIENT_FIRST, CLIENT_FINAL = "CLIENT_FIRST_MESSAGE", "CLIENT_FINAL_MESSAGE"
AUTH_ERR = {"response_type": "AUTH_ERR"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha512).digest()


@lru_cache(maxsize=64)
def salted_password(secret: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 ``Hi()`` with HMAC-SHA-512 (cached: the spec's vector costs 500 000 rounds)."""
    return hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, iterations, 64)


def first_params(rfc_str: str) -> dict[str, Any]:
    return {"mechanism": "SCRAM", "scram_type": CLIENT_FIRST, "rfc_str": rfc_str}


def final_params(rfc_str: str) -> dict[str, Any]:
    return {"mechanism": "SCRAM", "scram_type": CLIENT_FINAL, "rfc_str": rfc_str}


@dataclass
class ServerFirst:
    combined_nonce: str
    salt: bytes
    iterations: int


class ScramClient:
    """One exchange of the official client's shape, for ``username`` with ``api_key`` (``"<id>-<secret>"``).

    ``binding``: the ``tls-server-end-point`` bytes of the certificate the client saw (None: unbound,
    ``n,,``); ``gs2`` overrides the header (``y,,``), ``nonce`` the 32 random bytes (the spec's vector).
    """

    def __init__(
        self,
        username: str,
        api_key: str,
        *,
        binding: bytes | None = None,
        gs2: str | None = None,
        nonce: bytes | None = None,
    ) -> None:
        key_id, _, secret = api_key.partition("-")
        self.secret = secret
        self.binding = binding
        self.gs2 = gs2 if gs2 is not None else (GS2_BOUND if binding is not None else GS2_NONE)
        self.nonce = nonce if nonce is not None else os.urandom(32)
        self.bare = f"n={username}:{key_id},r={b64(self.nonce)}"
        self.expected_server_final: str | None = None

    # --- messages -----------------------------------------------------------------------------------

    def client_first(self) -> str:
        return self.gs2 + self.bare

    def parse_server_first(self, message: str) -> ServerFirst:
        """The server-first-message, checked as the official client checks it."""
        parts = message.split(",")
        assert [p[:2] for p in parts] == ["r=", "s=", "i="], message
        combined, salt_text, iterations_text = (p[2:] for p in parts)
        raw = unb64(combined)
        assert b64(raw) == combined, "combined nonce is not canonical base64"
        assert len(raw) == len(self.nonce) + 32, f"combined nonce of {len(raw)} bytes"
        assert raw[: len(self.nonce)] == self.nonce, "the combined nonce does not start with ours (TN rule)"
        salt = unb64(salt_text)
        assert len(salt) == 16, salt_text
        assert iterations_text.isdigit(), iterations_text
        return ServerFirst(combined, salt, int(iterations_text))

    def client_final(
        self,
        server_first: str,
        *,
        channel_binding: bytes | None = None,
        nonce: str | None = None,
        secret: str | None = None,
    ) -> str:
        """The client-final-message; ``channel_binding`` (the decoded ``c=``), ``nonce`` (``r=``) and
        ``secret`` replace what an honest client would send."""
        parsed = self.parse_server_first(server_first)
        salted = salted_password(
            secret if secret is not None else self.secret, parsed.salt, parsed.iterations
        )
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha512(client_key).digest()
        server_key = _hmac(salted, b"Server Key")
        cbind = channel_binding
        if cbind is None:
            cbind = self.gs2.encode("ascii") + (self.binding or b"")
        without_proof = f"c={b64(cbind)},r={nonce if nonce is not None else parsed.combined_nonce}"
        auth_message = f"{self.bare},{server_first},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.expected_server_final = f"v={b64(_hmac(server_key, auth_message))}"
        return f"{without_proof},p={b64(proof)}"

    # --- the two calls ----------------------------------------------------------------------------

    def first(self, call: Callable[[dict[str, Any]], Any]) -> str:
        """Send client-first through ``call`` (``auth.login_ex``'s result); the server-first-message."""
        answer = call(first_params(self.client_first()))
        assert_server_first(answer)
        return str(answer["rfc_str"])

    def login(self, call: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """The whole exchange through ``call``; the SERVER_FINAL_RESPONSE, its ``v=`` verified."""
        server_first = self.first(call)
        answer = call(final_params(self.client_final(server_first)))
        self.check_server_final(answer)
        return dict(answer)

    def check_server_final(self, answer: Any) -> None:
        assert isinstance(answer, dict), answer
        assert set(answer) == {"response_type", "scram_type", "rfc_str", "user_info"}, answer
        assert answer["response_type"] == "SCRAM_RESPONSE", answer
        assert answer["scram_type"] == "SERVER_FINAL_RESPONSE", answer
        assert answer["rfc_str"] == self.expected_server_final, "the server's signature is wrong"
        assert isinstance(answer["user_info"], dict), answer


def assert_server_first(answer: Any) -> None:
    assert isinstance(answer, dict), answer
    assert answer.keys() == {"response_type", "scram_type", "rfc_str", "user_info"}, answer
    assert answer["response_type"] == "SCRAM_RESPONSE", answer
    assert answer["scram_type"] == "SERVER_FIRST_RESPONSE", answer
    assert answer["user_info"] is None, answer


# --- certificates -------------------------------------------------------------------------------------


def make_certificate(
    directory: Path, *, kind: str = "ecdsa", digest: hashes.HashAlgorithm | None = None, name: str = "tls"
) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost and its key, as PEM files in ``directory``.

    ``kind``: ``ecdsa`` (P-256), ``rsa`` (2048) or ``ed25519``; ``digest``: the signature hash
    (SHA-256 by default; none for Ed25519).
    """
    key: Any
    if kind == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, None if kind == "ed25519" else (digest or hashes.SHA256()))
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def der_of(cert_path: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)


def end_point_binding(der: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    """RFC 5929 ``tls-server-end-point``: the certificate's DER hashed with ``algorithm``, computed
    here independently of the service."""
    digest = hashes.Hash(algorithm)
    digest.update(der)
    return digest.finalize()
