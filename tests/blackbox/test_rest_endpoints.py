"""Every REST endpoint under ``/api/v2.0/`` over a real gunicorn (interfaces.md §2).

Cookie sessions need ``X-CSRFToken`` on unsafe methods; ``Authorization: Bearer`` requests do not.
Errors are ``{"errors": [{"attribute", "message", "errno"}]}`` with 400 401 403 404 405 413 415 429.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from sessions_app.auth.roles import Role
from tests.blackbox.conftest import (
    API,
    COOKIE,
    CSRF_COOKIE,
    Answer,
    Http,
    another_session,
    bearer,
    fresh_address_budget,
)
from tests.blackbox.shapes import (
    API_KEY_KEYS,
    API_KEY_RE,
    AUDIT_KEYS,
    TOKEN_RE,
    assert_api_key_row,
    assert_date,
    assert_session_row,
    assert_user_info,
    now_ms,
    totp_code,
    totp_device,
)
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

OPENAPI_JSON = {"Accept": "application/vnd.oai.openapi+json"}

Client = Callable[[], Http]
LoggedIn = Callable[..., Http]

#: (method, path template) of every operation; `test_every_endpoint_is_covered` compares it with the
#: live schema.
COVERED: set[tuple[str, str]] = set()


def covers(*operations: str) -> Callable[[Any], Any]:
    for operation in operations:
        method, path = operation.split(" ", 1)
        COVERED.add((method, path))
    return lambda func: func


def assert_errors(
    answer: Answer, status: int, *, errno: int | None = None, attribute: str | None = None
) -> None:
    """An error answer of the REST API: the status and the one error body."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.header("Content-Type") == "application/json", answer.headers
    body = answer.json()
    assert set(body) <= {"errors", "request_id"}, body
    assert body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"attribute", "message", "errno"}, body
        assert isinstance(error["attribute"], str), body
        assert isinstance(error["message"], str), body
        assert isinstance(error["errno"], int), body
    if errno is not None:
        assert body["errors"][0]["errno"] == errno, body
    if attribute is not None:
        assert attribute in [error["attribute"] for error in body["errors"]], body


def with_csrf(http: Http) -> Http:
    """Fetch the CSRF token (``GET auth/csrf``) as a browser page would."""
    answer = http.get("/auth/csrf")
    assert answer.status == 200
    assert answer.json()["csrftoken"]
    assert CSRF_COOKIE in http.cookies
    return http


def key_of(http: Http, name: str = "deploy", **fields: Any) -> dict[str, Any]:
    answer = http.post("/api_key/", {"name": name, **fields})
    assert answer.status == 201, answer.body
    return answer.json()


@pytest.fixture
def browser(logged_in: LoggedIn) -> Callable[..., Http]:
    """``browser("alice", roles=[...])``: a cookie session with its CSRF token."""
    return lambda username, **kwargs: with_csrf(logged_in(username, **kwargs))


@pytest.fixture
def keyed(client: Client, browser: Callable[..., Http]) -> Callable[..., tuple[Http, dict[str, str]]]:
    """``keyed("alice", roles=[...])`` → a client with no cookies and the Bearer header of alice's key."""

    def make(username: str, **kwargs: Any) -> tuple[Http, dict[str, str]]:
        owner = browser(username, **kwargs)
        return client(), bearer(key_of(owner, f"{username}-bearer")["key"])

    return make


# --- authentication, CSRF, transport errors ----------------------------------------------------------


PROTECTED: list[tuple[str, str]] = [
    ("GET", "/auth/sessions"),
    ("POST", "/auth/sessions/query"),
    ("POST", "/auth/sessions/terminate_others"),
    ("POST", "/auth/sessions/" + "a" * 64 + "/terminate"),
    ("GET", "/auth/my_sessions"),
    ("POST", "/auth/my_sessions/query"),
    ("POST", "/auth/my_sessions/terminate_others"),
    ("POST", "/auth/my_sessions/" + "a" * 64 + "/terminate"),
    ("GET", "/auth/me"),
    ("POST", "/auth/logout"),
    ("POST", "/auth/generate_token"),
    ("GET", "/api_key/"),
    ("POST", "/api_key/"),
    ("GET", "/api_key/1/"),
    ("PATCH", "/api_key/1/"),
    ("DELETE", "/api_key/1/"),
    ("POST", "/api_key/1/reset/"),
    ("GET", "/audit/"),
    ("POST", "/audit/query"),
]


