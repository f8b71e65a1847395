"""docs/nginx.conf, as documented, in front of the served configuration (issue 20).

The file is used as shipped, included in a minimal main configuration, with only what a deployment
replaces substituted: the app hosts' addresses, the listening ports (free ones on 127.0.0.1, not 80
and 443) and the certificate files (a development pair from ``manage.py make_dev_certificate``).
Every substituted text must be in the file exactly once, so the test breaks when the document
changes under it. Then ``nginx -t`` must accept it, and nginx started with it must carry a
WebSocket login (TLS from the client to nginx, plain HTTP to gunicorn, the app believing nginx's
``X-Forwarded-Proto`` and ``X-Forwarded-For``) and ``/healthz``.

Skipped when nginx is not installed (``apt-get install nginx-light``; ``.ci/run`` installs it).
nginx runs with its prefix, pid file, logs and temporary directories in the test's directory, so it
needs no root and touches nothing of a system nginx.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from websockets.sync.client import connect

from tests.conftest import PASSWORD
from tests.integration.servers import Server, create_user, free_port, running_servers
from tests.ws.helpers import TIMEOUT, settled

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED = ROOT / "docs" / "nginx.conf"
NGINX = shutil.which("nginx") or next(
    (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)), None
)
STARTUP_TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx-light; .ci/run installs it)"
)


@dataclass(frozen=True)
class Proxy:
    """nginx's files in one directory, and the ports it listens on."""

    directory: Path
    https_port: int
    http_port: int
    certificate: Path

    @property
    def main(self) -> Path:
        return self.directory / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    def command(self, *extra: str) -> list[str]:
        assert NGINX is not None
        prefix = ["-p", str(self.directory), "-e", str(self.error_log), "-c", str(self.main)]
        return [NGINX, *prefix, *extra]

    def client_tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certificate))


