"""E1–E16: bad input gets a clear 4xx, never a 500 (security.md group E), through both interfaces.

JSON-RPC (``POST /api/current``) answers transport problems with HTTP statuses (400 parse error,
413, 415, 405) and validation problems with ``-32602 Invalid params`` naming the field; the REST API
(``/api/v2.0/``) answers ``{"errors": [{"attribute", "message", "errno"}]}`` with 400/404/405/413/415.
Unauthenticated bodies are capped at 8 KiB, authenticated ones at 64 KiB (interfaces.md §1).
``tests/api/test_rest_errors.py`` holds the REST basics; the cases here add the JSON-RPC side, the
login bodies, and the cases that need a real server (E12) or a subprocess (E15).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.core.management import ManagementUtility
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions_app import selectors
from sessions_app.api import methods
from sessions_app.auth.roles import user_roles
from sessions_app.models import AuditRecord, UserSession
from tests.api.conftest import Rest, errors
from tests.conftest import PASSWORD, RPC
from tests.integration.servers import Server, free_port, running_servers

pytestmark = pytest.mark.django_db

LOGIN = {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}


def envelope(method: str, params_json: str) -> bytes:
    return f'{{"jsonrpc": "2.0", "id": 1, "method": "{method}", "params": {params_json}}}'.encode()


def rpc_post(client: RPC, body: bytes, content_type: str = "application/json") -> Any:
    return client.http.post("/api/current", body, content_type=content_type)


def rpc_invalid(response: Any) -> list[str]:
    """The attributes of a ``-32602`` answer (and a check of its TrueNAS shape)."""
    assert response.status_code == 200, (response.status_code, response.content)
    payload = response.json()
    assert "error" in payload, payload
    error = payload["error"]
    assert error["code"] == -32602, error
    data = error["data"]
    assert set(data) == {"error", "errname", "reason", "trace", "extra"}, data
    assert (data["error"], data["errname"]) == (22, "EINVAL")
    return [attribute for attribute, _, _ in data["extra"]]


def rest_invalid(response: Any) -> list[str]:
    assert response.status_code == 400, (response.status_code, response.content)
    return [e["attribute"] for e in errors(response)]


def assert_parse_error(response: Any) -> None:
    """JSON-RPC: HTTP 400 with a ``-32700`` body."""
    assert response.status_code == 400, (response.status_code, response.content)
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == -32700, error
    assert error["message"].startswith("Parse error")


def assert_rest_body_error(response: Any, status: int = 400) -> None:
    assert response.status_code == status, (response.status_code, response.content)
    assert [e["attribute"] for e in errors(response)] == ["body"]


class HashSpy:
    """Counts password hashes (the MD5 test hasher's ``encode``, which ``verify`` calls too)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = MD5PasswordHasher.encode
        lock = threading.Lock()

        def encode(hasher: Any, password: str, salt: str) -> str:
            with lock:
                self.count += 1
            return real(hasher, password, salt)

        monkeypatch.setattr(MD5PasswordHasher, "encode", encode)


@pytest.fixture(autouse=True)
def _no_rate_limit(settings: Any) -> None:
    """Many unauthenticated calls from one address: the limiter is tested on its own (E16)."""
    settings.SESSIONS_LOGIN_RATE = 0


@pytest.fixture
def alice(make_user: Any) -> Any:
    return make_user("alice")


@pytest.fixture
def admin(make_user: Any) -> Any:
    return make_user("admin", superuser=True)


@pytest.fixture
def admin_rpc(admin: Any) -> RPC:
    client = RPC()
    client.login("admin")
    return client


@pytest.fixture
def admin_rest(admin: Any) -> Rest:
    client = Rest()
    client.login("admin")
    return client


def nothing_written() -> None:
    """No session and no authentication record beyond the administrator's own login."""
    assert not UserSession.objects.exclude(username="admin").exists()
    assert not AuditRecord.objects.filter(event="AUTHENTICATION").exclude(username="admin").exists()


# --- E1–E3: the body as a whole ------------------------------------------------------------------------

MALFORMED = [
    b" ",
    b"{",
    b"[1,]",
    b'{"a":}',
    b"{'jsonrpc': '2.0'}",
    b'{"jsonrpc": "2.0"} trailing',
    b'{"a": 1}{"b": 2}',
    b'"unterminated',
    b"nul",
    b'{"a": 01}',
    b'{"a": "\\x41"}',
    b'{"a": "tab\there"}',
    b"\x00",
]


def test_E1_malformed_json_is_a_400_json_answer(alice: Any) -> None:
    rpc, rest = RPC(), Rest()
    # An empty body (the test client drops the Content-Type of an empty body: set it by hand).
    assert_parse_error(rpc.http.generic("POST", "/api/current", b"", CONTENT_TYPE="application/json"))
    empty = rest.http.generic("POST", "/api/v2.0/auth/login", b"", CONTENT_TYPE="application/json")
    assert rest_invalid(empty) == ["login_data.mechanism"]  # an empty body is "no data" for DRF
    for body in MALFORMED:
        assert_parse_error(rpc_post(rpc, body))
        assert_rest_body_error(rest.post("/auth/login", body, raw=True))
        assert_rest_body_error(rest.post("/auth/login_continue", body, raw=True))
    # Well-formed JSON that is not a JSON-RPC request: -32600 (a batch is -32700, TrueNAS).
    for body, code in (
        (b"[]", -32700),
        (b"[" + envelope("core.ping", "[]") + b"]", -32700),
        (b'"x"', -32600),
        (b"1", -32600),
        (b"null", -32600),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "core.ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "core.ping", "params": {}}', -32600),
        (b'{"jsonrpc": "2.0", "id": [1], "method": "core.ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": true, "method": "core.ping"}', -32600),
    ):
        response = rpc_post(rpc, body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == code, body
    # REST: a JSON body of the wrong shape is a 400 naming the body (the login service's own check).
    assert rest_invalid(rest.post("/auth/login", [LOGIN])) == ["login_data"]
    assert rest_invalid(rest.post("/auth/login", "PASSWORD_PLAIN")) == ["login_data"]
    nothing_written()


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
        "application/xml",
    ],
)
def test_E2_json_endpoints_refuse_other_content_types_with_415(
    alice: Any, admin_rpc: RPC, admin_rest: Rest, content_type: str
) -> None:
    body = json.dumps(LOGIN)
    for client in (RPC(), admin_rpc):
        response = client.http.generic("POST", "/api/current", envelope("core.ping", "[]"), content_type)
        assert response.status_code == 415, content_type
        assert response["Content-Type"] == "application/json"
        assert "Content-Type" in response.json()["error"]
    response = Rest().post("/auth/login", body, raw=True, content_type=content_type)
    assert response.status_code == 415
    assert [e["attribute"] for e in errors(response)] == ["content_type"]
    for path in ("/auth/sessions/query", "/api_key/", "/auth/generate_token"):
        response = admin_rest.post(path, "{}", raw=True, content_type=content_type)
        assert response.status_code == 415, (path, content_type)
    nothing_written()
    # Parameters of application/json are fine.
    response = RPC().http.generic(
        "POST", "/api/current", envelope("core.ping", "[]"), "application/json; charset=utf-8"
    )
    assert response.json()["result"] == "pong"


