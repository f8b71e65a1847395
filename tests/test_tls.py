"""TLS serving (issue 15 item 3): the development certificate, the ``tls-server-end-point`` binding of
certificates, and gunicorn with the project's uvicorn worker serving HTTPS and WSS on its TCP bind
while its unix socket stays plain; ``bin/serve`` refuses half a TLS configuration.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import ipaddress
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.management import CommandError, call_command
from websockets.sync.client import connect, unix_connect

from sessions_app.auth.channel_binding import certificate_binding, server_binding
from tests.integration import servers
from tests.integration.servers import Server, assert_serve_refuses, free_port, running_servers
from tests.ws.helpers import settled

ROOT = Path(__file__).resolve().parents[1]

# Made once with OpenSSL (cryptography refuses to sign with SHA-1 or MD5): self-signed, valid to 2126.
SHA1_SIGNED = b"""-----BEGIN CERTIFICATE-----
MIIBpDCCAUqgAwIBAgIUR4PdxNHPsGu8igpQ84MF4QrYTkkwCQYHKoZIzj0EATAn
MSUwIwYDVQQDDBxzaGExIHNpZ25lZCB0ZXN0IGNlcnRpZmljYXRlMCAXDTI2MTIw
NTEyMzQ0MVoYDzIxMjYxMTExMTIzNDQxWjAnMSUwIwYDVQQDDBxzaGExIHNpZ25l
ZCB0ZXN0IGNlcnRpZmljYXRlMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEoTjq
3pM1jz7ik5XtBLr24V1gW0MBJNhaeE1LtIs2vqoQYMOZGccq+rpO/+cABNWa6m0M
gfV9Vwi0vTA6amh4RKNTMFEwHQYDVR0OBBYEFI168mfDzNCt8ArAu5NTmPq3KQr1
MB8GA1UdIwQYMBaAFI168mfDzNCt8ArAu5NTmPq3KQr1MA8GA1UdEwEB/wQFMAMB
Af8wCQYHKoZIzj0EAQNJADBGAiEAqwyfuUEF7QFDNNT9T+ft7RIWp36ZXtmLgT+x
BSOhV0kCIQD19+5oXYj4AoYWXa+BrkScY4J0TatatuEUxueV1i3Naw==
-----END CERTIFICATE-----
"""
MD5_SIGNED = b"""-----BEGIN CERTIFICATE-----
MIICKjCCAZOgAwIBAgIUBGE4qC4X8ZCbspfZ0O4HWMZ4JTwwDQYJKoZIhvcNAQEE
BQAwJjEkMCIGA1UEAwwbbWQ1IHNpZ25lZCB0ZXN0IGNlcnRpZmljYXRlMCAXDTI2
MTIwNTEyMzQ0M1oYDzIxMjYxMTExMTIzNDQzWjAmMSQwIgYDVQQDDBttZDUgc2ln
bmVkIHRlc3QgY2VydGlmaWNhdGUwgZ8wDQYJKoZIhvcNAQEBBQADgY0AMIGJAoGB
ALf5B0C+/VvmdcuEYZ6eIKf79nn7DYXAI5wJdjw4G33xcqzdugcO+XPYOxRYnvvQ
N3Ruj4cMELk70xH7zI6EXMpTxnCkJz+UnUriN5sfiMTG7v3/PhR8v5+RCZL9hyVy
awmYieRmobro7z+KU6LgYPSpyOfPaPuyA4mvfKMnUW0JAgMBAAGjUzBRMB0GA1Ud
DgQWBBTwQkLqKXR+mEhAwNlpuM1yfXfIazAfBgNVHSMEGDAWgBTwQkLqKXR+mEhA
wNlpuM1yfXfIazAPBgNVHRMBAf8EBTADAQH/MA0GCSqGSIb3DQEBBAUAA4GBADi6
VuThzZV2toXltvSoN+fZQUpV6cA36aB2L8f/NcT1krRHVef8rxWhtUdR+PEkdfB0
t9+yoh7orNVkQpRDia2AJOiAiGrhTMZ8+YF8JBvAsOSdLS/A2aeXq5HlLfC2DgE1
JL1OqDKU93KwLfwrmJbQwTjAJ+g9mtUHh9UYuLww
-----END CERTIFICATE-----
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make_certificate(*args: str) -> str:
    out = StringIO()
    call_command("make_dev_certificate", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def self_signed(key: Any, algorithm: hashes.HashAlgorithm | None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "binding test")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, algorithm)
    )


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


