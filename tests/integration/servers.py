"""Real gunicorn processes on the pytest-django test database (TCP on 127.0.0.1, or a unix socket).

The servers are separate processes, so they only see what the test commits: tests here use
``@pytest.mark.django_db(transaction=True)``. They share the test database of the run: PostgreSQL's
``test_<name>``, or SQLite's only when it is a file (``SQLITE_TEST_NAME``, which ``bin/test`` sets);
with an in-memory SQLite test database the servers could not reach it and the module is skipped.

Users are created with an Argon2 hash (the test settings hash with MD5, which the servers, running
the production settings, would not accept).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import Argon2PasswordHasher
from django.db import connection

from tests.conftest import PASSWORD, TEST_SCRAM_ITERATIONS

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0
COOKIE = "__Host-sid"  # the servers run with DEBUG off: Secure cookies, __Host- prefix
PENDING = "__Host-otp_pending"  # the pending second factor's cookie, same flags (security.md F12)

_hasher = Argon2PasswordHasher()
PASSWORD_HASH = _hasher.encode(PASSWORD, _hasher.salt())


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: the peer credentials the server reads are this process's."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


@dataclass
class Reply:
    status: int
    payload: Any
    cookies: dict[str, str]

    @property
    def result(self) -> Any:
        assert "result" in self.payload, self.payload
        return self.payload["result"]

    @property
    def error(self) -> dict[str, Any]:
        assert "error" in self.payload, self.payload
        return self.payload["error"]


@dataclass
class Server:
    """One gunicorn instance; ``call`` sends a JSON-RPC request to ``POST /api/current`` through its
    first ``--bind`` (or the one given as ``via``): HTTPS on a TCP bind when the server was started
    with TLS (``tls`` is then a client context trusting its certificate), plain HTTP otherwise and
    always on a unix socket."""

    binds: list[str]
    process: subprocess.Popen[bytes]
    log: Path
    tls: ssl.SSLContext | None = None

    @property
    def bind(self) -> str:
        return self.binds[0]

    def connect(self, via: str | None = None) -> http.client.HTTPConnection:
        bind = via or self.bind
        if bind.startswith("unix:"):
            return UnixHTTPConnection(bind.removeprefix("unix:"))
        host, _, port = bind.rpartition(":")
        if self.tls is not None:
            return http.client.HTTPSConnection(host, int(port), timeout=10, context=self.tls)
        return http.client.HTTPConnection(host, int(port), timeout=10)

    def call(
        self,
        method: str,
        *params: Any,
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
        via: str | None = None,
    ) -> Reply:
        response, data, cookies = self.post(method, *params, cookie=cookie, headers=headers, via=via)
        return Reply(response.status, json.loads(data), cookies)

    def post(
        self,
        method: str,
        *params: Any,
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
        via: str | None = None,
        timeout: float | None = None,
    ) -> tuple[http.client.HTTPResponse, bytes, dict[str, str]]:
        """One JSON-RPC call to ``POST /api/current`` on a connection of its own (the sync worker
        closes after each reply): the response, its raw body and the cookies it sets."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        sent = {"Content-Type": "application/json", **(headers or {})}
        if cookie is not None:
            # Sent by hand: a cookie jar would withhold a Secure cookie over plain http.
            sent["Cookie"] = f"{COOKIE}={cookie}"
        connection_ = self.connect(via)
        if timeout is not None:
            connection_.timeout = timeout
        try:
            connection_.request("POST", "/api/current", body, sent)
            response = connection_.getresponse()
            data = response.read()
        finally:
            connection_.close()
        jar: SimpleCookie = SimpleCookie()
        for header in response.msg.get_all("Set-Cookie") or []:
            jar.load(header)
        return response, data, {name: morsel.value for name, morsel in jar.items()}

    def login(self, username: str, password: str = PASSWORD) -> str:
        """Log in with ``auth.login_ex``; the session cookie's value."""
        reply = self.call(
            "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password}
        )
        assert reply.result["response_type"] == "SUCCESS", reply.payload
        return reply.cookies[COOKIE]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_serve_refuses(env: dict[str, str], cwd: Path, named: str) -> None:
    """``bin/serve`` run in ``cwd`` with ``env`` refuses to start as every refusal of it does: exit
    status 2, nothing on stdout, one line on stderr (``bin/serve: …``) naming ``named``."""
    done = subprocess.run(  # noqa: S603 - fixed argv
        [str(ROOT / "bin" / "serve")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("bin/serve: ")
    assert named in done.stderr


def shared_database_url() -> str:
    """A ``DATABASE_URL`` naming the test database of this run (skips when servers cannot share it)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        if connection.is_in_memory_db():
            pytest.skip(
                "the SQLite test database is in memory, so server processes cannot share it: "
                "set SQLITE_TEST_NAME=var/test.sqlite3 (bin/test does)"
            )
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    if connection.vendor == "postgresql":
        auth = quote(db["USER"] or "", safe="")
        if db["PASSWORD"]:
            auth += ":" + quote(db["PASSWORD"], safe="")
        host = db["HOST"] or "127.0.0.1"
        port = f":{db['PORT']}" if db["PORT"] else ""
        return f"postgres://{auth}{'@' if auth else ''}{host}{port}/{quote(db['NAME'], safe='')}"
    pytest.skip(f"no integration support for the {connection.vendor} backend")


def _gunicorn() -> str:
    beside = Path(sys.executable).with_name("gunicorn")
    found = str(beside) if beside.exists() else shutil.which("gunicorn")
    if not found:
        pytest.fail("gunicorn is not installed in the test environment")
    return found


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _ready(server: Server, deadline: float) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        connection_ = server.connect()
        connection_.timeout = 2
        try:
            connection_.request(
                "POST",
                "/api/current",
                b'{"jsonrpc":"2.0","id":0,"method":"core.ping"}',
                {"Content-Type": "application/json"},
            )
            if connection_.getresponse().status == 200:
                return
        except OSError as exc:  # not bound yet (refused / no such file), or the worker is booting
            last = exc
        finally:
            connection_.close()
        time.sleep(0.05)
    _stop(server.process)
    tail = server.log.read_text(errors="replace")[-3000:] if server.log.exists() else ""
    pytest.fail(f"gunicorn on {server.bind} did not become ready ({last!r}):\n{tail}")


ASGI_WORKER = "sessions_app.server.asgi_worker.PeerCredUvicornWorker"


def gunicorn_command(
    bind: list[str], *, asgi: bool = False, workers: int = 1, graceful_timeout: int = 2
) -> list[str]:
    """The gunicorn command line: the WSGI app on sync workers, or (``asgi``) the served
    configuration of ``bin/serve``: the ASGI app (HTTP + WebSocket) on the uvicorn worker."""
    if asgi:
        command = [_gunicorn(), "project.asgi:application", "--worker-class", ASGI_WORKER]
    else:
        command = [_gunicorn(), "project.wsgi", "--worker-class", "sync"]
    command += ["--workers", str(workers)]
    command += [part for b in bind for part in ("--bind", b)]
    return command + ["--graceful-timeout", str(graceful_timeout), "--log-level", "warning"]


def server_environment(**env: str) -> dict[str, str]:
    """The environment of a server process on the test database: production settings, this process's
    secret key (API-key pepper and session fingerprints derive from it), no failure delay; ``env``
    last."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": shared_database_url(),
        "DJANGO_DEBUG": "false",
        "SESSIONS_FAIL_DELAY": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        # Keys made by a server get cheap SCRAM verifiers, as in this process (tests/conftest.py).
        "SESSIONS_SCRAM_ITERATIONS": str(TEST_SCRAM_ITERATIONS),
    }
    environment.pop("DJANGO_SECRET_KEY_FILE", None)
    environment.pop("SQLITE_TEST_NAME", None)
    environment.update(env)
    return environment


def create_user(username: str, *, superuser: bool = False) -> Any:
    """A user the servers can log in with `PASSWORD` (`PASSWORD_HASH`: the servers run the
    production hashers, not the tests' MD5)."""
    user = get_user_model()(username=username, is_superuser=superuser, is_staff=superuser)
    user.password = PASSWORD_HASH
    user.save()
    return user


@contextlib.contextmanager
def running_servers(
    binds: list[list[str]],
    tmp: Path,
    *,
    asgi: bool = False,
    workers: int = 1,
    tls: tuple[Path, Path] | None = None,
    graceful_timeout: int = 2,
    **env: str,
) -> Iterator[list[Server]]:
    """Start one gunicorn per entry of ``binds`` (its ``--bind`` values) on the test database, with
    ``workers`` sync WSGI workers or (``asgi=True``) uvicorn workers serving HTTP and WebSocket; wait
    until each answers ``core.ping``; always stop them.

    ``tls=(certfile, keyfile)`` serves TLS on the TCP binds as ``bin/serve`` does with ``TLS_CERT`` and
    ``TLS_KEY`` (gunicorn's ``--certfile``/``--keyfile``, ``SESSIONS_TLS_BINDING_CERT`` pointing at
    the certificate unless ``env`` names another); the servers' ``tls`` context trusts it.
    ``graceful_timeout`` is gunicorn's (2 s here, so that stopping never slows a test; bin/serve's 30).
    """
    if tls is not None:
        env = {"SESSIONS_TLS_BINDING_CERT": str(tls[0]), **env}
    environment = server_environment(**env)
    client_tls = ssl.create_default_context(cafile=str(tls[0])) if tls is not None else None
    servers: list[Server] = []
    try:
        for number, bind in enumerate(binds):
            log = tmp / f"gunicorn-{number}.log"
            command = gunicorn_command(bind, asgi=asgi, workers=workers, graceful_timeout=graceful_timeout)
            command += ["--control-socket", str(tmp / f"gunicorn-{number}.ctl")]
            if tls is not None:
                command += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
            with log.open("wb") as out:
                process = subprocess.Popen(
                    command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT
                )
            servers.append(Server(bind, process, log, client_tls))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for server in servers:
            _ready(server, deadline)
        yield servers
    finally:
        for server in servers:
            _stop(server.process)