def test_E3_bodies_over_the_caps_are_413_json(alice: Any, admin_rpc: RPC, admin_rest: Rest) -> None:
    """8 KiB before authentication, 64 KiB after; judged by ``Content-Length`` and by what is read."""
    big_login = json.dumps({**LOGIN, "password": "p" * 9000}).encode()
    for response in (
        rpc_post(RPC(), envelope("auth.login_ex", f"[{big_login.decode()}]")),
        Rest().post("/auth/login", big_login, raw=True),
        Rest().post("/auth/login_continue", big_login, raw=True),
    ):
        assert response.status_code == 413
        assert response["Content-Type"] == "application/json"
        response.json()
    just_under = envelope("core.ping", "[]") + b" " * (8 * 1024 - len(envelope("core.ping", "[]")))
    assert len(just_under) == 8 * 1024
    assert rpc_post(RPC(), just_under).json()["result"] == "pong"
    assert rpc_post(RPC(), just_under + b" ").status_code == 413
    # Authenticated: 64 KiB.
    filters = json.dumps([["origin", "=", "o" * 9000]])
    assert admin_rpc.raw("auth.sessions", json.loads(filters), {}).json()["result"] == []
    response = admin_rpc.raw("auth.sessions", [["origin", "=", "o" * 70_000]], {})
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert (
        admin_rest.post(
            "/auth/sessions/query", {"query-filters": [["origin", "=", "o" * 70_000]]}
        ).status_code
        == 413
    )
    # A Content-Length that promises more than the cap is refused before reading.
    response = RPC().http.post(
        "/api/current", envelope("core.ping", "[]"), content_type="application/json", CONTENT_LENGTH="9000"
    )
    assert response.status_code == 413
    response = RPC().http.post(
        "/api/current", envelope("core.ping", "[]"), content_type="application/json", CONTENT_LENGTH="x"
    )
    assert response.status_code == 400
    nothing_written()


# --- E4–E7: fields of the login bodies -----------------------------------------------------------------

E4_LOGIN_CASES = [
    ({**LOGIN, "username": 5}, "login_data.username"),
    ({**LOGIN, "username": ["alice"]}, "login_data.username"),
    ({**LOGIN, "username": {"$ne": None}}, "login_data.username"),
    ({**LOGIN, "username": None}, "login_data.username"),
    ({**LOGIN, "username": True}, "login_data.username"),
    ({**LOGIN, "password": 123456}, "login_data.password"),
    ({**LOGIN, "password": 1.5}, "login_data.password"),
    ({**LOGIN, "password": None}, "login_data.password"),
    ({**LOGIN, "password": ["x"]}, "login_data.password"),
    ({"mechanism": "PASSWORD_PLAIN", "username": "alice"}, "login_data.password"),
    ({**LOGIN, "mechanism": 1}, "login_data.mechanism"),
    ({**LOGIN, "mechanism": "password_plain"}, "login_data.mechanism"),
    ({**LOGIN, "mechanism": None}, "login_data.mechanism"),
    ({**LOGIN, "login_options": "yes"}, "login_data.login_options"),
    ({**LOGIN, "login_options": {"user_info": "true"}}, "login_data.login_options.user_info"),
    ({**LOGIN, "login_options": {"user_info": 1}}, "login_data.login_options.user_info"),
    ({"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": 5}, "login_data.api_key"),
    ({"mechanism": "TOKEN_PLAIN", "token": ["x"]}, "login_data.token"),
    ({"mechanism": "OTP_TOKEN", "otp_token": "123456"}, "login_data.mechanism"),
    ("alice", "login_data"),
    (None, "login_data"),
]