def test_anonymous_is_401(client: Client, subtests: pytest.Subtests) -> None:
    for method, path in PROTECTED:
        with subtests.test(f"{method} {path}"):
            fresh_address_budget()
            http = client()
            answer = http.rest(method, path, {} if method in ("POST", "PATCH") else None)
            assert_errors(answer, 401, errno=207)
            assert answer.header("WWW-Authenticate") == 'Bearer realm="api"'
            # A forged cookie or an unknown key is no better.
            http.cookies[COOKIE] = "f" * 64
            assert_errors(http.rest(method, path, None), 401)
            assert_errors(client().rest(method, path, None, headers=bearer("1-" + "b" * 64)), 401)


def test_csrf_on_cookie_sessions_only(browser: Callable[..., Http], keyed: Any, client: Client) -> None:
    alice = browser("alice")
    # Without the token: 403 on every unsafe method, and nothing happens.
    answer = alice.post("/api_key/", {"name": "no-token"}, csrf=False)
    assert_errors(answer, 403, errno=13)
    assert "CSRF" in answer.json()["errors"][0]["message"]
    assert_errors(alice.post("/auth/my_sessions/query", {}, csrf=False), 403)
    assert_errors(alice.post("/auth/logout", csrf=False), 403)
    wrong = alice.post("/api_key/", {"name": "bad-token"}, csrf=False, headers={"X-CSRFToken": "x" * 32})
    assert_errors(wrong, 403)
    assert alice.get("/api_key/").json() == []
    assert alice.get("/auth/me").status == 200  # safe methods need no token
    # With it: accepted.
    assert alice.post("/api_key/", {"name": "with-token"}).status == 201
    assert alice.post("/auth/my_sessions/query", {}).status == 200
    # Bearer requests carry no ambient credential: no token needed.
    http, auth = keyed("bob")
    assert http.post("/api_key/", {"name": "bearer-made"}, headers=auth).status == 201
    assert http.post("/auth/my_sessions/query", {}, headers=auth).status == 200
    # Basic too.
    basic = {"Authorization": "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()}
    assert client().post("/auth/my_sessions/query", {}, headers=basic).status == 200


JSON_BODIES: list[tuple[str, bytes]] = [
    ("/auth/sessions/query", b"{}"),
    ("/auth/my_sessions/query", b"{}"),
    ("/audit/query", b"{}"),
    ("/api_key/", b'{"name": "x"}'),
    ("/auth/generate_token", b"{}"),
    ("/auth/login", b'{"mechanism": "PASSWORD_PLAIN"}'),
    ("/auth/login_continue", b"{}"),
]


def test_non_json_bodies_are_415(keyed: Any, subtests: pytest.Subtests) -> None:
    http, auth = keyed("admin", superuser=True)
    for path, body in JSON_BODIES:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "text/json"):
            with subtests.test(f"{path} {content_type}"):
                answer = http.post(path, raw=body, content_type=content_type, headers=auth)
                assert_errors(answer, 415, attribute="content_type")


def test_login_needs_json_even_without_a_body(client: Client) -> None:
    for path in ("/auth/login", "/auth/login_continue"):
        answer = client().request("POST", API + path, b"", {"Content-Type": "text/plain"})
        assert_errors(answer, 415)
        answer = client().request("POST", API + path, None, {})
        assert_errors(answer, 415)


def test_body_caps_413(client: Client, keyed: Any) -> None:
    small = {"mechanism": "TOKEN_PLAIN", "token": "x" * (8 * 1024)}
    assert_errors(client().post("/auth/login", small), 413, attribute="body")
    http, auth = keyed("admin", superuser=True)
    filters = [["credentials_data.username", "=", "x" * 600]] * 50  # ~32 KiB: fine once authenticated
    assert http.post("/auth/sessions/query", {"query-filters": filters}, headers=auth).status == 200
    big = {"query-filters": [["credentials_data.username", "=", "x" * 1000]] * 70}  # > 64 KiB
    assert_errors(http.post("/auth/sessions/query", big, headers=auth), 413, errno=7)
    assert_errors(http.post("/api_key/", {"name": "n" * (65 * 1024)}, headers=auth), 413)