# --- manage.py make_dev_certificate ---------------------------------------------------------------


def test_dev_certificate_is_a_loopback_server_certificate_with_a_private_key(tmp_path: Path) -> None:
    out_dir = tmp_path / "new" / "certs"
    output = make_certificate("--out-dir", str(out_dir))
    cert_path, key_path = out_dir / "dev-cert.pem", out_dir / "dev-key.pem"
    assert mode(out_dir) == 0o700
    assert mode(key_path) == 0o600
    certificate = load(cert_path)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == certificate.public_key()
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    assert certificate.issuer == certificate.subject  # self-signed
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    now = dt.datetime.now(dt.UTC)
    assert certificate.not_valid_before_utc <= now
    assert now + dt.timedelta(days=89) < certificate.not_valid_after_utc <= now + dt.timedelta(days=91)
    # Paths, the next command and the fingerprint; never the key.
    fingerprint = hashlib.sha256(der(certificate)).hexdigest()
    assert ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper() in output
    assert f"TLS_CERT={cert_path} TLS_KEY={key_path} ./bin/serve" in output
    assert "PRIVATE KEY" not in output
    assert key_path.read_text().split("-----")[2].strip().splitlines()[0] not in output


def test_dev_certificate_goes_to_the_projects_var_by_default(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BASE_DIR = tmp_path
    (tmp_path / "var").mkdir(mode=0o755)
    (tmp_path / "var").chmod(0o755)  # as an older release left it: made private, as bin/serve does
    monkeypatch.chdir(tmp_path)
    output = make_certificate()
    assert mode(tmp_path / "var") == 0o700
    assert (tmp_path / "var" / "dev-cert.pem").is_file()
    assert "  TLS_CERT=var/dev-cert.pem TLS_KEY=var/dev-key.pem ./bin/serve\n" in output


def test_dev_certificate_leaves_the_mode_of_an_existing_out_dir(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    make_certificate("--out-dir", str(tmp_path))
    assert mode(tmp_path) == 0o755
    assert mode(tmp_path / "dev-key.pem") == 0o600


@pytest.mark.parametrize("existing", ["dev-cert.pem", "dev-key.pem"])
def test_dev_certificate_refuses_to_overwrite_without_force(tmp_path: Path, existing: str) -> None:
    make_certificate("--out-dir", str(tmp_path))
    if existing == "dev-cert.pem":
        (tmp_path / "dev-key.pem").unlink()
    else:
        (tmp_path / "dev-cert.pem").unlink()
    before = (tmp_path / existing).read_bytes()
    with pytest.raises(CommandError, match=f"{existing}' already exists: use --force") as info:
        make_certificate("--out-dir", str(tmp_path))
    assert info.value.returncode == 1
    assert (tmp_path / existing).read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == [existing]


def test_dev_certificate_force_replaces_both_files(tmp_path: Path) -> None:
    make_certificate("--out-dir", str(tmp_path))
    old_cert, old_key = (tmp_path / "dev-cert.pem").read_bytes(), (tmp_path / "dev-key.pem").read_bytes()
    (tmp_path / "dev-key.pem").chmod(0o644)
    make_certificate("--out-dir", str(tmp_path), "--force")
    assert (tmp_path / "dev-cert.pem").read_bytes() != old_cert
    assert (tmp_path / "dev-key.pem").read_bytes() != old_key
    assert mode(tmp_path / "dev-key.pem") == 0o600
    key = serialization.load_pem_private_key((tmp_path / "dev-key.pem").read_bytes(), password=None)
    assert key.public_key() == load(tmp_path / "dev-cert.pem").public_key()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dev-cert.pem", "dev-key.pem"]


def test_dev_certificate_out_dir_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(CommandError, match="is not a directory"):
        make_certificate("--out-dir", str(tmp_path / "file"))


def test_dev_certificate_refusal_is_one_line_and_status_1(tmp_path: Path) -> None:
    make_certificate("--out-dir", str(tmp_path))
    done = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "manage.py", "make_dev_certificate", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SECRET_KEY": "x", "DJANGO_SETTINGS_MODULE": "project.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("CommandError: ")
    assert "use --force" in done.stderr


# --- tls-server-end-point binding of a certificate ------------------------------------------------


def test_binding_of_an_rsa_sha256_certificate_is_the_sha256_of_its_der() -> None:
    certificate = self_signed(rsa.generate_private_key(public_exponent=65537, key_size=2048), hashes.SHA256())
    expected = hashlib.sha256(der(certificate)).digest()
    assert certificate_binding(pem(certificate)) == expected
    assert certificate_binding(der(certificate)) == expected


def test_binding_of_an_ecdsa_sha384_certificate_is_the_sha384_of_its_der() -> None:
    certificate = self_signed(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384())
    expected = hashlib.sha384(der(certificate)).digest()
    assert certificate_binding(pem(certificate)) == expected
    assert certificate_binding(der(certificate)) == expected


@pytest.mark.parametrize(("data", "weak"), [(SHA1_SIGNED, hashes.SHA1), (MD5_SIGNED, hashes.MD5)])
def test_binding_of_a_sha1_or_md5_signed_certificate_uses_sha256(data: bytes, weak: type) -> None:
    certificate = x509.load_pem_x509_certificate(data)
    assert isinstance(certificate.signature_hash_algorithm, weak)
    expected = hashlib.sha256(der(certificate)).digest()
    assert certificate_binding(data) == expected
    assert certificate_binding(der(certificate)) == expected


def test_an_ed25519_certificate_has_no_binding() -> None:
    certificate = self_signed(ed25519.Ed25519PrivateKey.generate(), None)
    assert certificate_binding(pem(certificate)) is None
    assert certificate_binding(der(certificate)) is None


def test_binding_of_the_dev_certificate_is_its_sha256_fingerprint(tmp_path: Path, settings: Any) -> None:
    make_certificate("--out-dir", str(tmp_path))
    certificate = load(tmp_path / "dev-cert.pem")
    assert certificate_binding((tmp_path / "dev-cert.pem").read_bytes()) == certificate.fingerprint(
        hashes.SHA256()
    )
    settings.SESSIONS_TLS_BINDING_CERT = str(tmp_path / "dev-cert.pem")
    assert server_binding() == certificate.fingerprint(hashes.SHA256())
    settings.SESSIONS_TLS_BINDING_CERT = ""
    assert server_binding() is None
    settings.SESSIONS_TLS_BINDING_CERT = str(tmp_path / "missing.pem")
    assert server_binding() is None


# --- bin/serve ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tls_env", "named"),
    [
        ({"TLS_CERT": "CERT"}, "TLS_KEY"),
        ({"TLS_KEY": "KEY"}, "TLS_CERT"),
        ({"TLS_CERT": "CERT", "TLS_KEY": "missing-key.pem"}, "TLS_KEY=missing-key.pem"),
        ({"TLS_CERT": "missing-cert.pem", "TLS_KEY": "KEY"}, "TLS_CERT=missing-cert.pem"),
    ],
)
def test_bin_serve_refuses_half_a_tls_configuration(
    tmp_path: Path, tls_env: dict[str, str], named: str
) -> None:
    make_certificate("--out-dir", str(tmp_path))
    files = {"CERT": str(tmp_path / "dev-cert.pem"), "KEY": str(tmp_path / "dev-key.pem")}
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"TLS_CERT", "TLS_KEY", "SOCKET", "SESSIONS_TLS_BINDING_CERT"}
    }
    # Were the refusal to fail, nothing of this checkout would be touched: its own port, database and key.
    env |= {
        "BIND": f"127.0.0.1:{free_port()}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY": "x",
        "CONTROL_SOCKET": str(tmp_path / "gunicorn.ctl"),
    }
    env |= {key: files.get(value, value) for key, value in tls_env.items()}
    assert_serve_refuses(env, tmp_path, named)
    assert not (tmp_path / "db.sqlite3").exists()