def test_E4_wrong_types_in_login_bodies_are_400_with_field_errors(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = HashSpy(monkeypatch)
    for body, attribute in E4_LOGIN_CASES:
        assert attribute in rpc_invalid(RPC().raw("auth.login_ex", body)), body
        assert attribute in rest_invalid(Rest().post("/auth/login", json.dumps(body), raw=True)), body
    # The legacy boolean logins validate too.
    assert rpc_invalid(RPC().raw("auth.login", 5, PASSWORD)) == ["login_data.username"]
    assert rpc_invalid(RPC().raw("auth.login", "alice", 5)) == ["login_data.password"]
    assert rpc_invalid(RPC().raw("auth.login_with_api_key", 5)) == ["api_key"]
    assert rpc_invalid(RPC().raw("auth.login_with_token", None)) == ["login_data.token"]
    assert rpc_invalid(RPC().raw("auth.login_ex", LOGIN, LOGIN)) == ["params"]
    assert hashes.count == 0
    nothing_written()


@pytest.fixture
def pending(alice: Any, totp: Any) -> Callable[[str], Any]:
    """``pending("jsonrpc"|"rest")``: a client whose login waits for alice's second factor."""
    totp.device(alice)

    def make(name: str) -> Any:
        if name == "jsonrpc":
            client: Any = RPC()
            assert client.call("auth.login_ex", LOGIN)["response_type"] == "OTP_REQUIRED"
        else:
            client = Rest()
            assert client.post("/auth/login", LOGIN).json()["response_type"] == "OTP_REQUIRED"
        return client

    return make


def otp_answer(client: Any, code: Any) -> Any:
    body = {"mechanism": "OTP_TOKEN", "otp_token": code}
    if isinstance(client, RPC):
        return client.raw("auth.login_ex_continue", body)
    return client.post("/auth/login_continue", body)


def test_E4_otp_codes_of_the_wrong_json_type_are_400(pending: Callable[[str], Any]) -> None:
    for name in ("jsonrpc", "rest"):
        client = pending(name)
        for code in (123456, 1e6, True, None, ["123456"], {"code": "123456"}):
            response = otp_answer(client, code)
            invalid = rpc_invalid(response) if name == "jsonrpc" else rest_invalid(response)
            assert invalid == ["login_data.otp_token"], (name, code)
        # 100 digits as a JSON number: beyond the 20-digit integers the parser accepts.
        body = '{"mechanism": "OTP_TOKEN", "otp_token": ' + "1" * 100 + "}"
        if name == "jsonrpc":
            assert_parse_error(rpc_post(client, envelope("auth.login_ex_continue", f"[{body}]")))
        else:
            assert_rest_body_error(client.post("/auth/login_continue", body, raw=True))
    assert not UserSession.objects.exists()


def test_E4_malformed_otp_strings_are_400_with_a_field_error(pending: Callable[[str], Any]) -> None:
    """security.md E4: an OTP that is not 6–8 ASCII digits (``"12a456"``, 100 digits, full-width
    digits) is a 400 naming ``otp_token``, like any malformed field -- not a wrong code."""
    for name in ("jsonrpc", "rest"):
        client = pending(name)
        for code in ("12a456", "1" * 100, "", " 123456", "１２３４５６", "12345", "123456\n"):
            response = otp_answer(client, code)
            invalid = rpc_invalid(response) if name == "jsonrpc" else rest_invalid(response)
            assert invalid == ["login_data.otp_token"], (name, code, response.content)
    assert not UserSession.objects.exists()


def test_E5_megabyte_fields_are_refused_by_the_body_cap_before_any_hashing(
    alice: Any, admin_rpc: RPC, admin_rest: Rest, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = HashSpy(monkeypatch)
    mega = "a" * 1_000_000
    for body in ({**LOGIN, "username": mega}, {**LOGIN, "password": mega}):
        with CaptureQueriesContext(connection) as queries:
            assert RPC().raw("auth.login_ex", body).status_code == 413
            assert Rest().post("/auth/login", body).status_code == 413
        assert len(queries) == 0
    assert RPC().raw("auth.login", mega, PASSWORD).status_code == 413
    assert admin_rpc.raw("auth.sessions", [["origin", "=", mega]], {}).status_code == 413
    assert (
        admin_rest.post("/auth/sessions/query", {"query-filters": [["origin", "^", mega]]}).status_code == 413
    )
    assert admin_rest.post("/api_key/", {"name": mega}).status_code == 413
    # Inside the 8 KiB cap, a password over SESSIONS_MAX_PASSWORD_LENGTH (1024) is refused unhashed.
    long_password = {**LOGIN, "password": "b" * 5000}
    assert RPC().call("auth.login_ex", long_password) == {"response_type": "AUTH_ERR"}
    assert Rest().post("/auth/login", long_password).json() == {"response_type": "AUTH_ERR"}
    assert hashes.count == 0
    assert not UserSession.objects.filter(username="alice").exists()


@pytest.mark.parametrize(
    "extra",
    [
        {"is_admin": True},
        {"is_superuser": True},
        {"user_id": 1},
        {"roles": ["FULL_ADMIN"]},
        {"expires_at": {"$date": 4102444800000}},
        {"user_info": {"pw_name": "root"}},
        {"internal": True},
    ],
    ids=lambda extra: next(iter(extra)),
)
def test_E6_unknown_login_fields_are_rejected_and_never_applied(alice: Any, extra: dict[str, Any]) -> None:
    """A correct password plus an unknown field: 400 naming the field, no session, nothing changed."""
    name = next(iter(extra))
    assert rpc_invalid(RPC().raw("auth.login_ex", {**LOGIN, **extra})) == [f"login_data.{name}"]
    assert rest_invalid(Rest().post("/auth/login", {**LOGIN, **extra})) == [f"login_data.{name}"]
    assert rpc_invalid(RPC().raw("auth.login_ex", {**LOGIN, "login_options": extra})) == [
        f"login_data.login_options.{name}"
    ]
    alice.refresh_from_db()
    assert (alice.is_superuser, alice.is_staff) == (False, False)
    assert not user_roles(alice)
    nothing_written()


def test_E6_unknown_fields_elsewhere_are_rejected(alice: Any) -> None:
    rpc, rest = RPC(), Rest()
    rpc.login()
    rest.login()
    for extra in ({"user_id": 1}, {"revoked": True}, {"key_hash": "0" * 64}, {"user": "admin"}):
        name = next(iter(extra))
        assert rpc_invalid(rpc.raw("api_key.create", {"name": "k", **extra})) == [f"api_key_create.{name}"]
        assert rest_invalid(rest.post("/api_key/", {"name": "k", **extra})) == [name]
    assert rpc_invalid(rpc.raw("core.set_options", {"private_methods": True, "debug": True})) == [
        "options.debug"
    ]
    response = rest.post("/auth/generate_token", {"ttl": 60, "is_admin": True})
    assert rest_invalid(response) == ["is_admin"]


def test_E7_nul_bytes_are_400(alice: Any, admin_rpc: RPC, admin_rest: Rest) -> None:
    for field in ("username", "password"):
        body = {**LOGIN, field: "ali\x00ce"}
        assert rpc_invalid(RPC().raw("auth.login_ex", body)) == [f"login_data.{field}"]
        assert rest_invalid(Rest().post("/auth/login", body)) == [f"login_data.{field}"]
    assert rest_invalid(admin_rest.post("/api_key/", {"name": "a\x00b"})) == ["name"]
    assert rpc_invalid(admin_rpc.raw("api_key.create", {"name": "a\x00b"})) == ["api_key_create.name"]
    assert rpc_invalid(admin_rpc.raw("auth.sessions", [["origin", "=", "a\x00b"]], {})) == ["filters[0]"]
    # Ids that reach a lookup: a 400/-32602 or "no such session" -- never a 5xx (PostgreSQL cannot
    # even compare a string holding NUL).
    for method in ("auth.terminate_session", "auth.terminate_my_session"):
        response = admin_rpc.raw(method, "abc\x00def")
        assert response.status_code == 200, (method, response.content)
        payload = response.json()
        assert payload.get("result") is False or payload["error"]["code"] == -32602, payload
    # Names looked up in the database: -32602 (PostgreSQL refuses the value: DataError -> -32602).
    assert rpc_invalid(admin_rpc.raw("auth.generate_onetime_password", {"username": "a\x00b"}))
    assert rpc_invalid(admin_rpc.raw("api_key.create", {"name": "k", "username": "a\x00b"}))
    assert admin_rest.post("/auth/sessions/a%00b/terminate").status_code == 404
    nothing_written()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"mechanism": "PASSWORD_PLAIN", "username": "\\ud800", "password": "x"}', "lone high surrogate"),
        (b'{"mechanism": "PASSWORD_PLAIN", "username": "a", "password": "\\udfff"}', "lone low surrogate"),
        (b'{"mechanism": "PASSWORD_PLAIN", "\\ud800": 1, "username": "a", "password": "x"}', "in a key"),
        (b'{"mechanism": "PASSWORD_PLAIN", "username": "\\udc00\\ud800", "password": "x"}', "reversed pair"),
        (b'{"mechanism": "PASSWORD_PLAIN", "username": "\xff", "password": "x"}', "invalid UTF-8"),
        (b'{"mechanism": "PASSWORD_PLAIN", "username": "\xc0\xaf", "password": "x"}', "overlong UTF-8"),
        (
            b'{"mechanism": "PASSWORD_PLAIN", "username": "\xed\xa0\x80", "password": "x"}',
            "encoded surrogate",
        ),
        (b'\xef\xbb\xbf{"mechanism": "PASSWORD_PLAIN", "username": "a", "password": "x"}', "UTF-8 BOM"),
        (("\ufeff" + json.dumps(LOGIN)).encode("utf-16-le"), "UTF-16 with BOM"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_E7_surrogates_invalid_utf8_and_bom_are_400(alice: Any, body: bytes, why: str) -> None:
    assert_parse_error(rpc_post(RPC(), _wrap(body)))
    assert_rest_body_error(Rest().post("/auth/login", body, raw=True))
    nothing_written()


def _wrap(login_body: bytes) -> bytes:
    """The JSON-RPC message around a raw login body (a byte order mark goes before the message)."""
    if login_body.startswith(b"\xff\xfe"):
        return ("\ufeff" + envelope("auth.login_ex", f"[{json.dumps(LOGIN)}]").decode()).encode("utf-16-le")
    if login_body.startswith(b"\xef\xbb\xbf"):
        return b"\xef\xbb\xbf" + _wrap(login_body[3:])
    return b'{"jsonrpc": "2.0", "id": 1, "method": "auth.login_ex", "params": [' + login_body + b"]}"


def test_E7_surrogates_in_authenticated_calls_are_400(admin_rpc: RPC, admin_rest: Rest) -> None:
    """Everywhere a string may reach the database: the parser refuses unpaired surrogates first."""
    for method, params in (
        ("auth.terminate_session", '["\\ud800"]'),
        ("api_key.create", '[{"name": "k\\udbff"}]'),
        ("auth.sessions", '[[["origin", "=", "\\ud800"]], {}]'),
        ("auth.generate_onetime_password", '[{"username": "\\ud800"}]'),
    ):
        assert_parse_error(rpc_post(admin_rpc, envelope(method, params)))
    assert_rest_body_error(admin_rest.post("/api_key/", b'{"name": "k\\udbff"}', raw=True))
    # A surrogate *pair* is an ordinary astral character.
    response = rpc_post(admin_rpc, envelope("auth.sessions", '[[["origin", "=", "\\ud83d\\ude00"]], {}]'))
    assert response.json()["result"] == []


# --- E8–E9: nesting and numbers -------------------------------------------------------------------------


def test_E8_deep_arrays_are_400_or_413_never_a_recursion_error(
    alice: Any, admin_rpc: RPC, admin_rest: Rest
) -> None:
    for depth, authenticated in ((4_000, False), (30_000, True), (65, True)):
        deep = "[" * depth + "]" * depth
        rpc = admin_rpc if authenticated else RPC()
        assert_parse_error(
            rpc_post(rpc, envelope("auth.sessions" if authenticated else "auth.login_ex", f"[{deep}]"))
        )
        rest = admin_rest if authenticated else Rest()
        path = "/auth/sessions/query" if authenticated else "/auth/login"
        assert_rest_body_error(rest.post(path, f'{{"query-filters": {deep}}}', raw=True))
        assert_rest_body_error(rest.post(path, "{" * depth, raw=True))
    # 100 000 levels do not fit any body cap: 413 before parsing.
    deep = "[" * 100_000 + "]" * 100_000
    for client in (RPC(), admin_rpc):
        assert rpc_post(client, envelope("auth.login_ex", f"[{deep}]")).status_code == 413
    assert admin_rest.post("/auth/sessions/query", deep, raw=True).status_code == 413
    assert Rest().post("/auth/login", deep, raw=True).status_code == 413
    nothing_written()


@pytest.mark.parametrize(
    "number", ["NaN", "Infinity", "-Infinity", "1" * 400, "-" + "9" * 30, "1e400", "-1e400", "1.8e308"]
)
def test_E9_non_finite_and_huge_numbers_are_400(
    alice: Any, admin_rpc: RPC, admin_rest: Rest, number: str
) -> None:
    login = f'{{"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": {number}}}'
    assert_parse_error(rpc_post(RPC(), envelope("auth.login_ex", f"[{login}]")))
    assert_rest_body_error(Rest().post("/auth/login", login, raw=True))
    query = f'[["origin", "=", {number}]]'
    assert_parse_error(rpc_post(admin_rpc, envelope("auth.sessions", f"[{query}, {{}}]")))
    assert_rest_body_error(admin_rest.post("/auth/sessions/query", f'{{"query-filters": {query}}}', raw=True))
    assert_parse_error(rpc_post(admin_rpc, envelope("auth.sessions", f'[[], {{"limit": {number}}}]')))
    assert_parse_error(
        rpc_post(RPC(), f'{{"jsonrpc": "2.0", "id": {number}, "method": "core.ping"}}'.encode())
    )
    nothing_written()


def test_E9_numbers_at_the_edges_are_answered(admin_rpc: RPC) -> None:
    """20-digit integers and the largest finite floats parse; the query language judges them."""
    for number, expected in (("1" * 20, []), ("1.7976931348623157e308", []), ("-0.0", []), ("1e-400", [])):
        response = rpc_post(
            admin_rpc, envelope("auth.sessions", f'[[["credentials_data.api_key.id", "=", {number}]], {{}}]')
        )
        assert response.json()["result"] == expected, number


# --- E10–E11: paths and methods --------------------------------------------------------------------------

E10_PATHS = [
    "/api_key/abc/",
    "/api_key/-1/",
    "/api_key/0/",
    "/api_key/1.5/",
    "/api_key/0x10/",
    "/api_key/99999999999999999999999/",
    "/api_key/%00/",
    "/api_key/%20/",
    "/api_key/1%00/",
    "/api_key/%F0%9F%98%80/",
    "/api_key/abc/reset",
    "/auth/sessions/%00/terminate",
    "/auth/sessions/a%00b/terminate",
    "/auth/sessions/abc/terminate",
    "/auth/sessions/-1/terminate",
    "/auth/sessions/" + "a" * 129 + "/terminate",
    "/auth/sessions/%2e%2e/terminate",
    "/auth/my_sessions/%00/terminate",
    "/auth/my_sessions/abc/terminate",
]


def test_E10_odd_path_ids_are_json_404(admin_rest: Rest) -> None:
    for path in E10_PATHS:
        for method in ("GET", "POST", "PATCH", "DELETE"):
            response = admin_rest.send(method, path, {} if method in ("POST", "PATCH") else None)
            assert response.status_code in (404, 405), (method, path, response.status_code)
            assert response["Content-Type"].startswith("application/json"), (method, path)
            errors(response)


def test_E10_odd_ids_in_jsonrpc_are_invalid_params_or_not_found(admin_rpc: RPC) -> None:
    for method, value in (
        ("api_key.get_instance", "abc"),
        ("api_key.get_instance", "1"),
        ("api_key.get_instance", -1),
        ("api_key.get_instance", 0),
        ("api_key.get_instance", 1.0),
        ("api_key.get_instance", True),
        ("api_key.get_instance", None),
        ("api_key.get_instance", 2**63),
        ("api_key.delete", "1"),
        ("api_key.update", [1]),
        ("auth.terminate_session", 5),
        ("auth.terminate_session", None),
        ("auth.terminate_session", ""),
        ("auth.terminate_session", "a" * 129),
        ("auth.terminate_session", ["x"]),
    ):
        assert rpc_invalid(admin_rpc.raw(method, value)) == ["id"], (method, value)
    for method, value in (("api_key.get_instance", 10**15), ("api_key.delete", 2**62)):
        error = admin_rpc.raw(method, value).json()["error"]
        assert (error["code"], error["data"]["errname"]) == (-32001, "ENOENT"), (method, error)
    assert admin_rpc.call("auth.terminate_session", "no-such-session") is False
    assert admin_rpc.call("auth.terminate_session", "../../etc/passwd") is False


def test_E11_jsonrpc_answers_other_methods_with_405_and_allow(alice: Any) -> None:
    client = RPC()
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "HEAD", "CONNECT", "PROPFIND", "FOO"):
        response = client.http.generic(
            method, "/api/current", envelope("core.ping", "[]"), "application/json"
        )
        assert response.status_code == 405, method
        assert response["Allow"] == "POST"
        if method != "HEAD":
            assert response["Content-Type"] == "application/json"
            assert "method not allowed" in response.json()["error"]
    nothing_written()


def test_E11_rest_answers_other_methods_with_405_and_allow(admin_rest: Rest) -> None:
    for method, path, allow in (
        ("TRACE", "/auth/sessions/query", "POST"),
        ("GET", "/auth/sessions/query", "POST"),
        ("PUT", "/auth/sessions/query", "POST"),
        ("DELETE", "/auth/login", "POST"),
        ("TRACE", "/auth/login", "POST"),
        ("OPTIONS", "/auth/sessions", "GET, HEAD"),
        ("TRACE", "/api_key/", "GET, POST, HEAD"),
        ("PROPFIND", "/auth/me", "GET, HEAD"),
        ("POST", "/audit/", "GET, HEAD"),
    ):
        response = admin_rest.send(method, path)
        assert response.status_code == 405, (method, path)
        assert response["Allow"] == allow, (method, path)
        errors(response)


# --- E12: the server's own limits -------------------------------------------------------------------------


@pytest.fixture
def server(django_db_setup: Any, tmp_path: Path) -> Iterator[Server]:
    with running_servers([[f"127.0.0.1:{free_port()}"]], tmp_path) as started:
        yield started[0]


def raw_exchange(server: Server, request: bytes) -> bytes:
    """Send raw bytes; the first line of the answer (the connection is closed after it)."""
    host, _, port = server.bind.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before reading it all
            sock.sendall(request)
        data = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    return data.split(b"\r\n", 1)[0]


def ping(server: Server) -> int:
    reply = server.call("core.ping")
    assert reply.payload == {"jsonrpc": "2.0", "id": 1, "result": "pong"}
    return reply.status


@pytest.mark.django_db(transaction=True)
def test_E12_gunicorn_refuses_oversized_request_lines_and_headers(server: Server) -> None:
    """gunicorn's defaults (``limit_request_line`` 4094, ``limit_request_fields`` 100,
    ``limit_request_field_size`` 8190) answer 400 before the application, and the server keeps
    answering normal requests."""
    body = envelope("core.ping", "[]")
    head = f"POST /api/current HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    cases = {
        "request line > 4094 bytes": f"POST /api/current?{'a' * 5000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        "> 100 headers": (head + "".join(f"X-H{i}: v\r\n" for i in range(120)) + "\r\n").encode() + body,
        "header > 8190 bytes": (head + f"X-Big: {'b' * 9000}\r\n\r\n").encode() + body,
        "10 KB cookie": (head + f"Cookie: __Host-sid={'c' * 10_240}\r\n\r\n").encode() + body,
    }
    assert ping(server) == 200
    for why, request in cases.items():
        status_line = raw_exchange(server, request)
        assert status_line.split(b" ")[1:2] in ([b"400"], [b"414"], [b"431"]), (why, status_line)
        assert ping(server) == 200, why
    # Within the limits: the application answers.
    request = (head + f"X-Ok: {'o' * 4000}\r\n\r\n").encode() + body
    assert raw_exchange(server, request).startswith(b"HTTP/1.1 200")