NOT_ALLOWED: list[tuple[str, str, set[str]]] = [
    ("POST", "/auth/sessions", {"GET"}),
    ("DELETE", "/auth/sessions", {"GET"}),
    ("GET", "/auth/sessions/query", {"POST"}),
    ("PUT", "/auth/me", {"GET"}),
    ("GET", "/auth/logout", {"POST"}),
    ("GET", "/auth/login", {"POST"}),
    ("PUT", "/api_key/1/", {"GET", "PATCH", "DELETE"}),
    ("DELETE", "/api_key/", {"GET", "POST"}),
    ("GET", "/api_key/1/reset/", {"POST"}),
    ("POST", "/audit/", {"GET"}),
    ("OPTIONS", "/auth/me", {"GET"}),
    ("TRACE", "/auth/me", {"GET"}),
]


def test_405_with_allow(keyed: Any, subtests: pytest.Subtests) -> None:
    http, auth = keyed("admin", superuser=True)
    for method, path, allowed in NOT_ALLOWED:
        with subtests.test(f"{method} {path}"):
            answer = http.rest(method, path, None, headers=auth)
            assert answer.status == 405, (answer.status, answer.body)
            allow = {m.strip() for m in (answer.header("Allow") or "").split(",") if m.strip()}
            assert allowed <= allow, allow
            assert method not in allow, allow
            if method != "TRACE":
                assert_errors(answer, 405)


def test_unknown_paths_are_json_404(keyed: Any, client: Client) -> None:
    http, auth = keyed("admin", superuser=True)
    for path in (
        "/nope",
        "/auth/sessions/",
        "/api_key/abc/",
        "/auth/sessions/a%20b/terminate",
        "/auth/my_sessions/a%0Ab/terminate",
    ):
        assert_errors(http.get(path, headers=auth), 404)
    assert_errors(client().get("/nope"), 404)


def test_unknown_and_repeated_query_parameters_are_400(keyed: Any) -> None:
    http, auth = keyed("admin", superuser=True)
    for path in ("/auth/sessions", "/auth/my_sessions", "/api_key/", "/audit/"):
        assert_errors(http.get(path + "?bogus=1", headers=auth), 400, attribute="bogus")
        assert_errors(http.get(path + "?limit=1&limit=2", headers=auth), 400, attribute="limit")
        assert_errors(http.get(path + "?limit=x", headers=auth), 400, attribute="limit")
        assert_errors(http.get(path + "?limit=10001", headers=auth), 400, attribute="limit")
    assert_errors(http.get("/auth/me?x=1", headers=auth), 400, attribute="x")
    assert_errors(http.post("/auth/sessions/query?x=1", {}, headers=auth), 400, attribute="x")


# --- sessions ----------------------------------------------------------------------------------------


@covers("GET /auth/sessions")
def test_sessions_list(keyed: Any, browser: Callable[..., Http], client: Client) -> None:
    http, auth = keyed("admin", superuser=True)
    browser("alice")
    another_session(client(), "alice")
    rows = http.get("/auth/sessions", headers=auth)
    assert rows.status == 200
    assert rows.header("Cache-Control") == "no-store"
    assert len(rows.json()) == 3  # admin's cookie session, alice's two; the Bearer call has none
    for row in rows.json():
        assert_session_row(row)
        assert row["current"] is False
    query = "?credentials_data.username=alice&internal=false&order_by=-created_at&limit=1&offset=0"
    page = http.get("/auth/sessions" + query, headers=auth).json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 2
    assert page["previous"] is None
    assert len(page["results"]) == 1
    assert "offset=1" in page["next"]
    second = http.get(page["next"][page["next"].index("/api/v2.0") + len(API) :], headers=auth).json()
    assert second["next"] is None
    assert second["previous"] is not None
    assert second["results"][0]["created_at"]["$date"] <= page["results"][0]["created_at"]["$date"]
    # The interfaces.md example, verbatim.
    example = (
        "/auth/sessions?internal=false&credentials=API_KEY&credentials_data.username=alice"
        "&created_at__gt=2026-11-01T00:00:00Z&order_by=-created_at&limit=50&offset=0&count=true"
    )
    assert http.get(example, headers=auth).json() == 0
    assert (
        http.get("/auth/sessions?count=true&credentials_data.username__ieq=ALICE", headers=auth).json() == 2
    )
    assert http.get("/auth/sessions?credentials__in=API_KEY,TOKEN", headers=auth).json() == []
    since = http.get(f"/auth/sessions?count=true&created_at__gt={_iso(now_ms() - 600_000)}", headers=auth)
    assert since.json() == 3
    history = http.get("/auth/sessions?history=true", headers=auth).json()
    for row in history:
        assert_session_row(row, history=True)
    assert_errors(http.get("/auth/sessions?internal=maybe", headers=auth), 400, attribute="internal")
    assert_errors(
        http.get("/auth/sessions?created_at__gt=yesterday", headers=auth), 400, attribute="created_at__gt"
    )
    assert_errors(http.get("/auth/sessions?order_by=nope", headers=auth), 400, attribute="order_by")
    assert_errors(http.get("/auth/sessions?internal__startswith=x", headers=auth), 400)
    # Roles: AUTH_SESSIONS_READ (or READONLY_ADMIN) only.
    plain, plain_auth = keyed("plain")
    assert_errors(plain.get("/auth/sessions", headers=plain_auth), 403, errno=13)
    reader, reader_auth = keyed("reader", roles=[Role.READONLY_ADMIN])
    assert reader.get("/auth/sessions?count=true", headers=reader_auth).json() >= 4