# --- gunicorn + PeerCredUvicornWorker with --certfile/--keyfile -----------------------------------


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls") / "certs"
    call_command("make_dev_certificate", "--out-dir", str(directory), stdout=StringIO())
    return directory / "dev-cert.pem", directory / "dev-key.pem"


@pytest.fixture(scope="module")
def socket_path() -> Iterator[Path]:
    path = Path("/tmp") / f"tls-{free_port()}.sock"  # short: AF_UNIX paths are limited to 108 bytes
    yield path
    path.unlink(missing_ok=True)


def client_context(certificate: Path) -> ssl.SSLContext:
    """What a client does with the dev certificate: trust it alone, check the name (127.0.0.1)."""
    return ssl.create_default_context(cafile=str(certificate))


@pytest.fixture(scope="module")
def echo_server(
    tls_pair: tuple[Path, Path], socket_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """gunicorn with the project's worker and TLS, serving `tests.integration.scope_echo`:
    ``binds[0]`` is TCP on 127.0.0.1, ``binds[1]`` the unix socket."""
    tmp = tmp_path_factory.mktemp("echo")
    binds = [f"127.0.0.1:{free_port()}", f"unix:{socket_path}"]
    command = servers.gunicorn_command(binds, asgi=True)
    command[command.index("project.asgi:application")] = "tests.integration.scope_echo:application"
    command += ["--certfile", str(tls_pair[0]), "--keyfile", str(tls_pair[1])]
    command += ["--control-socket", str(tmp / "gunicorn.ctl")]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DJANGO_SECRET_KEY": "x"}
    log = tmp / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(binds, process, log, client_context(tls_pair[0]))
    try:
        servers._ready(server, time.monotonic() + servers.STARTUP_TIMEOUT)
        yield server
    finally:
        servers._stop(process)


def get(server: Server, via: str | None = None) -> dict[str, Any]:
    connection = server.connect(via)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        connection.close()


def test_tcp_serves_https_and_wss(echo_server: Server, tls_pair: tuple[Path, Path]) -> None:
    assert get(echo_server) == {"type": "http", "scheme": "https", "peercred": False}
    url = f"wss://{echo_server.bind}/api/current"
    with connect(url, ssl=client_context(tls_pair[0]), open_timeout=5, close_timeout=2) as ws:
        assert json.loads(ws.recv(5)) == {"type": "websocket", "scheme": "wss", "peercred": False}


def test_tcp_refuses_plain_http_when_tls_is_on(echo_server: Server) -> None:
    host, _, port = echo_server.bind.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/")
        # No HTTP answer: the bytes are not a TLS handshake, so the server drops the connection.
        with pytest.raises((http.client.HTTPException, OSError)):
            connection.getresponse()
    finally:
        connection.close()


def test_unix_socket_stays_plain_http_and_ws(echo_server: Server, socket_path: Path) -> None:
    assert get(echo_server, via=f"unix:{socket_path}") == {"type": "http", "scheme": "http", "peercred": True}
    with unix_connect(str(socket_path), "ws://localhost/api/current", open_timeout=5, close_timeout=2) as ws:
        assert json.loads(ws.recv(5)) == {"type": "websocket", "scheme": "ws", "peercred": True}
    # A TLS handshake on the unix socket fails: nothing there speaks TLS.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(5)
        raw.connect(str(socket_path))
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with pytest.raises((ssl.SSLError, OSError)):
            context.wrap_socket(raw, server_hostname="localhost").close()


@pytest.fixture(scope="module")
def app_server(
    django_db_setup: Any,
    django_db_blocker: Any,
    tls_pair: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """The served configuration (``bin/serve`` with ``TLS_CERT``/``TLS_KEY`` and ``SOCKET``) on the
    test database: ``binds[0]`` is HTTPS/WSS on 127.0.0.1, ``binds[1]`` the plain unix socket."""
    tmp = tmp_path_factory.mktemp("tls-app")
    socket_file = Path("/tmp") / f"tls-app-{free_port()}.sock"
    binds = [f"127.0.0.1:{free_port()}", f"unix:{socket_file}"]
    with django_db_blocker.unblock(), running_servers([binds], tmp, asgi=True, tls=tls_pair) as (started,):
        yield started


@pytest.mark.django_db(transaction=True)
def test_the_app_answers_core_ping_over_https_wss_and_the_plain_unix_socket(
    app_server: Server, tls_pair: tuple[Path, Path]
) -> None:
    response, data, _ = app_server.post("core.ping")
    assert json.loads(data)["result"] == "pong"
    # Django saw a secure request (scope scheme https): HSTS is sent over TLS only.
    assert response.getheader("Strict-Transport-Security", "").startswith("max-age=")
    url = f"wss://{app_server.bind}/api/current"
    with settled(connect(url, ssl=client_context(tls_pair[0]), open_timeout=5, close_timeout=2)) as rpc:
        assert rpc.call("core.ping") == "pong"
    response, data, _ = app_server.post("core.ping", via=app_server.binds[1])
    assert json.loads(data)["result"] == "pong"
    assert response.getheader("Strict-Transport-Security") is None
