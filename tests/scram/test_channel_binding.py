"""``tls-server-end-point`` (RFC 5929 §4, spec/scram.md §7): the hash of the certificate's DER with
the hash of its signature algorithm; certificates without a single hash (Ed25519) have none. The
expected values are computed here independently (tests/scram/client.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from sessions_app.auth.channel_binding import certificate_binding, server_binding
from tests.scram.client import der_of, end_point_binding, make_certificate


@pytest.mark.parametrize(
    ("kind", "digest"),
    [
        ("ecdsa", hashes.SHA256()),
        ("ecdsa", hashes.SHA384()),
        ("rsa", hashes.SHA256()),
        ("rsa", hashes.SHA512()),
    ],
)
def test_the_binding_hashes_the_der_with_the_signature_hash(
    tmp_path: Path, kind: str, digest: hashes.HashAlgorithm
) -> None:
    cert, _ = make_certificate(tmp_path, kind=kind, digest=digest)
    der = der_of(cert)
    expected = end_point_binding(der, digest)
    assert len(expected) == digest.digest_size
    assert certificate_binding(cert.read_bytes()) == expected  # PEM
    assert certificate_binding(der) == expected  # DER


def test_a_certificate_without_a_single_hash_has_no_binding(tmp_path: Path) -> None:
    cert, _ = make_certificate(tmp_path, kind="ed25519")
    assert certificate_binding(cert.read_bytes()) is None


def test_the_server_binding_follows_the_setting_and_the_file(tmp_path: Path, settings: Any) -> None:
    settings.SESSIONS_TLS_BINDING_CERT = ""
    assert server_binding() is None
    cert, _ = make_certificate(tmp_path)
    settings.SESSIONS_TLS_BINDING_CERT = str(cert)
    assert server_binding() == end_point_binding(der_of(cert), hashes.SHA256())
    # The certificate renewed in place: the new binding (the file is read again when it changes).
    renewed, _ = make_certificate(tmp_path, name="renewed")
    stat = cert.stat()
    cert.write_bytes(renewed.read_bytes())
    os.utime(cert, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert server_binding() == end_point_binding(der_of(renewed), hashes.SHA256())
    settings.SESSIONS_TLS_BINDING_CERT = str(tmp_path / "missing.pem")
    assert server_binding() is None
    (tmp_path / "garbage.pem").write_text("not a certificate")
    settings.SESSIONS_TLS_BINDING_CERT = str(tmp_path / "garbage.pem")
    assert server_binding() is None