def substitute(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each key replaced; each must occur exactly once (or the document changed)."""
    for old, new in replacements.items():
        count = text.count(old)
        assert count == 1, f"docs/nginx.conf: expected {old!r} once, found it {count} times"
        text = text.replace(old, new)
    return text


def site_configuration(upstream: str, https_port: int, http_port: int, cert: Path, key: Path) -> str:
    """docs/nginx.conf for this machine: one app host (``upstream``), loopback ports, the dev pair."""
    text = DOCUMENTED.read_text()
    # The three app hosts of the example become the one gunicorn of the test.
    hosts = re.findall(r"^\s*server (10\.0\.1\.1[123]:8000)\b.*$", text, flags=re.MULTILINE)
    assert hosts == ["10.0.1.11:8000", "10.0.1.12:8000", "10.0.1.13:8000"], hosts
    text = re.sub(r"^\s*server 10\.0\.1\.1[23]:8000\b.*\n", "", text, flags=re.MULTILINE)
    return substitute(
        text,
        {
            "10.0.1.11:8000": upstream,
            "listen 80;": f"listen 127.0.0.1:{http_port};",
            "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
            "/etc/ssl/sessions/fullchain.pem": str(cert),
            "/etc/ssl/sessions/privkey.pem": str(key),
        },
    )


def main_configuration(directory: Path) -> str:
    """What /etc/nginx/nginx.conf would be: everything in ``directory``, the site file included."""
    temporary = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} warn;
events {{
    worker_connections 64;
}}
http {{
    access_log {directory / "access.log"};
{temporary}
    include {directory / "sessions.conf"};
}}
"""


@pytest.fixture(scope="module")
def proxy_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A directory for nginx, and a certificate for 127.0.0.1 with its key (``make_dev_certificate``)."""
    directory = tmp_path_factory.mktemp("nginx")
    call_command("make_dev_certificate", "--out-dir", str(directory / "tls"), stdout=StringIO())
    return directory, directory / "tls" / "dev-cert.pem", directory / "tls" / "dev-key.pem"


def write_proxy(files: tuple[Path, Path, Path], upstream: str) -> Proxy:
    directory, cert, key = files
    proxy = Proxy(directory, free_port(), free_port(), cert)
    (directory / "sessions.conf").write_text(
        site_configuration(upstream, proxy.https_port, proxy.http_port, cert, key)
    )
    proxy.main.write_text(main_configuration(directory))
    return proxy


def test_documented_configuration_passes_nginx_t(proxy_files: tuple[Path, Path, Path]) -> None:
    proxy = write_proxy(proxy_files, f"127.0.0.1:{free_port()}")
    done = subprocess.run(  # noqa: S603 - fixed argv
        proxy.command("-t"), capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr, done.stderr
    assert "test is successful" in done.stderr, done.stderr


def get(proxy: Proxy, path: str, *, tls: bool = True) -> tuple[http.client.HTTPResponse, bytes]:
    """One GET through nginx: HTTPS (trusting the test certificate) or plain HTTP."""
    if tls:
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", proxy.https_port, timeout=5, context=proxy.client_tls()
        )
    else:
        connection = http.client.HTTPConnection("127.0.0.1", proxy.http_port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


@pytest.fixture
def nginx(proxy_files: tuple[Path, Path, Path], served: Server) -> Iterator[Proxy]:
    """nginx in the foreground with the documented site in front of ``served``; ready when it answers
    ``/healthz`` over TLS; always stopped."""
    proxy = write_proxy(proxy_files, served.bind)
    log = proxy.directory / "nginx.out"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            proxy.command("-g", "daemon off;"), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert process.poll() is None, log.read_text() + proxy.error_log.read_text()
            try:
                if get(proxy, "/healthz")[0].status == 200:
                    break
            except OSError:  # not listening yet
                pass
            assert time.monotonic() < deadline, (
                "nginx did not answer /healthz:\n" + proxy.error_log.read_text()
            )
            time.sleep(0.05)
        yield proxy
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def served(
    django_db_setup: Any,
    django_db_blocker: Any,
    tmp_path: Path,
    proxy_files: tuple[Path, Path, Path],
) -> Iterator[Server]:
    """The served configuration behind the proxy, set up as docs/operations.md says: nginx trusted
    for the client address and the scheme, SCRAM's binding to the certificate nginx presents."""
    _, cert, _ = proxy_files
    with (
        django_db_blocker.unblock(),
        running_servers(
            [[f"127.0.0.1:{free_port()}"]],
            tmp_path,
            asgi=True,
            SESSIONS_TRUSTED_PROXIES="127.0.0.1",
            DJANGO_SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO=https",
            SESSIONS_TLS_BINDING_CERT=str(cert),
        ) as (server,),
    ):
        yield server


@pytest.mark.django_db(transaction=True)
def test_a_websocket_login_and_healthz_through_the_documented_proxy(nginx: Proxy) -> None:
    create_user("alice")
    response, body = get(nginx, "/healthz")
    assert response.status == 200
    assert json.loads(body) == {"status": "ok"}
    assert response.getheader("Cache-Control") == "no-store"

    url = f"wss://127.0.0.1:{nginx.https_port}/api/current"
    with settled(connect(url, ssl=nginx.client_tls(), open_timeout=TIMEOUT, close_timeout=2)) as rpc:
        login = rpc.call(
            "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}
        )
        assert login["response_type"] == "SUCCESS", login
        session = rpc.session()
        assert session["credentials"] == "LOGIN_PASSWORD"
        # nginx's X-Forwarded-Proto and X-Forwarded-For were believed: TLS, and the client's address.
        assert session["secure_transport"] is True, session
        assert session["origin"].startswith("127.0.0.1"), session

    # Plain HTTP is a redirect to HTTPS, for every path.
    redirect, _ = get(nginx, "/healthz", tls=False)
    assert redirect.status == 301
    assert redirect.getheader("Location") == "https://127.0.0.1/healthz"
