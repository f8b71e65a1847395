"""REST authentication endpoints: login (+ OTP), logout, me, csrf, generate_token; CSRF and Bearer."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.middleware import pending_cookie_name, session_cookie_name
from sessions_app.models import AuditRecord, Credentials, UserSession
from sessions_app.services.users import onetime_password_issue
from tests.api.conftest import attributes, errors
from tests.conftest import PASSWORD

PENDING_COOKIE = pending_cookie_name()  # __Host-otp_pending: cookies are Secure in tests

LOGIN = {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}


def test_login_sets_the_session_and_csrf_cookies(rest: Any, alice: Any) -> None:
    client = rest()
    response = client.post("/auth/login", LOGIN)
    assert response.status_code == 200
    body = response.json()
    assert body["response_type"] == "SUCCESS"
    assert body["user_info"]["pw_name"] == "alice"
    cookie = response.cookies[session_cookie_name()]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert response.cookies["csrftoken"].value
    assert response["Cache-Control"] == "no-store"
    assert client.get("/auth/me").json()["pw_name"] == "alice"
    assert UserSession.objects.get().credentials == Credentials.LOGIN_PASSWORD


def test_failed_login_is_a_generic_auth_err(rest: Any, alice: Any) -> None:
    client = rest()
    for username in ("alice", "nobody"):
        response = client.post("/auth/login", {**LOGIN, "username": username, "password": "wrong"})
        assert response.status_code == 200
        assert response.json() == {"response_type": "AUTH_ERR"}
        assert session_cookie_name() not in response.cookies
    assert client.get("/auth/me").status_code == 401


def test_relogin_replaces_the_previous_session(rest: Any, alice: Any) -> None:
    client = rest("alice")
    first = UserSession.objects.get()
    client.login()
    first.refresh_from_db()
    assert first.end_reason == "LOGOUT"
    assert UserSession.objects.filter(ended_at__isnull=True).count() == 1


@pytest.mark.parametrize(
    ("body", "attribute"),
    [
        ({**LOGIN, "username": 5}, "login_data.username"),
        ({**LOGIN, "password": None}, "login_data.password"),
        ({**LOGIN, "is_admin": True}, "login_data.is_admin"),
        ({**LOGIN, "login_options": {"user_info": "yes"}}, "login_data.login_options.user_info"),
        ({"mechanism": "OTP_TOKEN", "otp_token": "123456"}, "login_data.mechanism"),
        ({}, "login_data.mechanism"),
        ([LOGIN], "login_data"),
    ],
)
def test_malformed_login_bodies_are_400(rest: Any, alice: Any, body: Any, attribute: str) -> None:
    response = rest().post("/auth/login", body)
    assert response.status_code == 400
    assert attribute in attributes(response)
    assert not UserSession.objects.exists()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("mechanism=PASSWORD_PLAIN&username=alice&password=x", "application/x-www-form-urlencoded"),
        (json.dumps(LOGIN), "text/plain"),
        ("", "text/plain"),
        (json.dumps(LOGIN), "multipart/form-data; boundary=x"),
    ],
)
def test_B16_login_needs_a_json_body(rest: Any, alice: Any, body: str, content_type: str) -> None:
    """B16: a cross-site form cannot send application/json, so it cannot log anyone in."""
    response = rest().post("/auth/login", body, raw=True, content_type=content_type)
    assert response.status_code == 415
    assert attributes(response) == ["content_type"]
    assert not UserSession.objects.exists()


def test_B16_cross_origin_login_is_403(rest: Any, alice: Any) -> None:
    response = rest().post("/auth/login", LOGIN, Origin="https://evil.example")
    assert response.status_code == 403
    assert not UserSession.objects.exists()
    assert rest().post("/auth/login", LOGIN, Origin="null").status_code == 403
    assert rest().post("/auth/login", LOGIN, Origin="http://testserver").json()["response_type"] == "SUCCESS"


def test_unauthenticated_logins_are_rate_limited(rest: Any, alice: Any, settings: Any) -> None:
    settings.SESSIONS_LOGIN_RATE = 2
    client = rest()
    for _ in range(2):
        assert client.post("/auth/login", {**LOGIN, "password": "x"}).status_code == 200
    response = client.post("/auth/login", LOGIN)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert errors(response)[0]["errno"] == 16
    assert not UserSession.objects.exists()
    assert AuditRecord.objects.filter(event_data__error="rate limited", username="alice").exists()
    # The limit is per (method, address): another address is not affected.
    assert rest(remote_addr="127.0.0.2").post("/auth/login", LOGIN).json()["response_type"] == "SUCCESS"
    # Shape errors count too (E16); malformed JSON does not reach the limiter.
    settings.SESSIONS_LOGIN_RATE = 1
    other = rest(remote_addr="127.0.0.3")
    assert other.post("/auth/login", {"mechanism": 1}).status_code == 400
    assert other.post("/auth/login", LOGIN).status_code == 429


def _totp_code(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    return f"{totp.token():0{device.digits}d}"


def test_login_with_a_second_factor(rest: Any, alice: Any) -> None:
    device = TOTPDevice.objects.create(user=alice, name="phone", confirmed=True)
    client = rest()
    response = client.post("/auth/login", LOGIN)
    assert response.json() == {"response_type": "OTP_REQUIRED", "username": "alice"}
    assert response.cookies[PENDING_COOKIE]["httponly"]
    assert client.get("/auth/me").status_code == 401
    response = client.post("/auth/login_continue", {"mechanism": "OTP_TOKEN", "otp_token": "12a456"})
    assert response.status_code == 400  # a malformed code is a field error (security.md E4)
    response = client.post(
        "/auth/login_continue", {"mechanism": "OTP_TOKEN", "otp_token": _totp_code(device)}
    )
    assert response.json()["response_type"] == "SUCCESS", response.json()
    assert client.get("/auth/me").json()["pw_name"] == "alice"
    assert UserSession.objects.get(ended_at__isnull=True).credentials == Credentials.LOGIN_TWOFACTOR
    assert rest().post("/auth/login_continue", {"mechanism": "OTP_TOKEN"}).status_code == 400


def test_logout(rest: Any, alice: Any) -> None:
    client = rest("alice")
    response = client.post("/auth/logout")
    assert response.status_code == 204
    assert response.cookies[session_cookie_name()].value == ""
    assert UserSession.objects.get().end_reason == "LOGOUT"
    assert client.get("/auth/me").status_code == 401
    assert client.post("/auth/logout").status_code == 401


def test_me(rest: Any, make_user: Any) -> None:
    from sessions_app.auth.roles import Role

    make_user("carol", roles=[Role.AUTH_SESSIONS_WRITE])
    info = rest("carol").get("/auth/me").json()
    assert info["pw_name"] == "carol"
    assert info["privilege"]["roles"]["$set"] == ["AUTH_SESSIONS_READ", "AUTH_SESSIONS_WRITE"]


def test_csrf_endpoint_sets_the_cookie(rest: Any) -> None:
    client = rest()
    response = client.get("/auth/csrf")
    assert response.status_code == 200
    assert response.json()["csrftoken"]
    assert response.cookies["csrftoken"].value


def test_generate_token(rest: Any, alice: Any, bearer: Any) -> None:
    client = rest("alice")
    response = client.post("/auth/generate_token", {"ttl": 60, "single_use": True})
    assert response.status_code == 200
    token = response.json()["token"]
    assert len(token) == 64
    other = rest()
    assert other.post("/auth/login", {"mechanism": "TOKEN_PLAIN", "token": token}).json()[
        "response_type"
    ] == ("SUCCESS")
    assert client.post("/auth/generate_token", {}).status_code == 200
    for body, attribute in (
        ({"ttl": "60"}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"single_use": "true"}, "single_use"),
        ({"attrs": []}, "attrs"),
        ({"scope": "all"}, "scope"),
    ):
        response = client.post("/auth/generate_token", body)
        assert response.status_code == 400
        assert attributes(response) == [attribute]
    assert rest().post("/auth/generate_token", {}, **bearer(alice)).status_code == 403


# --- CSRF and per-request credentials ------------------------------------------------------------


def test_B16_cookie_authenticated_unsafe_requests_need_the_csrf_token(rest: Any, alice: Any) -> None:
    """B16, measured: an authenticated POST without X-CSRFToken is refused."""
    client = rest("alice")
    for method, path, body in (
        ("POST", "/auth/logout", None),
        ("POST", "/auth/my_sessions/terminate_others", None),
        ("POST", "/api_key/", {"name": "k"}),
        ("POST", "/auth/generate_token", {}),
        ("POST", "/auth/login", LOGIN),
    ):
        response = client.send(method, path, body, csrf=False)
        assert response.status_code == 403, path
        assert errors(response)[0]["message"].startswith("CSRF Failed")
    response = client.post("/auth/logout", None, csrf=False, **{"X-CSRFToken": "x" * 32})
    assert response.status_code == 403
    assert client.get("/auth/me").status_code == 200  # safe methods need no token
    assert client.post("/auth/logout").status_code == 204


def test_form_post_with_the_session_cookie_is_refused(rest: Any, alice: Any) -> None:
    client = rest("alice")
    response = client.post(
        "/auth/logout", "a=1", raw=True, csrf=False, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 403
    assert client.get("/auth/me").status_code == 200


def test_B17_bearer_requests_need_no_csrf_token_and_ignore_cookies(
    rest: Any, alice: Any, bob: Any, bearer: Any
) -> None:
    """B17: a request with an Authorization header is authenticated by it alone."""
    headers = bearer(bob)
    client = rest("alice")
    assert client.get("/auth/me", **headers).json()["pw_name"] == "bob"
    response = client.post("/api_key/", {"name": "made-by-bearer"}, csrf=False, **headers)
    assert response.status_code == 201
    assert response.json()["username"] == "bob"
    # A bad Authorization header never falls back to the valid session cookie.
    response = client.get("/auth/me", Authorization="Bearer 1-" + "x" * 64)
    assert response.status_code == 401
    assert client.get("/auth/me", Authorization="Basic !!!").status_code == 401
    # No CORS at all: never `*`, never credentials for another origin, preflight included.
    for response in (
        client.get("/auth/me", Origin="https://evil.example"),
        client.get("/auth/me", Origin="https://evil.example", **headers),
        client.send("OPTIONS", "/auth/me", None, Origin="https://evil.example"),
    ):
        assert "Access-Control-Allow-Origin" not in response
        assert "Access-Control-Allow-Credentials" not in response


def test_basic_credentials(rest: Any, alice: Any) -> None:
    import base64

    good = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    bad = base64.b64encode(b"alice:wrong").decode()
    assert rest().get("/auth/me", Authorization=f"Basic {good}").json()["pw_name"] == "alice"
    assert rest().get("/auth/me", Authorization=f"Basic {bad}").status_code == 401
    assert rest().post("/auth/logout", Authorization=f"Basic {good}").status_code == 204


def test_onetime_password_session_must_set_a_password_first(rest: Any, alice: Any) -> None:
    password = onetime_password_issue(user=alice, actor="admin")
    client = rest()
    body = client.post("/auth/login", {**LOGIN, "password": password}).json()
    assert body["response_type"] == "SUCCESS"
    assert client.get("/auth/me").status_code == 200
    response = client.get("/auth/my_sessions")
    assert response.status_code == 403
    assert errors(response)[0]["message"] == "A new password must be set first"
    assert client.post("/auth/generate_token", {}).status_code == 403  # EOPNOTSUPP
    assert client.post("/auth/logout").status_code == 204
