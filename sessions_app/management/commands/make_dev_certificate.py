"""``manage.py make_dev_certificate [--out-dir DIR] [--force]``: a self-signed TLS pair for development.

Writes ``dev-cert.pem`` and ``dev-key.pem`` (into ``var/`` by default) for ``127.0.0.1``, ``::1``
and ``localhost``, so that a newcomer can serve ``https://`` and ``wss://`` in one step
(``TLS_CERT=var/dev-cert.pem TLS_KEY=var/dev-key.pem ./bin/serve``, docs/operations.md "Serving TLS") and try
the official client's default SCRAM login, which binds the exchange to the server's certificate.

The certificate is what a development server needs and nothing more: an ECDSA P-256 key, a SHA-256
signature (so its ``tls-server-end-point`` binding is the SHA-256 of its DER, the fingerprint
printed), 90 days of validity, ``CA:FALSE`` and the ``serverAuth`` extended key usage. It is no CA:
a client trusts exactly this certificate (``curl --cacert var/dev-cert.pem``), and a new one must be
trusted again. Never use it in production.

The key file is 0600 and is written through a private temporary file and renamed, so it is never
readable by others, not even for a moment; a directory the command creates is 0700 (an existing
``--out-dir`` keeps its mode, except the project's own ``var/``, which is always 0700 as
``bin/serve`` keeps it). The certificate is public (0644). Existing files are replaced only with
``--force``. The key is never printed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from sessions_app.management.cli import RegistryCommand, quoted

CERT_NAME = "dev-cert.pem"
KEY_NAME = "dev-key.pem"
VALIDITY = dt.timedelta(days=90)
#: Backdated a little: a client whose clock is slightly behind still accepts a brand-new certificate.
CLOCK_SKEW = dt.timedelta(minutes=5)
DNS_NAMES = ("localhost",)
IP_ADDRESSES = ("127.0.0.1", "::1")


def dev_certificate(*, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed certificate for the loopback names, and its private key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Session registry (development only)"),
        ]
    )
    alternative_names: list[x509.GeneralName] = [x509.DNSName(dns) for dns in DNS_NAMES]
    alternative_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in IP_ADDRESSES]
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def fingerprint(certificate: x509.Certificate) -> str:
    """``AB:CD:…``: the SHA-256 of the DER, as ``openssl x509 -fingerprint -sha256`` shows it."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a 0600 temporary file in the same directory, then rename:
    a half-written file is never seen, and a symlink at ``path`` is replaced, not followed."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (what a shell line needs)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Command(RegistryCommand):
    help = (
        "Write a self-signed development certificate and key for 127.0.0.1, ::1 and localhost "
        f"({CERT_NAME} and {KEY_NAME}, into var/ by default) for serving HTTPS and WSS with "
        "TLS_CERT/TLS_KEY ./bin/serve. Exit status 0, 1 with a one-line reason on stderr (files "
        "exist without --force, directory not writable), 2 for usage errors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--out-dir",
            type=Path,
            default=None,
            help="directory of the two files (default: the project's var/; created 0700 if missing)",
        )
        parser.add_argument(
            "--force", action="store_true", help=f"replace an existing {CERT_NAME} / {KEY_NAME}"
        )

    def handle(self, *args: Any, out_dir: Path | None, force: bool, **options: Any) -> None:
        project_var = (Path(settings.BASE_DIR) / "var").resolve()
        directory = (out_dir or project_var).absolute()
        cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
        if directory.exists() and not directory.is_dir():
            raise CommandError(f"--out-dir: {quoted(str(directory))} is not a directory")
        if not force:
            for path in (cert_path, key_path):
                if path.exists() or path.is_symlink():
                    raise CommandError(f"{quoted(_shown(path))} already exists: use --force to replace it")
        certificate, key = dev_certificate(now=dt.datetime.now(dt.UTC))
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if directory.resolve() == project_var:
                directory.chmod(0o700)  # as bin/serve keeps it, also when an older release made it 0755
            _write_private(key_path, key_pem, 0o600)
            _write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            where = quoted(str(exc.filename or directory))
            raise CommandError(f"cannot write the certificate: {where}: {reason}") from None
        cert_shown, key_shown = _shown(cert_path), _shown(key_path)
        names = ", ".join((*IP_ADDRESSES, *DNS_NAMES))
        expires = certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        self.stdout.write(f"Certificate: {cert_shown} (self-signed for {names}, valid until {expires})")
        self.stdout.write(f"Key:         {key_shown} (mode 0600; keep it private)")
        self.stdout.write(f"SHA-256 fingerprint: {fingerprint(certificate)}")
        self.stdout.write("Serve HTTPS and WSS with it:")
        cert_arg, key_arg = shlex.quote(cert_shown), shlex.quote(key_shown)
        self.stdout.write(f"  TLS_CERT={cert_arg} TLS_KEY={key_arg} ./bin/serve")
        self.stdout.write(
            f"Clients trust this certificate alone, e.g. curl --cacert {cert_arg} https://127.0.0.1:8000/"
        )