# --- E13: fuzzing the filter grammar through both interfaces ------------------------------------------------

PATHS = st.sampled_from(
    [
        "id",
        "origin",
        "internal",
        "credentials",
        "credentials_data",
        "credentials_data.username",
        "credentials_data.api_key.id",
        "credentials_data.parent.credentials_data.username",
        "created_at",
        "created_at.$date",
        "ended_at",
        "secret_hash",
        "user.password",
        "origin__regex",
        "a\\.b",
        "*",
        "",
    ]
)
OPERATORS = st.sampled_from(
    [
        "=",
        "!=",
        ">",
        ">=",
        "<",
        "<=",
        "~",
        "C~",
        "in",
        "nin",
        "rin",
        "rnin",
        "^",
        "!^",
        "$",
        "!$",
        "C=",
        "Cin",
        "==",
        "",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["(", "a+", "^(a+)+$", "2026-01-01T00:00:00", "10.", "%", "_"])
    | st.fixed_dictionaries({"$date": st.integers(min_value=-(2**62), max_value=2**62)})
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=8)
LEAVES = st.tuples(PATHS, OPERATORS, VALUES).map(list)
NODES = st.recursive(
    LEAVES,
    lambda inner: st.tuples(st.just("OR"), st.lists(inner | st.lists(inner, max_size=3), max_size=3)).map(
        list
    ),
    max_leaves=10,
)
FILTERS = st.lists(NODES, max_size=4) | st.none() | VALUES
OPTIONS = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "count": st.booleans() | st.integers(0, 1),
        "get": st.booleans(),
        "limit": st.integers(-2, 10_002),
        "offset": st.integers(-1, 5),
        "order_by": st.lists(
            st.sampled_from(
                [
                    "origin",
                    "-created_at",
                    "nulls_first:-credentials_data.username",
                    "id",
                    "secret_hash",
                    "credentials_data",
                ]
            ),
            max_size=3,
        ),
        "select": st.lists(PATHS | st.tuples(PATHS, st.text(max_size=5)).map(list), max_size=3),
        "extra": st.fixed_dictionaries({}, optional={"history": st.booleans() | st.none()}),
        "force_sql_filters": st.booleans(),
        "bogus": st.integers(),
    },
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(filters=FILTERS, options=OPTIONS)
def test_E13_fuzzed_filters_never_get_a_5xx(
    admin_rpc: RPC, admin_rest: Rest, filters: Any, options: Any
) -> None:
    response = admin_rpc.raw("auth.sessions", filters, options)
    rest = admin_rest.post("/auth/sessions/query", {"query-filters": filters, "query-options": options})
    assert rest.status_code in (200, 400, 404, 413), rest.content
    if response.status_code == 400:  # integers of more than 20 digits: a parse error on both
        assert response.json()["error"]["code"] == -32700, response.content
        assert [e["attribute"] for e in errors(rest)] == ["body"]
        return
    if response.status_code == 413:
        assert rest.status_code == 413
        return
    assert response.status_code == 200, response.content
    payload = response.json()
    if "error" in payload:
        assert payload["error"]["code"] in (-32602, -32001), payload
    # The two interfaces agree: a result on one is the same result on the other.
    if "result" in payload:
        assert rest.status_code == 200
        assert _without_current(rest.json()) == _without_current(payload["result"])
    elif payload["error"]["code"] == -32602:
        assert rest.status_code == 400
        assert [e["attribute"] for e in errors(rest)] == [a for a, _, _ in payload["error"]["data"]["extra"]]


