"""``tls-server-end-point`` channel binding (RFC 5929 §4) of the certificate clients see.

A SCRAM exchange bound with ``p=tls-server-end-point`` proves that client and server saw the same
TLS certificate: the binding is the hash of the certificate's DER with the hash of its signature
algorithm, except that MD5 and SHA-1 become SHA-256; a certificate without a single hash (Ed25519,
Ed448) has no binding.

The certificate is ``SESSIONS_TLS_BINDING_CERT`` (PEM or DER): ``bin/serve`` points it at
``TLS_CERT`` when it serves TLS itself; behind a TLS proxy the operator points it at the proxy's
certificate. Empty: no binding, and bound exchanges are refused.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from sessions_app import conf

logger = logging.getLogger(__name__)

_WEAK = (hashes.MD5, hashes.SHA1)


def certificate_binding(data: bytes) -> bytes | None:
    """The ``tls-server-end-point`` binding of a certificate given as PEM or DER bytes."""
    if data.lstrip().startswith(b"-----BEGIN"):
        certificate = x509.load_pem_x509_certificate(data)
    else:
        certificate = x509.load_der_x509_certificate(data)
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None:
        return None  # Ed25519 / Ed448: no binding defined
    if isinstance(algorithm, _WEAK):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate.public_bytes(Encoding.DER))
    return digest.finalize()


@lru_cache(maxsize=4)
def _binding_of_file(path: str, mtime_ns: int) -> bytes | None:
    try:
        return certificate_binding(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        logger.error("SESSIONS_TLS_BINDING_CERT %s cannot be read as a certificate: %s", path, exc)
        return None


def server_binding() -> bytes | None:
    """The binding of the configured certificate (re-read when the file changes), or None."""
    path = str(conf.get("SESSIONS_TLS_BINDING_CERT") or "")
    if not path:
        return None
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError as exc:
        logger.error("SESSIONS_TLS_BINDING_CERT %s cannot be read: %s", path, exc)
        return None
    return _binding_of_file(path, mtime)