def _iso(ms: int) -> str:
    import datetime as dt

    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


@covers("POST /auth/sessions/query")
def test_sessions_query(browser: Callable[..., Http], logged_in: LoggedIn) -> None:
    admin = browser("admin", superuser=True)
    logged_in("alice")
    body = {
        "query-filters": [["internal", "=", False]],
        "query-options": {"order_by": ["-created_at"], "limit": 10},
    }
    rest = admin.post("/auth/sessions/query", body)
    assert rest.status == 200
    rpc = admin.call("auth.sessions", body["query-filters"], body["query-options"])
    assert rest.json() == rpc  # exactly what auth.sessions returns
    assert len(rpc) == 2
    assert admin.post("/auth/sessions/query", {}).json() == admin.call("auth.sessions")
    assert admin.post("/auth/sessions/query", {"query-filters": None, "query-options": None}).status == 200
    assert admin.post("/auth/sessions/query", {"query-options": {"count": True}}).json() == 2
    got = admin.post(
        "/auth/sessions/query", {"query-filters": [["current", "=", True]], "query-options": {"get": True}}
    )
    assert got.json()["current"] is True
    missing = admin.post(
        "/auth/sessions/query",
        {"query-filters": [["credentials", "=", "TOKEN"]], "query-options": {"get": True}},
    )
    assert_errors(missing, 404)
    assert missing.json()["errors"][0]["message"] == "MatchNotFound()"
    assert_errors(
        admin.post("/auth/sessions/query", {"query-options": {"limit": -1}}), 400, attribute="options.limit"
    )
    assert_errors(admin.post("/auth/sessions/query", {"query-filters": [["x"]]}), 400, errno=22)
    assert_errors(admin.post("/auth/sessions/query", {"query-filters": "x"}), 400)
    assert_errors(admin.post("/auth/sessions/query", {"bogus": 1}), 400, attribute="bogus")
    assert_errors(admin.post("/auth/sessions/query", raw=b"{not json"), 400, attribute="body")
    assert_errors(admin.post("/auth/sessions/query", raw=b"[1, 2]"), 400)
    plain = browser("plain")
    assert_errors(plain.post("/auth/sessions/query", {}), 403, errno=13)


@covers("POST /auth/sessions/{session_id}/terminate")
def test_sessions_terminate(browser: Callable[..., Http], logged_in: LoggedIn) -> None:
    admin = browser("admin", superuser=True)
    alice = logged_in("alice")
    target = admin.call("auth.sessions", [["credentials_data.username", "=", "alice"]], {"get": True})["id"]
    reader = browser("reader", roles=[Role.AUTH_SESSIONS_READ])
    assert_errors(reader.post(f"/auth/sessions/{target}/terminate"), 403, errno=13)
    assert alice.call("auth.me")["pw_name"] == "alice"
    answer = admin.post(f"/auth/sessions/{target}/terminate")
    assert answer.status == 200
    assert answer.json() == {"id": target, "terminated": True}
    assert alice.rpc("auth.me").error["data"]["error"] == 207
    assert_errors(admin.post(f"/auth/sessions/{target}/terminate"), 404, errno=2)
    assert_errors(admin.post("/auth/sessions/" + "z" * 64 + "/terminate"), 404)
    writer = browser("writer", roles=[Role.AUTH_SESSIONS_WRITE])
    own = writer.call("auth.my_sessions", [], {"get": True})["id"]
    assert writer.post(f"/auth/sessions/{own}/terminate").json()["terminated"] is True