def _without_current(result: Any) -> Any:
    """``current`` differs between the two clients' sessions; everything else must be equal."""
    if isinstance(result, list):
        return [_without_current(r) for r in result]
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k != "current"}
    return result


PARAMETERS = st.sampled_from(
    [
        "origin",
        "origin__startswith",
        "origin__regex",
        "origin__in",
        "origin__ieq",
        "internal",
        "internal__neq",
        "created_at__gt",
        "credentials_data.api_key.id__lte",
        "credentials_data.username__iregex",
        "limit",
        "offset",
        "order_by",
        "count",
        "history",
        "secret_hash",
        "nope",
    ]
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    params=st.lists(
        st.tuples(
            PARAMETERS, st.text(max_size=10) | st.sampled_from(["true", "-1", "1e9", "(", "2026-01-01"])
        ),
        max_size=4,
    )
)
def test_E13_fuzzed_query_parameters_never_get_a_5xx(admin_rest: Rest, params: list[tuple[str, str]]) -> None:
    response = admin_rest.http.get(f"/api/v2.0/auth/sessions?{urlencode(params)}")
    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        errors(response)


# --- E14: unexpected errors ----------------------------------------------------------------------------------


def test_E14_an_unexpected_error_is_a_generic_json_500_with_a_request_id(
    admin: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    """DEBUG off: JSON with a request id (TrueNAS-shaped ``-32001`` on JSON-RPC, ``EFAULT``), no
    traceback, exception text, SQL or settings; the full traceback is logged under that id."""
    settings.DEBUG = False

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("secret detail /etc/passwd SELECT * FROM x")

    monkeypatch.setattr(selectors, "session_query", broken)
    rpc = RPC(raise_request_exception=False)
    rpc.login("admin")
    rest = Rest(raise_request_exception=False)
    rest.login("admin")
    caplog.set_level(logging.ERROR)
    responses = {
        "jsonrpc": rpc.raw("auth.sessions", [], {}),
        "rest-get": rest.get("/auth/sessions"),
        "rest-post": rest.post("/auth/sessions/query", {}),
    }
    for name, response in responses.items():
        assert response.status_code == 500, name
        assert response["Content-Type"].startswith("application/json"), name
        text = response.content.decode()
        for leak in ("secret", "passwd", "SELECT", "Traceback", "RuntimeError", "File ", "SECRET_KEY"):
            assert leak not in text, (name, leak)
        if name == "jsonrpc":
            error = response.json()["error"]
            assert response.json()["id"] == 1
            assert error["code"] == -32001
            data = error["data"]
            assert {"error", "errname", "reason", "trace", "extra"} <= set(data)
            assert (data["error"], data["errname"], data["trace"]) == (14, "EFAULT", None)
            request_id = data["request_id"]
            assert request_id in data["reason"]
        else:
            request_id = response.json()["request_id"]
        assert response["X-Request-ID"] == request_id, name
        logged = [r for r in caplog.records if request_id in r.getMessage()]
        assert logged, name
        assert logged[0].exc_info is not None, name
        assert logged[0].exc_info[0] is RuntimeError, name


def test_E14_unexpected_errors_in_unauthenticated_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(context: Any, params: list[Any]) -> Any:
        raise KeyError("internal state")

    monkeypatch.setitem(methods.METHODS, "core.ping", methods.Method("core.ping", boom, auth_required=False))
    response = RPC(raise_request_exception=False).raw("core.ping")
    assert response.status_code == 500
    assert response.json()["error"]["data"]["errname"] == "EFAULT"
    assert "internal state" not in response.content.decode()


# --- E15: manage.py ----------------------------------------------------------------------------------------


E15_CASES = [
    (["list", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["list", "--format", "yaml"], 2, "invalid choice: 'yaml'"),
    (["list", "--filters"], 2, "expected one argument"),
    (["list", "--filters", "[" * 100_000], 1, "--filters"),
    (["list", "--filters", '[["a", "=", NaN]]'], 1, "--filters"),
    (["list", "--filters", '[["\\u001b[31mred\\u202e", "=", 1]]'], 1, "unknown field"),
    (["list", "--options", '{"limit": 99999}'], 1, "options.limit"),
    (["list", "--options", '{"get": true}', "--filters", '[["id", "=", "nope"]]'], 1, "no session matches"),
]


def test_E15_sessions_list_bad_input_is_one_line_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``manage.py sessions list`` as ``manage.py`` runs it (`ManagementUtility`, in this process to
    stay fast; ``tests/test_commands_sessions.py`` runs real subprocesses): argparse errors exit 2,
    bad input exits 1, with one line on stderr (after argparse's usage), control characters
    escaped, never a traceback."""
    monkeypatch.setattr(connections, "close_all", lambda: None)  # keep the test's connection

    def check(argv: list[str], status: int, message: str) -> None:
        with pytest.raises(SystemExit) as exited:
            ManagementUtility(["manage.py", "sessions", *argv]).execute()
        out, err = capsys.readouterr()
        assert exited.value.code == status, err
        assert out == ""
        assert "Traceback" not in err
        assert "\x1b" not in err
        assert "\u202e" not in err
        lines = err.strip().splitlines()
        if status == 1:
            assert len(lines) == 1, lines
        assert message in lines[-1], lines[-1]

    failures = []
    for argv, status, message in E15_CASES:
        try:
            check(argv, status, message)
        except AssertionError as exc:
            failures.append(f"{argv[:3]!r:.80}: {exc}")
    assert not failures, "\n".join(failures)


# --- E16: malformed logins cost nothing and still count ------------------------------------------------------


@pytest.mark.parametrize("name", ["jsonrpc", "rest"])
def test_E16_malformed_logins_are_refused_before_hashing_or_writes_and_are_rate_limited(
    alice: Any, settings: Any, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Shape errors are counted by the per-(method, address) limiter (JSON-RPC counts before calling
    the method, REST before calling the service) and do nothing else: no hash, no session, no audit
    record, no lockout counter -- the limiter's own counter is the only write. A body that is not
    JSON at all costs not even that: it is refused before any statement (and before the limiter,
    which needs the method)."""
    settings.SESSIONS_LOGIN_RATE = 3
    hashes = HashSpy(monkeypatch)
    address = "10.0.0.7" if name == "jsonrpc" else "10.0.0.8"
    malformed: list[Any] = [{**LOGIN, "username": 5}, {**LOGIN, "is_admin": True}, {"mechanism": "NOPE"}]
    rpc, rest = RPC(remote_addr=address), Rest(remote_addr=address)

    def login(body: Any) -> Any:
        return rpc.raw("auth.login_ex", body) if name == "jsonrpc" else rest.post("/auth/login", body)

    with CaptureQueriesContext(connection) as queries:
        for body in ("{", "[[[", "\x00"):
            response = (
                rpc_post(rpc, body.encode())
                if name == "jsonrpc"
                else rest.post("/auth/login", body, raw=True)
            )
            assert response.status_code == 400
    assert len(queries) == 0
    with CaptureQueriesContext(connection) as queries:
        for body in malformed:
            invalid = rpc_invalid(login(body)) if name == "jsonrpc" else rest_invalid(login(body))
            assert invalid
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].split()[0].upper() in ("INSERT", "UPDATE", "DELETE")
    ]
    assert writes
    assert all("ratecounter" in sql.lower() for sql in writes), writes
    assert hashes.count == 0
    nothing_written()
    # The fourth call, correct this time, is over the limit.
    response = login(LOGIN)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    if name == "jsonrpc":
        assert response.json()["error"]["data"]["errname"] == "EBUSY"
    assert not UserSession.objects.exists()
    assert hashes.count == 0
