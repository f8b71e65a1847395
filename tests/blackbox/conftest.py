"""Black-box fixtures: one real gunicorn per test module (`tests.integration.servers`), an HTTP
client that keeps cookies like a browser or ``midclt`` would, and users with roles.

The server runs the production settings (DEBUG off: ``__Host-`` Secure cookies, which the client
keeps and sends over plain http to 127.0.0.1 on purpose) on the test database of the run, so tests
here are transactional (``pytest.mark.django_db(transaction=True)``): the server only sees what the
test committed, and every table is emptied after each test (rate-limit counters included).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORD
from tests.integration.conftest import create_user, server_tmp  # noqa: F401 - fixtures reused as they are
from tests.integration.servers import COOKIE, Server, free_port, running_servers

API = "/api/v2.0"
JSONRPC = "/api/current"
CSRF_COOKIE = "csrftoken"

#: Settings the black-box servers run with, whatever the environment of the run says.
SERVER_ENV = {
    "SESSIONS_LOGIN_RATE": "20",
    "SESSIONS_ASSURANCE_LEVEL": "LEVEL_1",
    "SESSIONS_FAIL_DELAY": "0",
    "SESSIONS_TRUSTED_PROXIES": "",
}


@dataclass
class Answer:
    """One HTTP answer: status, headers, raw body."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def result(self) -> Any:
        payload = self.json()
        assert "result" in payload, payload
        return payload["result"]

    @property
    def error(self) -> dict[str, Any]:
        payload = self.json()
        assert "error" in payload, payload
        return payload["error"]


class Http:
    """A client of one server with its own cookie jar (``Secure`` cookies are kept over http)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cookies: dict[str, str] = {}

    # --- transport ---

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        *,
        send_cookies: bool = True,
    ) -> Answer:
        sent = dict(headers or {})
        if send_cookies and self.cookies and "Cookie" not in sent:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        data = body.encode() if isinstance(body, str) else body
        connection = self.server.connect()  # the sync worker closes the connection after each reply
        try:
            connection.request(method, path, data, sent)
            response = connection.getresponse()
            content = response.read()
        finally:
            connection.close()
        for header in response.msg.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value == "" or morsel["max-age"] in ("0", 0):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return Answer(response.status, response.msg, content)

    # --- JSON-RPC ---

    def rpc_raw(
        self, message: Any, *, content_type: str = "application/json", headers: dict[str, str] | None = None
    ) -> Answer:
        body = message if isinstance(message, bytes) else json.dumps(message)
        return self.request("POST", JSONRPC, body, {"Content-Type": content_type, **(headers or {})})

    def rpc(self, method: str, *params: Any, headers: dict[str, str] | None = None, id: Any = 1) -> Answer:
        return self.rpc_raw(
            {"jsonrpc": "2.0", "id": id, "method": method, "params": list(params)}, headers=headers
        )

    def call(self, method: str, *params: Any, headers: dict[str, str] | None = None) -> Any:
        answer = self.rpc(method, *params, headers=headers)
        assert answer.status == 200, (answer.status, answer.body)
        return answer.result

    def error(self, method: str, *params: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return self.rpc(method, *params, headers=headers).error

    def login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        """``auth.login_ex`` PASSWORD_PLAIN; keeps the session cookie."""
        result = self.call(
            "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password}
        )
        assert result["response_type"] == "SUCCESS", result
        assert COOKIE in self.cookies
        return result

    @property
    def session(self) -> str | None:
        return self.cookies.get(COOKIE)

    # --- REST ---

    def rest(
        self,
        method: str,
        path: str,
        data: Any = None,
        *,
        csrf: bool = True,
        raw: bytes | str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        body = raw if raw is not None else (None if data is None else json.dumps(data))
        if body is not None or method not in ("GET", "HEAD", "DELETE"):
            sent.setdefault("Content-Type", content_type)
        if csrf and CSRF_COOKIE in self.cookies and method not in ("GET", "HEAD"):
            sent.setdefault("X-CSRFToken", self.cookies[CSRF_COOKIE])
        return self.request(method, API + path, body, sent)

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.rest("GET", path, **kwargs)

    def post(self, path: str, data: Any = None, **kwargs: Any) -> Answer:
        return self.rest("POST", path, data, **kwargs)

    def patch(self, path: str, data: Any = None, **kwargs: Any) -> Answer:
        return self.rest("PATCH", path, data, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Answer:
        return self.rest("DELETE", path, **kwargs)

    def rest_login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        """``POST auth/login``: keeps the session and ``csrftoken`` cookies."""
        answer = self.post(
            "/auth/login", {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password}
        )
        assert answer.status == 200, (answer.status, answer.body)
        assert answer.json()["response_type"] == "SUCCESS", answer.json()
        assert COOKIE in self.cookies, self.cookies
        assert CSRF_COOKIE in self.cookies, self.cookies
        return answer.json()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def fresh_address_budget() -> None:
    """Forget this address's login and failed-credential counts (security.md F4/F9): tests that send
    bad credentials to every endpoint check each one from a fresh budget; the limit itself is tested
    in tests/security/test_f_limiter.py."""
    from sessions_app.models import RateCounter

    RateCounter.objects.all().delete()


@pytest.fixture(scope="module")
def server(django_db_setup: Any, server_tmp: Path) -> Iterator[Server]:  # noqa: F811
    """One gunicorn (1 sync worker) on 127.0.0.1 for the whole module."""
    with running_servers([[f"127.0.0.1:{free_port()}"]], server_tmp, **SERVER_ENV) as started:
        yield started[0]


@pytest.fixture
def client(server: Server) -> Callable[[], Http]:
    """``client()`` → a new anonymous client (its own cookies) of the module's server."""
    return lambda: Http(server)


@pytest.fixture
def user(create_user: Callable[..., Any]) -> Callable[..., Any]:  # noqa: F811
    """``user("alice", superuser=False, roles=[Role.AUDIT_READ])``: password ``PASSWORD``."""
    from sessions_app.auth.roles import grant

    def make(username: str, *, superuser: bool = False, roles: Any = ()) -> Any:
        created = create_user(username, superuser=superuser)
        for role in roles:
            grant(created, role)
        return created

    return make


def seed_session(user: Any, credentials: str = "LOGIN_PASSWORD") -> str:
    """A password session of ``user`` made in this process (the session cookie's value).

    Logins over HTTP cost an Argon2 verification (~0.4 s) on the server; tests whose subject is not
    the login itself start from a seeded session, which the server authenticates like any other.
    """
    from sessions_app.auth.clients import Client as Peer
    from sessions_app.services.sessions import session_create

    new = session_create(
        credentials=credentials,
        client=Peer(address="127.0.0.1", port=free_port()),
        user=user,
        audit_data={"mechanism": "PASSWORD_PLAIN", "seeded": True},
    )
    return new.secret


def another_session(http: Http, username: str) -> Http:
    """``http`` holding a new seeded session of the existing user ``username``."""
    from django.contrib.auth import get_user_model

    model = get_user_model()
    http.cookies[COOKIE] = seed_session(model._default_manager.get(**{model.USERNAME_FIELD: username}))
    return http


@pytest.fixture
def logged_in(client: Callable[[], Http], user: Callable[..., Any]) -> Callable[..., Http]:
    """``logged_in("alice", roles=[...])``: a new user and a client holding a session of theirs."""

    def make(username: str, *, superuser: bool = False, roles: Any = ()) -> Http:
        http = client()
        http.cookies[COOKIE] = seed_session(user(username, superuser=superuser, roles=roles))
        return http

    return make