@covers("POST /auth/sessions/terminate_others")
def test_sessions_terminate_others(
    browser: Callable[..., Http], logged_in: LoggedIn, keyed: Any, client: Client
) -> None:
    admin = browser("admin", superuser=True)
    other_admin = another_session(client(), "admin")
    alice = logged_in("alice")
    plain = browser("plain")
    assert_errors(plain.post("/auth/sessions/terminate_others"), 403, errno=13)
    answer = admin.post("/auth/sessions/terminate_others")
    assert answer.status == 200
    assert answer.json() == {"terminated": 3}
    for gone in (other_admin, alice, plain):
        assert gone.rpc("auth.me").error["data"]["error"] == 207
    assert admin.get("/auth/me").status == 200
    http, auth = keyed("root", superuser=True)
    assert_errors(http.post("/auth/sessions/terminate_others", headers=auth), 403, errno=13)


@covers("GET /auth/my_sessions", "POST /auth/my_sessions/query")
def test_my_sessions(browser: Callable[..., Http], logged_in: LoggedIn, client: Client) -> None:
    alice = browser("alice")
    another_session(client(), "alice")
    logged_in("bob")
    rows = alice.get("/auth/my_sessions").json()
    assert len(rows) == 2
    for row in rows:
        assert_session_row(row)
        assert row["credentials_data"]["username"] == "alice"
    assert [row["current"] for row in rows] == [True, False]
    assert alice.get("/auth/my_sessions?credentials_data.username=bob").json() == []
    page = alice.get("/auth/my_sessions?limit=1").json()
    assert page["count"] == 2
    assert len(page["results"]) == 1
    queried = alice.post("/auth/my_sessions/query", {"query-filters": [["current", "=", True]]})
    assert queried.json() == alice.call("auth.my_sessions", [["current", "=", True]])
    assert alice.post("/auth/my_sessions/query", {"query-options": {"count": True}}).json() == 2
    assert_errors(alice.post("/auth/my_sessions/query", {"query-options": {"nope": 1}}), 400)


@covers("POST /auth/my_sessions/{session_id}/terminate", "POST /auth/my_sessions/terminate_others")
def test_my_sessions_terminate(
    browser: Callable[..., Http], logged_in: LoggedIn, client: Client, keyed: Any
) -> None:
    alice = browser("alice")
    second = another_session(client(), "alice")
    third = another_session(client(), "alice")
    bob = logged_in("bob")
    bobs = bob.call("auth.my_sessions", [], {"get": True})["id"]
    assert_errors(alice.post(f"/auth/my_sessions/{bobs}/terminate"), 404, errno=2)  # not hers
    assert bob.call("auth.me")["pw_name"] == "bob"
    mine = alice.call("auth.my_sessions", [["current", "=", False]], {"order_by": ["created_at"]})[0]["id"]
    answer = alice.post(f"/auth/my_sessions/{mine}/terminate")
    assert answer.json() == {"id": mine, "terminated": True}
    assert second.rpc("auth.me").error["data"]["error"] == 207
    assert_errors(alice.post(f"/auth/my_sessions/{mine}/terminate"), 404)
    assert alice.post("/auth/my_sessions/terminate_others").json() == {"terminated": 1}
    assert third.rpc("auth.me").error["data"]["error"] == 207
    assert bob.call("auth.me")["pw_name"] == "bob"  # other users' sessions are untouched
    assert alice.post("/auth/my_sessions/terminate_others").json() == {"terminated": 0}
    http, auth = keyed("carol")
    assert_errors(http.post("/auth/my_sessions/terminate_others", headers=auth), 403)


# --- authentication endpoints ------------------------------------------------------------------------


@covers("GET /auth/me")
def test_me(browser: Callable[..., Http], keyed: Any) -> None:
    alice = browser("alice", roles=[Role.AUDIT_READ])
    info = alice.get("/auth/me").json()
    assert_user_info(info, "alice")
    assert info["privilege"]["roles"]["$set"] == ["AUDIT_READ"]
    http, auth = keyed("bob")
    assert http.get("/auth/me", headers=auth).json()["pw_name"] == "bob"


