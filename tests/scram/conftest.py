"""Fixtures of the SCRAM tests: the served configuration twice, started once for the package.

* `plain_server`: gunicorn with uvicorn workers on 127.0.0.1 (``ws://``, ``http://``), as tests/ws.
* `tls_server`: the same with TLS (``running_servers(tls=...)``: gunicorn's ``--certfile/--keyfile``
  with a self-signed ECDSA-SHA256 certificate made here, ``SESSIONS_TLS_BINDING_CERT`` naming it, as
  ``bin/serve`` runs with ``TLS_CERT``) on 127.0.0.1 (``wss://``, ``https://``), and a plain unix
  socket beside it.

Both run on the test database with the login rate limit off (these tests make many login calls
from 127.0.0.1; F4 is tested elsewhere), cheap verifiers (tests/integration/servers.py) and the app
logging at DEBUG, so that the leak checks read everything the servers could log. Tests that use them
are ``django_db(transaction=True)``; `_sessions_settled` (tests/ws) waits after each of them until
the servers have ended the sessions of the sockets the test closed.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import create_user  # noqa: F401 - the fixture, reused as it is
from tests.integration.servers import Server, free_port, running_servers
from tests.scram.client import der_of, make_certificate
from tests.ws.conftest import _sessions_settled  # noqa: F401 - autouse fixture, reused as it is

SERVER_ENV = {"SESSIONS_LOGIN_RATE": "0", "DJANGO_LOG_LEVEL": "DEBUG"}


@pytest.fixture(autouse=True)
def _no_login_rate_limit(settings: Any) -> None:
    settings.SESSIONS_LOGIN_RATE = 0


@dataclass
class TLSServer:
    """The TLS gunicorn: ``tcp`` serves HTTPS/WSS, ``unix`` plain HTTP/WS; ``cert`` is its certificate."""

    server: Server
    cert: Path

    @property
    def tcp(self) -> str:
        return self.server.binds[0]

    @property
    def unix(self) -> str:
        return self.server.binds[1].removeprefix("unix:")

    @property
    def log(self) -> Path:
        return self.server.log

    @property
    def wss_url(self) -> str:
        return f"wss://{self.tcp}/api/current"

    def context(self) -> ssl.SSLContext:
        """A client context that trusts the self-signed certificate (and checks the host name)."""
        return ssl.create_default_context(cafile=str(self.cert))

    @property
    def der(self) -> bytes:
        return der_of(self.cert)


@pytest.fixture(scope="package")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("scram-cert"))


@pytest.fixture(scope="package")
def plain_server(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("scram-plain")
    with (
        django_db_blocker.unblock(),
        running_servers([[f"127.0.0.1:{free_port()}"]], tmp, asgi=True, workers=2, **SERVER_ENV) as servers,
    ):
        yield servers[0]


@pytest.fixture(scope="package")
def tls_server(
    django_db_setup: Any,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    certificate: tuple[Path, Path],
) -> Iterator[TLSServer]:
    """TLS on the TCP bind (``SESSIONS_TLS_BINDING_CERT`` names the certificate), plain unix socket."""
    tmp = tmp_path_factory.mktemp("scram-tls")
    unix = Path("/tmp") / f"scram-{free_port()}.sock"  # AF_UNIX paths are short
    with (
        django_db_blocker.unblock(),
        running_servers(
            [[f"127.0.0.1:{free_port()}", f"unix:{unix}"]], tmp, asgi=True, tls=certificate, **SERVER_ENV
        ) as servers,
    ):
        yield TLSServer(servers[0], certificate[0])