@covers("POST /auth/login", "POST /auth/logout", "GET /auth/csrf")
def test_login_csrf_logout(client: Client, user: Any) -> None:
    user("alice")
    http = client()
    csrf = http.get("/auth/csrf")
    assert csrf.status == 200
    assert set(csrf.json()) == {"csrftoken"}
    assert http.cookies[CSRF_COOKIE]
    before = http.cookies[CSRF_COOKIE]
    answer = http.post(
        "/auth/login", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}
    )
    assert answer.status == 200
    result = answer.json()
    assert result["response_type"] == "SUCCESS"
    assert result["authenticator"] == "LEVEL_1"
    assert_user_info(result["user_info"], "alice")
    assert COOKIE in http.cookies
    assert http.cookies[CSRF_COOKIE] != before  # rotated at login
    assert http.get("/auth/me").json()["pw_name"] == "alice"
    # The login endpoint refuses other sites' pages.
    foreign = client().post(
        "/auth/login",
        {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert_errors(foreign, 403)
    wrong = client()
    answer = wrong.post("/auth/login", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": "x"})
    assert answer.json() == {"response_type": "AUTH_ERR"}
    assert COOKIE not in wrong.cookies
    assert_errors(client().post("/auth/login", {"mechanism": "NOPE"}), 400, errno=22)
    assert_errors(client().post("/auth/login", ["x"]), 400)
    # Logout: 204, the cookie cleared, the session gone everywhere.
    cookie = http.cookies[COOKIE]
    answer = http.post("/auth/logout")
    assert answer.status == 204
    assert answer.body == b""
    assert COOKIE not in http.cookies
    replay = client()
    replay.cookies[COOKIE] = cookie
    assert_errors(replay.get("/auth/me"), 401)
    assert_errors(http.post("/auth/logout"), 401)


def test_login_rate_limit_429(client: Client) -> None:
    http = client()
    body = {"mechanism": "TOKEN_PLAIN", "token": "t" * 64}
    for _ in range(20):
        assert http.post("/auth/login", body).json() == {"response_type": "AUTH_ERR"}
    answer = http.post("/auth/login", body)
    assert_errors(answer, 429, errno=16)
    assert 1 <= int(answer.header("Retry-After") or "0") <= 60
    # The limit is the JSON-RPC one: the same counter for auth.login_ex.
    rpc = http.rpc("auth.login_ex", body)
    assert rpc.status == 429
    assert rpc.error["data"]["errname"] == "EBUSY"


def test_basic_auth_rate_limit_429(client: Client) -> None:
    for _ in range(20):
        assert_errors(client().get("/auth/me", headers={"Authorization": "Basic !!!"}), 401)
    answer = client().get("/auth/me", headers={"Authorization": "Basic !!!"})
    assert answer.status == 429
    assert 1 <= int(answer.header("Retry-After") or "0") <= 60
    assert_errors(answer, 429, errno=16)


@covers("POST /auth/login_continue")
def test_login_continue(client: Client, user: Any) -> None:
    device = totp_device(user("carol"))
    http = client()
    first = http.post(
        "/auth/login", {"mechanism": "PASSWORD_PLAIN", "username": "carol", "password": PASSWORD}
    )
    assert first.json() == {"response_type": "OTP_REQUIRED", "username": "carol"}
    assert COOKIE not in http.cookies
    answer = http.post("/auth/login_continue", {"mechanism": "OTP_TOKEN", "otp_token": totp_code(device)})
    assert answer.status == 200
    assert answer.json()["response_type"] == "SUCCESS"
    assert COOKIE in http.cookies
    row = http.post(
        "/auth/my_sessions/query", {"query-filters": [["current", "=", True]], "query-options": {"get": True}}
    )
    assert row.json()["credentials"] == "LOGIN_TWOFACTOR"
    lone = client().post("/auth/login_continue", {"mechanism": "OTP_TOKEN", "otp_token": "123456"})
    assert lone.json() == {"response_type": "AUTH_ERR"}
    assert_errors(client().post("/auth/login_continue", {"mechanism": "PASSWORD_PLAIN"}), 400, errno=22)


@covers("POST /auth/generate_token")
def test_generate_token(browser: Callable[..., Http], keyed: Any, client: Client) -> None:
    alice = browser("alice")
    answer = alice.post("/auth/generate_token", {})
    assert answer.status == 200
    assert set(answer.json()) == {"token"}
    assert TOKEN_RE.match(answer.json()["token"])
    token = alice.post(
        "/auth/generate_token", {"ttl": 60, "attrs": {}, "match_origin": True, "single_use": True}
    )
    login = client().rpc("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token.json()["token"]})
    assert login.result["response_type"] == "SUCCESS"
    assert alice.post("/auth/generate_token").status == 200  # no body at all
    for bad, attribute in (
        ({"ttl": 0}, "ttl"),
        ({"ttl": "60"}, "ttl"),
        ({"single_use": 1}, "single_use"),
        ({"x": 1}, "x"),
    ):
        assert_errors(alice.post("/auth/generate_token", bad), 400, attribute=attribute)
    http, auth = keyed("bob")
    assert_errors(http.post("/auth/generate_token", {}, headers=auth), 403, errno=13)


# --- API keys ----------------------------------------------------------------------------------------


@covers("GET /api_key/", "POST /api_key/", "GET /api_key/{id}/")
def test_api_keys_list_create_retrieve(
    browser: Callable[..., Http], keyed: Any, client: Client, user: Any
) -> None:
    alice = browser("alice")
    expires = now_ms() + 86_400_000 + 7
    created = alice.post("/api_key/", {"name": "deploy", "expires_at": {"$date": expires}})
    assert created.status == 201
    body = created.json()
    assert set(body) == API_KEY_KEYS | {"key"}
    assert body["expires_at"] == {"$date": expires}
    match = API_KEY_RE.match(body["key"])
    assert match
    assert int(match.group(1)) == body["id"]
    assert client().get("/auth/me", headers=bearer(body["key"])).json()["pw_name"] == "alice"
    iso = alice.post("/api_key/", {"name": "iso", "expires_at": "2099-01-01T00:00:00Z"}).json()
    assert iso["expires_at"] == {"$date": 4070908800000}
    listed = alice.get("/api_key/").json()
    assert sorted(row["name"] for row in listed) == ["deploy", "iso"]
    for row in listed:
        assert_api_key_row(row, username="alice")
    assert alice.get("/api_key/?limit=1").json()["count"] == 2
    assert alice.get("/api_key/?count=true&name__startswith=de").json() == 1
    retrieved = alice.get(f"/api_key/{body['id']}/").json()
    assert_api_key_row(retrieved, id=body["id"], name="deploy")
    for bad, attribute in (
        ({"name": "deploy"}, "api_key_create.name"),
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "y", "expires_at": "soon"}, "expires_at"),
        ({"name": "y", "bogus": 1}, "bogus"),
    ):
        assert_errors(alice.post("/api_key/", bad), 400, attribute=attribute)
    # Other users' keys: 404 (not 403) without API_KEY_READ.
    bob = browser("bob")
    bobs = key_of(bob, "b")["id"]
    assert_errors(alice.get(f"/api_key/{bobs}/"), 404, errno=2)
    assert_errors(alice.get("/api_key/999999/"), 404)
    assert [row["name"] for row in alice.get("/api_key/").json()] == ["deploy", "iso"]
    reader, reader_auth = keyed("reader", roles=[Role.API_KEY_READ])
    assert reader.get(f"/api_key/{bobs}/", headers=reader_auth).json()["username"] == "bob"
    assert reader.get("/api_key/?count=true", headers=reader_auth).json() == 4
    # Keys for someone else: API_KEY_WRITE.
    assert_errors(alice.post("/api_key/", {"name": "for-bob", "username": "bob"}), 403, errno=13)
    writer = browser("writer", roles=[Role.API_KEY_WRITE])
    made = writer.post("/api_key/", {"name": "for-bob", "username": "bob"})
    assert made.status == 201
    assert made.json()["username"] == "bob"
    assert_errors(writer.post("/api_key/", {"name": "z", "username": "nobody"}), 400, attribute="username")


@covers("PATCH /api_key/{id}/", "DELETE /api_key/{id}/", "POST /api_key/{id}/reset/")
def test_api_keys_update_delete_reset(browser: Callable[..., Http], keyed: Any, client: Client) -> None:
    alice = browser("alice")
    created = key_of(alice)
    expires = now_ms() + 3_600_000
    answer = alice.patch(f"/api_key/{created['id']}/", {"name": "renamed", "expires_at": {"$date": expires}})
    assert answer.status == 200
    assert_api_key_row(answer.json(), name="renamed", expires_at={"$date": expires})
    assert alice.patch(f"/api_key/{created['id']}/", {"expires_at": None}).json()["expires_at"] is None
    assert_errors(alice.patch(f"/api_key/{created['id']}/", {"name": ""}), 400, attribute="name")
    assert_errors(alice.patch(f"/api_key/{created['id']}/", {"reset": True}), 400, attribute="reset")
    reset = alice.post(f"/api_key/{created['id']}/reset/")
    assert reset.status == 200
    assert set(reset.json()) == API_KEY_KEYS | {"key"}
    assert reset.json()["key"] != created["key"]
    assert_errors(client().get("/auth/me", headers=bearer(created["key"])), 401)
    assert client().get("/auth/me", headers=bearer(reset.json()["key"])).status == 200
    # Other users' keys: 404 without API_KEY_READ, 403 with it but without API_KEY_WRITE.
    bob = browser("bob")
    bobs = key_of(bob, "b")["id"]
    for method, path, data in (
        ("PATCH", f"/api_key/{bobs}/", {"name": "mine"}),
        ("DELETE", f"/api_key/{bobs}/", None),
        ("POST", f"/api_key/{bobs}/reset/", None),
    ):
        assert_errors(alice.rest(method, path, data), 404, errno=2)
        reader, reader_auth = keyed(f"reader-{method.lower()}", roles=[Role.API_KEY_READ])
        assert_errors(reader.rest(method, path, data, headers=reader_auth), 403, errno=13)
    writer, writer_auth = keyed("writer", roles=[Role.API_KEY_WRITE])
    assert (
        writer.patch(f"/api_key/{bobs}/", {"name": "by-writer"}, headers=writer_auth).json()["name"]
        == "by-writer"
    )
    # Delete: 204, the key and its sessions end.
    session = client()
    assert session.rpc("auth.login_with_api_key", reset.json()["key"]).json()["result"] is True
    gone = alice.delete(f"/api_key/{created['id']}/")
    assert gone.status == 204
    assert gone.body == b""
    assert_errors(alice.delete(f"/api_key/{created['id']}/"), 404)
    assert session.rpc("auth.me").error["data"]["error"] == 207
    assert writer.delete(f"/api_key/{bobs}/", headers=writer_auth).status == 204
    assert_errors(alice.delete("/api_key/1/", csrf=False), 403)  # CSRF before anything else


# --- audit --------------------------------------------------------------------------------------------


@covers("GET /audit/", "POST /audit/query")
def test_audit(keyed: Any, browser: Callable[..., Http], client: Client) -> None:
    http, auth = keyed("auditor", roles=[Role.AUDIT_READ])
    client().rpc("auth.login", "auditor", "Sh0uld-N0t-Leak")
    rows = http.get("/audit/?order_by=timestamp", headers=auth).json()
    assert rows
    for row in rows:
        assert set(row) == AUDIT_KEYS, row
        assert_date(row["timestamp"])
    assert "Sh0uld-N0t-Leak" not in json.dumps(rows)
    page = http.get("/audit/?limit=2&event=AUTHENTICATION", headers=auth).json()
    assert set(page) == {"count", "next", "previous", "results"}
    failed = http.post(
        "/audit/query",
        {
            "query-filters": [["success", "=", False], ["username", "=", "auditor"]],
            "query-options": {"count": True},
        },
        headers=auth,
    )
    assert failed.json() == 1
    assert http.get("/audit/?success=false&username=auditor&count=true", headers=auth).json() == 1
    assert_errors(http.post("/audit/query", {"query-filters": [["nope", "=", 1]]}, headers=auth), 400)
    plain = browser("plain")
    assert_errors(plain.get("/audit/"), 403, errno=13)
    assert_errors(plain.post("/audit/query", {}), 403, errno=13)


def test_schema_and_docs_are_served(client: Client) -> None:
    schema = client().get("/schema/", headers=OPENAPI_JSON)
    assert schema.status == 200
    assert schema.json()["openapi"].startswith("3.")
    docs = client().get("/docs/")
    assert docs.status == 200
    assert re.search(rb"swagger", docs.body, re.IGNORECASE)


def test_every_endpoint_is_covered(client: Client) -> None:
    schema = client().get("/schema/", headers=OPENAPI_JSON).json()
    operations = {
        (method.upper(), path.removeprefix(API))
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert operations == COVERED, operations ^ COVERED
