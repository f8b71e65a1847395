"""Session attacks: security.md group B (B1–B13, B18–B26), over the JSON-RPC interface.

The HTTP layer is JSON-RPC only for now (``POST /api/current``); there are no browser pages and no
WebSocket transport yet, so the browser-only parts of these tests (``Clear-Site-Data`` on browser
logout, closing an open WebSocket on termination, the browser sessions page) are out of scope here
and are not faked. Time never passes by sleeping: tests move the stored timestamps back instead.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from sessions_app.auth import keys
from sessions_app.auth.clients import Client
from sessions_app.auth.roles import Role
from sessions_app.middleware import session_cookie_name, unix_socket_session
from sessions_app.models import ApiKey, AuditRecord, Credentials, EndReason, Token, UserSession
from sessions_app.services import login as login_services
from sessions_app.services import sessions as session_services
from sessions_app.services.api_keys import api_key_create, api_key_revoke
from sessions_app.services.users import user_set_password

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "B-tests correct horse battery staple"
ENOTAUTHENTICATED, EACCES, EOPNOTSUPP = 207, 13, 95


@pytest.fixture(autouse=True)
def _no_rate_limit(settings: Any) -> None:
    settings.SESSIONS_LOGIN_RATE = 0


# --- helpers -------------------------------------------------------------------------------------


def sid(client: Any) -> str:
    """The session cookie value the client holds."""
    return client.http.cookies[session_cookie_name()].value


def row_of(client: Any) -> UserSession:
    return UserSession.objects.get(secret_hash=keys.hash_secret(sid(client)))


def authed(client: Any, **headers: Any) -> bool:
    """Whether the client's next request is authenticated (``auth.me``); anything else must be 207."""
    payload = client.raw("auth.me", **headers).json()
    if "result" in payload:
        return True
    assert payload["error"]["data"]["error"] == ENOTAUTHENTICATED, payload
    return False


def with_cookie(rpc: Any, value: str, **extra: Any) -> Any:
    client = rpc(**extra)
    client.http.cookies[session_cookie_name()] = value
    return client


def password_login(client: Any, username: str) -> dict[str, Any]:
    return client.call(
        "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": username, "password": PASSWORD}
    )


def token_login(client: Any, token: str) -> str:
    return client.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})["response_type"]


def api_key_login(client: Any, username: str, key: str) -> str:
    return client.call("auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": username, "api_key": key})[
        "response_type"
    ]


def error_of(client: Any, method: str, *params: Any) -> dict[str, Any]:
    return client.error(method, *params)["data"]


def move_back(session: UserSession, *fields: str, seconds: float) -> None:
    """Pretend ``seconds`` have passed for ``fields`` of ``session`` (no sleeping)."""
    session.refresh_from_db()
    delta = dt.timedelta(seconds=seconds)
    UserSession.objects.filter(pk=session.pk).update(**{f: getattr(session, f) - delta for f in fields})


def ended(session: UserSession) -> UserSession:
    session.refresh_from_db()
    assert session.ended_at is not None, f"{session} is still active"
    return session


def end_audits(public_id: str, reason: str) -> list[AuditRecord]:
    return [
        r
        for r in AuditRecord.objects.filter(session=public_id).order_by("id")
        if r.event_data.get("end_reason") == reason
    ]


@pytest.fixture
def alice(make_user: Any) -> Any:
    return make_user("alice", password=PASSWORD)


@pytest.fixture
def admin(make_user: Any, rpc: Any) -> Any:
    """A logged-in full administrator."""
    make_user("admin", password=PASSWORD, superuser=True)
    client = rpc()
    password_login(client, "admin")
    return client


@pytest.fixture
def alice_client(alice: Any, rpc: Any) -> Any:
    client = rpc()
    assert password_login(client, "alice")["response_type"] == "SUCCESS"
    return client


# --- B1–B7: identifiers and cookies -----------------------------------------------------------------


def test_B1_fixation_preset_cookie_is_ignored_and_login_issues_a_new_value(alice: Any, rpc: Any) -> None:
    attacker_value = secrets.token_urlsafe(48)
    victim = with_cookie(rpc, attacker_value)
    assert not authed(victim)  # a never-issued id is not a session
    assert not UserSession.objects.filter(secret_hash=keys.hash_secret(attacker_value)).exists()

    response = password_login(victim, "alice")
    assert response["response_type"] == "SUCCESS"
    issued = sid(victim)
    assert issued != attacker_value
    assert authed(victim)
    assert not authed(with_cookie(rpc, attacker_value))  # the attacker's pre-set value is still nothing

    # A value issued earlier and then logged out cannot be "re-fixed" either.
    victim.call("auth.logout")
    password_login(victim, "alice")
    assert sid(victim) != issued
    assert not authed(with_cookie(rpc, issued))


def test_B2_relogin_on_a_session_gives_a_new_id_and_kills_the_old(
    alice: Any, alice_client: Any, rpc: Any
) -> None:
    old_secret, old_row = sid(alice_client), row_of(alice_client)
    password_login(alice_client, "alice")
    new_row = row_of(alice_client)
    assert sid(alice_client) != old_secret
    assert new_row.public_id != old_row.public_id
    assert ended(old_row).end_reason == EndReason.LOGOUT
    assert end_audits(old_row.public_id, EndReason.LOGOUT)
    assert not authed(with_cookie(rpc, old_secret))
    assert authed(alice_client)

    # Switching credential (password session -> API key) on the same client: same rule.
    _, key = api_key_create(user=alice, name="switch")
    before = sid(alice_client)
    assert api_key_login(alice_client, "alice", key) == "SUCCESS"
    assert row_of(alice_client).credentials == Credentials.API_KEY
    assert ended(new_row).end_reason == EndReason.LOGOUT
    assert not authed(with_cookie(rpc, before))


def _bits_balanced(values: list[bytes]) -> None:
    """Every bit position is ~50 % ones: no fixed fields (ids, timestamps, counters) in the values."""
    width = len(values[0])
    assert all(len(v) == width for v in values)
    n = len(values)
    sigma = (n / 4) ** 0.5
    for position in range(width):
        counts = Counter(v[position] for v in values)
        for bit in range(8):
            ones = sum(c for byte, c in counts.items() if byte >> bit & 1)
            assert abs(ones - n / 2) < 6 * sigma, f"byte {position} bit {bit} is biased: {ones}/{n}"


def _alphabet_uniform(values: list[str], alphabet: str) -> None:
    n = len(values)
    for position in range(len(values[0])):
        counts = Counter(v[position] for v in values)
        assert set(counts) == set(alphabet), f"position {position} misses symbols"
        assert max(counts.values()) < 2 * n / len(alphabet), f"position {position} is biased"


def test_B3_ids_tokens_and_keys_are_unique_long_random_and_structureless(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: Counter[str] = Counter()

    class Spy:
        def __getattr__(self, name: str) -> Any:
            calls[name] += 1
            return getattr(secrets, name)

    monkeypatch.setattr(keys, "secrets", Spy())
    n = 10_000
    tokens = [keys.new_token() for _ in range(n)]  # session secrets, public ids and tokens
    api_secrets = [keys.new_api_key_secret() for _ in range(n)]
    onetime = [keys.new_onetime_password() for _ in range(n)]
    assert calls["token_urlsafe"] == n
    assert calls["choice"] > 0

    for values in (tokens, api_secrets, onetime):
        assert len(set(values)) == n
        assert len({v[:8] for v in values}) == n  # not even a shared 8-character prefix
    # >= 128 bits each: 64 URL-safe chars = 48 bytes; 64 and 24 chars of a 62-symbol alphabet.
    raw = [base64.urlsafe_b64decode(t) for t in tokens]
    assert {len(t) for t in tokens} == {64}
    assert {len(r) for r in raw} == {48}
    assert {len(s) for s in api_secrets} == {64}
    assert {len(o) for o in onetime} == {24}
    # The entropy follows from the alphabet the generator really draws from, not from a constant.
    assert len(keys._ALNUM) == 62
    assert len(onetime[0]) * math.log2(len(keys._ALNUM)) >= 128
    assert len(api_secrets[0]) * math.log2(len(keys._ALNUM)) >= 128
    _bits_balanced(raw)
    alnum = "".join(sorted(keys._ALNUM))
    _alphabet_uniform(api_secrets, alnum)
    _alphabet_uniform(onetime, alnum)
    # No sequence: successive values share nothing position-wise beyond chance (1/64 per char).
    same = sum(a[i] == b[i] for a, b in zip(tokens, tokens[1:], strict=False) for i in range(64))
    assert same < 3 * (n - 1) * 64 / 64


@pytest.mark.django_db
def test_B3_sessions_draw_their_id_and_secret_from_keys(alice: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[str] = []
    real = keys.new_token

    def spy() -> str:
        drawn.append(real())
        return drawn[-1]

    monkeypatch.setattr(keys, "new_token", spy)
    client = Client(address="127.0.0.1", port=40000)
    created = [
        session_services.session_create(credentials=Credentials.LOGIN_PASSWORD, client=client, user=alice)
        for _ in range(20)
    ]
    assert len(drawn) == 40
    for new in created:
        assert new.secret in drawn
        assert new.session.public_id in drawn
        assert new.secret != new.session.public_id
        assert "alice" not in new.secret
        assert "alice" not in new.session.public_id


def _db_dump() -> str:
    models = [*apps.get_app_config("sessions_app").get_models(), get_user_model()]
    return json.dumps([list(m._default_manager.values()) for m in models], default=str)


def test_B4_only_hashes_are_stored_and_the_public_id_is_not_a_credential(
    alice: Any, alice_client: Any, admin: Any, rpc: Any
) -> None:
    secret = sid(alice_client)
    row = row_of(alice_client)
    assert row.secret_hash == keys.hash_secret(secret)
    assert row.public_id != secret
    token = alice_client.call("auth.generate_token", 600, {}, False, False)
    key_row = alice_client.call("api_key.create", {"name": "b4"})
    api_key = key_row["key"]
    otpw = admin.call("auth.generate_onetime_password", {"username": "alice"})
    dump = _db_dump()
    for plaintext in (secret, token, api_key, api_key.split("-", 1)[1], otpw, PASSWORD):
        assert plaintext not in dump
    assert Token.objects.get().token_hash == keys.hash_secret(token)

    # A leaked row (public id, hashes) can't be replayed as a cookie, bearer, token or key.
    for value in (row.public_id, row.secret_hash):
        assert not authed(with_cookie(rpc, value))
        assert not authed(rpc(), HTTP_AUTHORIZATION=f"Bearer {value}")
        assert token_login(rpc(), value) == "AUTH_ERR"
    key = ApiKey.objects.get(name="b4")
    assert api_key_login(rpc(), "alice", f"{key.pk}-{key.key_hash}") == "AUTH_ERR"
    assert authed(alice_client)


def test_B5_credentials_in_the_query_string_are_ignored_and_never_logged(
    alice_client: Any, admin: Any, rpc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = sid(alice_client)
    token = alice_client.call("auth.generate_token", 600, {}, False, True)
    stranger = rpc()
    for query in (
        f"token={token}",
        f"sessionid={secret}",
        f"sid={secret}",
        f"{session_cookie_name()}={secret}",
    ):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "auth.me", "params": []})
        response = stranger.http.post(f"/api/current?{query}", body, content_type="application/json")
        assert response.json()["error"]["data"]["error"] == ENOTAUTHENTICATED
    assert Token.objects.count() == 1  # the single-use token was not consumed
    assert token_login(rpc(), token) == "SUCCESS"
    audit_text = json.dumps(list(AuditRecord.objects.values()), default=str)
    for plaintext in (secret, token, PASSWORD):
        assert plaintext not in audit_text
        assert plaintext not in caplog.text


def test_B6_session_cookie_flags(alice: Any, rpc: Any) -> None:
    client = rpc()
    password_login(client, "alice")
    cookie = client.last.cookies[session_cookie_name()]
    assert cookie.key == "__Host-sid"
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["domain"] == ""
    assert django_settings.CSRF_COOKIE_SECURE is True
    assert django_settings.SESSION_COOKIE_SECURE is True


@pytest.mark.slow
def test_B6_check_deploy_passes_with_production_like_environment() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(60)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_B7_logout_then_replay_fails_and_responses_are_not_cached(
    alice: Any, alice_client: Any, rpc: Any
) -> None:
    secret = sid(alice_client)
    assert alice_client.last.headers["Cache-Control"] == "no-store"  # the login answer
    token = alice_client.call("auth.generate_token", 600, {}, False, False)
    assert alice_client.call("auth.logout") is True
    logout = alice_client.last
    assert logout.headers["Cache-Control"] == "no-store"
    assert logout.cookies[session_cookie_name()]["max-age"] == 0  # the cookie is dropped
    replay = with_cookie(rpc, secret)
    assert not authed(replay)
    assert replay.last.headers["Cache-Control"] == "no-store"
    assert token_login(rpc(), token) == "AUTH_ERR"
    _, key = api_key_create(user=alice, name="b7")
    key_client = rpc()
    api_key_login(key_client, "alice", key)
    key_secret = sid(key_client)
    key_client.call("auth.logout")
    assert not authed(with_cookie(rpc, key_secret))


# --- B8–B11: timeouts and termination -------------------------------------------------------------


def test_B8_idle_timeout_ends_the_session_and_activity_extends_it(
    alice: Any, rpc: Any, settings: Any
) -> None:
    settings.SESSIONS_IDLE_TIMEOUT = 60
    settings.SESSIONS_LAST_SEEN_INTERVAL = 1
    client = rpc()
    password_login(client, "alice")
    row = row_of(client)
    assert row.idle_timeout == 60
    for _ in range(4):  # 4 × 40 s of activity: well past one idle limit in total
        move_back(row, "last_seen_at", "created_at", seconds=40)
        assert authed(client)
        row.refresh_from_db()
        assert timezone.now() - row.last_seen_at < dt.timedelta(seconds=5)  # activity recorded
    move_back(row, "last_seen_at", seconds=61)
    assert not authed(client)
    row = ended(row)
    assert row.end_reason == EndReason.IDLE
    assert row.ended_by is None
    assert end_audits(row.public_id, EndReason.IDLE)
    assert not authed(client)  # and stays dead


def test_B8_assurance_levels_set_the_limits(alice: Any, rpc: Any, settings: Any) -> None:
    client = rpc()
    password_login(client, "alice")
    row = row_of(client)
    assert row.expires_at - row.created_at == dt.timedelta(days=30)
    assert row.idle_timeout is None
    settings.SESSIONS_ASSURANCE_LEVEL = "LEVEL_2"
    now = timezone.now()
    row2 = session_services.session_create(
        credentials=Credentials.LOGIN_TWOFACTOR, client=Client(address="127.0.0.1"), user=alice, now=now
    ).session
    assert row2.expires_at - now == dt.timedelta(hours=12)
    assert row2.idle_timeout == 30 * 60


def test_B9_absolute_timeout_ends_the_session_regardless_of_activity(
    alice: Any, rpc: Any, settings: Any
) -> None:
    settings.SESSIONS_MAX_AGE = 3600
    settings.SESSIONS_LAST_SEEN_INTERVAL = 1
    client = rpc()
    password_login(client, "alice")
    row = row_of(client)
    assert row.expires_at - row.created_at == dt.timedelta(seconds=3600)
    for _ in range(3):  # busy all along: 3 × 1000 s with requests in between
        move_back(row, "created_at", "expires_at", seconds=1000)
        assert authed(client)
    move_back(row, "created_at", "expires_at", seconds=601)  # now 1 s past max age, last seen just now
    assert not authed(client)
    row = ended(row)
    assert row.end_reason == EndReason.EXPIRED
    assert end_audits(row.public_id, EndReason.EXPIRED)


def test_B10_client_cannot_extend_a_session(alice: Any, rpc: Any, settings: Any) -> None:
    settings.SESSIONS_IDLE_TIMEOUT = 60
    settings.SESSIONS_MAX_AGE = 3600
    client = rpc()
    password_login(client, "alice")
    row = row_of(client)
    expires = row.expires_at
    future = (timezone.now() + dt.timedelta(days=365)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    forged = {
        "HTTP_DATE": future,
        "HTTP_X_LAST_ACTIVITY": str(int(timezone.now().timestamp())),
        "HTTP_LAST_ACTIVITY": future,
        "HTTP_IF_MODIFIED_SINCE": future,
    }
    # A cookie carrying its own expiry attributes is just a (wrong) value.
    assert not authed(with_cookie(rpc, f"{sid(client)}; Max-Age=99999999; Expires={future}"))
    assert authed(client, **forged)
    assert (
        client.error(
            "auth.login_ex",
            {
                "mechanism": "PASSWORD_PLAIN",
                "username": "alice",
                "password": PASSWORD,
                "login_options": {"expires_at": {"$date": 10**13}, "ttl": 10**9},
            },
        )["code"]
        == -32602
    )
    row.refresh_from_db()
    assert row.expires_at == expires  # no request moved the absolute limit
    move_back(row, "last_seen_at", seconds=61)
    assert not authed(client, **forged)
    assert ended(row).end_reason == EndReason.IDLE


def test_B11_terminate_kills_the_very_next_request_and_minted_tokens(
    alice: Any, alice_client: Any, admin: Any, rpc: Any
) -> None:
    victim = row_of(alice_client)
    unused = alice_client.call("auth.generate_token", 600, {}, False, False)
    derived_token = alice_client.call("auth.generate_token", 600, {}, False, False)
    derived = rpc()
    assert token_login(derived, derived_token) == "SUCCESS"
    assert authed(alice_client)
    assert authed(derived)
    assert admin.call("auth.terminate_session", victim.public_id) is True
    assert not authed(alice_client)
    assert not authed(derived)
    assert token_login(rpc(), unused) == "AUTH_ERR"
    assert not Token.objects.filter(session=victim).exists()
    victim = ended(victim)
    assert (victim.end_reason, victim.ended_by) == (EndReason.TERMINATED, "admin")
    assert ended(row_of(derived)).end_reason == EndReason.PARENT_ENDED
    assert admin.call("auth.terminate_session", victim.public_id) is False  # idempotent, unknown now


# --- B12–B13: IDOR ----------------------------------------------------------------------------------


def test_B12_listing_needs_AUTH_SESSIONS_READ_without_leaking_counts(
    alice: Any, alice_client: Any, make_user: Any, rpc: Any
) -> None:
    make_user("bob", password=PASSWORD)
    bob = rpc()
    password_login(bob, "bob")
    target = row_of(bob).public_id
    queries = [
        (),
        ([], {"count": True}),
        ([["credentials_data.username", "=", "bob"]], {"count": True}),
        ([["credentials_data.username", "=", "nobody"]], {"count": True}),
        ([["id", "=", target]], {"get": True}),
        ([["id", "=", "does-not-exist"]], {"get": True}),
        ([], {"extra": {"history": True}}),
    ]
    bodies = set()
    for params in queries:
        error = alice_client.error("auth.sessions", *params)
        assert error["code"] == -32001
        assert error["data"]["error"] == EACCES
        assert error["data"]["errname"] == "EACCES"
        bodies.add(json.dumps(error, sort_keys=True))
    for _ in range(3):  # more sessions exist: the answer is the same bytes
        password_login(rpc(), "bob")
    bodies.add(json.dumps(alice_client.error("auth.sessions", [], {"count": True}), sort_keys=True))
    assert len(bodies) == 1, bodies
    # Own sessions only through auth.my_sessions.
    mine = alice_client.call("auth.my_sessions")
    assert {r["credentials_data"]["username"] for r in mine} == {"alice"}
    assert alice_client.call("auth.my_sessions", [["id", "=", target]], {"count": True}) == 0
    # With the role: every user's sessions (documented policy: READ lists all).
    make_user("reader", password=PASSWORD, roles=[Role.AUTH_SESSIONS_READ])
    reader = rpc()
    password_login(reader, "reader")
    names = {r["credentials_data"]["username"] for r in reader.call("auth.sessions")}
    assert names == {"alice", "bob", "reader"}


def test_B13_terminate_needs_AUTH_SESSIONS_WRITE_and_users_end_only_their_own(
    alice: Any, alice_client: Any, make_user: Any, rpc: Any
) -> None:
    make_user("bob", password=PASSWORD)
    make_user("reader", password=PASSWORD, roles=[Role.AUTH_SESSIONS_READ])
    bob, reader = rpc(), rpc()
    password_login(bob, "bob")
    password_login(reader, "reader")
    target = row_of(bob).public_id
    for caller in (reader, alice_client):
        assert error_of(caller, "auth.terminate_session", target)["error"] == EACCES
        assert error_of(caller, "auth.terminate_session", secrets.token_urlsafe(48))["error"] == EACCES
        assert error_of(caller, "auth.terminate_other_sessions")["error"] == EACCES
        assert caller.call("auth.terminate_my_session", target) is False
        assert authed(bob)
    assert alice_client.call("auth.terminate_my_session", secrets.token_urlsafe(48)) is False
    assert row_of(bob).ended_at is None
    # A plain user may end their own other session.
    second = rpc()
    password_login(second, "alice")
    own = row_of(second).public_id
    assert alice_client.call("auth.terminate_my_session", own) is True
    assert not authed(second)
    assert authed(alice_client)
    assert authed(bob)


# --- B14–B17, B27: methods, CSRF and headers of the terminate endpoints and every response --------------


def _terminate_paths(own_id: str, other_id: str) -> list[str]:
    """Every endpoint that ends sessions: the browser pages and the REST views."""
    return [
        f"/sessions/{other_id}/terminate/",
        f"/me/sessions/{own_id}/terminate/",
        "/sessions/terminate-others/",
        "/me/sessions/terminate-others/",
        f"/api/v2.0/auth/sessions/{other_id}/terminate",
        f"/api/v2.0/auth/my_sessions/{own_id}/terminate",
        "/api/v2.0/auth/sessions/terminate_others",
        "/api/v2.0/auth/my_sessions/terminate_others",
    ]


def test_B14_safe_methods_never_terminate_and_other_verbs_are_405(
    alice: Any, alice_client: Any, admin: Any, rpc: Any
) -> None:
    second = rpc()
    password_login(second, "admin")  # an own other session for the /me/ endpoints
    targets = [row_of(alice_client), row_of(second)]
    paths = _terminate_paths(row_of(second).public_id, row_of(alice_client).public_id)
    for path in paths:
        for method in ("GET", "HEAD", "OPTIONS"):
            response = admin.http.generic(method, path)
            assert response.status_code in (200, 302, 405), (method, path, response.status_code)
        for method in ("PUT", "PATCH", "DELETE", "TRACE"):
            response = admin.http.generic(method, path)
            assert response.status_code == 405, (method, path, response.status_code)
            assert "POST" in response["Allow"], (method, path)
        for target in targets:
            target.refresh_from_db()
            assert target.ended_at is None, (path, target)
    assert authed(alice_client)
    assert authed(second)


def test_B15_cross_site_or_foreign_token_posts_to_the_terminate_page_are_403(
    alice: Any, alice_client: Any, admin: Any, make_user: Any, rpc: Any
) -> None:
    from django.test import Client as Browser

    target = row_of(alice_client)
    victim = Browser(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    victim.cookies[session_cookie_name()] = sid(admin)
    victim.get("/sessions/")  # the administrator's own CSRF cookie
    make_user("mallory", password=PASSWORD)
    attacker = Browser(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    attacker.get("/sign-in/")
    attacker.post(
        "/sign-in/",
        {
            "username": "mallory",
            "password": PASSWORD,
            "csrfmiddlewaretoken": attacker.cookies["csrftoken"].value,
        },
    )
    attacker.get("/me/sessions/")
    foreign_token = attacker.cookies["csrftoken"].value  # valid, but for mallory's browser and session
    path = f"/sessions/{target.public_id}/terminate/"
    attempts = [
        {"data": {"confirm": "1"}, "HTTP_ORIGIN": "https://evil.example"},
        {"data": {"confirm": "1", "csrfmiddlewaretoken": foreign_token}},
        {
            "data": {"confirm": "1", "csrfmiddlewaretoken": foreign_token},
            "HTTP_ORIGIN": "https://evil.example",
        },
    ]
    for attempt in attempts:
        data = attempt.pop("data")
        response = victim.post(path, data, **attempt)
        assert response.status_code == 403, (attempt, response.status_code)
        target.refresh_from_db()
        assert target.ended_at is None
    assert authed(alice_client)
    # The administrator's own page, with its own token, does end it.
    own_token = victim.cookies["csrftoken"].value
    response = victim.post(path, {"confirm": "1", "csrfmiddlewaretoken": own_token})
    assert response.status_code == 302
    assert ended(target).end_reason == EndReason.TERMINATED


def test_B27_security_headers_on_every_response(alice: Any, alice_client: Any) -> None:
    from django.test import Client as Browser

    browser = Browser(REMOTE_ADDR="127.0.0.1")
    browser.cookies[session_cookie_name()] = sid(alice_client)
    answers = {
        "page": browser.get("/me/sessions/", secure=True),
        "sign-in": browser.get("/sign-in/", secure=True),
        "REST": browser.get("/api/v2.0/auth/me", secure=True),
        "JSON-RPC": alice_client.http.post(
            "/api/current",
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "auth.me", "params": []}),
            content_type="application/json",
            secure=True,
        ),
        "404": browser.get("/no-such-page/", secure=True),
    }
    for name, response in answers.items():
        assert response.status_code in (200, 404), name
        hsts = dict(
            part.strip().partition("=")[::2] for part in response["Strict-Transport-Security"].split(";")
        )
        assert int(hsts["max-age"]) >= 365 * 24 * 3600, name
        assert response["X-Content-Type-Options"] == "nosniff", name
        assert response["X-Frame-Options"] == "DENY", name
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"], name
        assert response["Referrer-Policy"] == "same-origin", name
    for name in ("page", "sign-in", "REST", "JSON-RPC"):
        assert "no-store" in answers[name]["Cache-Control"], name


# --- B18–B23: tokens --------------------------------------------------------------------------------


def test_B18_single_use_token_works_once(alice_client: Any, rpc: Any) -> None:
    token = alice_client.call("auth.generate_token", 600, {}, False, True)
    assert token_login(rpc(), token) == "SUCCESS"
    assert token_login(rpc(), token) == "AUTH_ERR"
    assert not Token.objects.exists()


def test_B18_token_expires_after_its_ttl(alice_client: Any, rpc: Any) -> None:
    before = timezone.now()
    token = alice_client.call("auth.generate_token", 60, {}, False, False)
    after = timezone.now()
    row = Token.objects.get()
    # Bracketed by the clock read around the call: no slack that a slow machine could outrun.
    assert before + dt.timedelta(seconds=60) <= row.expires_at <= after + dt.timedelta(seconds=60)
    Token.objects.filter(pk=row.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert token_login(rpc(), token) == "AUTH_ERR"


def test_B18_multi_use_token_expiry_slides_on_use(alice_client: Any, rpc: Any) -> None:
    """Documented semantics (auth-sessions.md §4): a multi-use token's expiry slides by its TTL on
    each login with it; a token not used within its TTL expires."""
    token = alice_client.call("auth.generate_token", 600, {}, False, False)
    row = Token.objects.get()
    Token.objects.filter(pk=row.pk).update(expires_at=timezone.now() + dt.timedelta(seconds=5))
    before = timezone.now()
    assert token_login(rpc(), token) == "SUCCESS"
    after = timezone.now()
    row.refresh_from_db()
    ttl = dt.timedelta(seconds=600)
    assert before + ttl <= row.expires_at <= after + ttl  # slid to the time of use + ttl
    assert token_login(rpc(), token) == "SUCCESS"  # multi-use
    Token.objects.filter(pk=row.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert token_login(rpc(), token) == "AUTH_ERR"  # not used in time: no slide brings it back


def test_B19_origin_bound_token_only_from_the_same_origin(alice_client: Any, rpc: Any) -> None:
    bound = alice_client.call("auth.generate_token", 600, {}, True, False)
    assert token_login(rpc(remote_addr="127.0.0.2"), bound) == "AUTH_ERR"
    assert token_login(rpc(remote_addr="::1"), bound) == "AUTH_ERR"
    # TCP-made token presented on the unix socket: refused.
    socket_client = Client(peer=(4242, 0, 0))
    result = login_services.login_ex(
        params={"mechanism": "TOKEN_PLAIN", "token": bound}, client=socket_client
    )
    assert result.response["response_type"] == "AUTH_ERR"
    assert token_login(rpc(REMOTE_PORT="61000"), bound) == "SUCCESS"  # same IP, port ignored
    free = alice_client.call("auth.generate_token", 600, {}, False, False)
    assert token_login(rpc(remote_addr="127.0.0.2"), free) == "SUCCESS"  # unbound: allowed by policy


@pytest.mark.django_db
def test_B19_unix_socket_token_binds_uid_and_gid(make_user: Any) -> None:
    make_user("root", password=PASSWORD)
    parent = unix_socket_session(Client(peer=(100, 0, 0)))
    assert parent is not None
    from sessions_app.services.tokens import token_generate

    token = token_generate(session=parent, client=Client(peer=(100, 0, 0)), match_origin=True)

    def attempt(client: Client) -> str:
        params = {"mechanism": "TOKEN_PLAIN", "token": token}
        return login_services.login_ex(params=params, client=client).response["response_type"]

    assert attempt(Client(peer=(200, 0, 1))) == "AUTH_ERR"  # other gid
    assert attempt(Client(peer=(200, 1, 0))) == "AUTH_ERR"  # other uid
    assert attempt(Client(address="127.0.0.1", port=1)) == "AUTH_ERR"  # TCP
    assert attempt(Client(peer=(200, 0, 0))) == "SUCCESS"  # same uid/gid, other process


def test_B20_token_with_attrs_cannot_open_a_session(alice_client: Any, rpc: Any) -> None:
    scoped = alice_client.call("auth.generate_token", 600, {"filename": "backup.tar"}, False, False)
    assert token_login(rpc(), scoped) == "AUTH_ERR"
    assert alice_client.call("auth.login_with_token", scoped) is False
    assert not authed(with_cookie(rpc, scoped))  # nor is it a cookie
    assert not authed(rpc(), HTTP_AUTHORIZATION=f"Bearer {scoped}")
    assert not UserSession.objects.filter(credentials=Credentials.TOKEN).exists()


def _chain(rpc: Any, root: Any, depth: int = 3) -> tuple[list[Any], list[str]]:
    """Token sessions derived from ``root`` to ``depth``, and one unused token minted at every level."""
    clients = [root]
    for _ in range(depth):
        token = clients[-1].call("auth.generate_token", 600, {}, False, False)
        child = rpc()
        assert token_login(child, token) == "SUCCESS"
        clients.append(child)
    spare = [c.call("auth.generate_token", 600, {}, False, False) for c in clients]
    return clients, spare


B21_ROOT_REASON = {
    "logout": EndReason.LOGOUT,
    "terminate": EndReason.TERMINATED,
    "idle": EndReason.IDLE,
    "absolute": EndReason.EXPIRED,
    "user_disabled": EndReason.USER_DISABLED,
    "password_changed": EndReason.PASSWORD_CHANGED,
    "api_key_revoked": EndReason.CREDENTIAL_REVOKED,
    "api_key_expired": EndReason.EXPIRED,
}


@pytest.mark.parametrize("event", list(B21_ROOT_REASON))
def test_B21_descendants_of_an_ended_parent_all_fail(
    event: str, alice: Any, admin: Any, rpc: Any, settings: Any
) -> None:
    settings.SESSIONS_IDLE_TIMEOUT = 600
    settings.SESSIONS_LAST_SEEN_INTERVAL = 1
    root = rpc()
    key = None
    if event.startswith("api_key"):
        key, plaintext = api_key_create(user=alice, name="chain")
        assert api_key_login(root, "alice", plaintext) == "SUCCESS"
    else:
        password_login(root, "alice")
    root_row = row_of(root)
    clients, spare = _chain(rpc, root)
    rows = [row_of(c) for c in clients]
    assert [r.credentials for r in rows[1:]] == [Credentials.TOKEN] * 3
    assert {r.root_credentials for r in rows[1:]} == {root_row.credentials}

    if event == "logout":
        root.call("auth.logout")
    elif event == "terminate":
        assert admin.call("auth.terminate_session", root_row.public_id) is True
    elif event == "idle":  # the root is left alone while its descendants stay busy
        move_back(root_row, "last_seen_at", seconds=601)
    elif event == "absolute":  # time passes for everything: the whole chain reaches the root's max age
        life = root_row.expires_at - timezone.now() + dt.timedelta(seconds=1)
        for row in rows:
            move_back(row, "created_at", "last_seen_at", "expires_at", seconds=life.total_seconds())
        for token in Token.objects.all():
            Token.objects.filter(pk=token.pk).update(expires_at=token.expires_at - life)
    elif event == "user_disabled":
        alice.is_active = False
        alice.save()
    elif event == "password_changed":
        user_set_password(user=alice, password="a completely new password 42")
    elif event == "api_key_revoked":
        assert key is not None
        api_key_revoke(key=key, reason="compromised", actor="admin")
    else:
        ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    for client in reversed(clients):  # the deepest first: no request on the root triggers the cascade
        assert not authed(client), f"{event}: {row_of(client).credentials} session survived"
    for token in spare:
        assert token_login(rpc(), token) == "AUTH_ERR", f"{event}: a descendant token still logs in"
    for row in rows:
        ended(row)
    assert rows[0].end_reason == B21_ROOT_REASON[event]  # the root's history says why it ended
    if event in ("logout", "terminate", "idle", "api_key_revoked", "api_key_expired"):
        assert {r.end_reason for r in rows[1:]} == {EndReason.PARENT_ENDED}
    assert not UserSession.objects.filter(user=alice, ended_at__isnull=True).exists()


def test_B22_token_ttl_is_capped_by_the_parent_lifetime(alice: Any, rpc: Any, settings: Any) -> None:
    settings.SESSIONS_MAX_AGE = 1000
    root = rpc()
    password_login(root, "alice")
    root_row = row_of(root)
    root.call("auth.generate_token", 30 * 86400, {}, False, False)
    assert Token.objects.get().expires_at <= root_row.expires_at
    # A token session can't outlive its parent, and its own tokens can't either.
    token = root.call("auth.generate_token", 600, {}, False, False)
    child = rpc()
    assert token_login(child, token) == "SUCCESS"
    child_row = row_of(child)
    assert child_row.expires_at <= root_row.expires_at
    child.call("auth.generate_token", 30 * 86400, {}, False, False)
    assert Token.objects.filter(session=child_row).get().expires_at <= root_row.expires_at
    # Sliding renewal never passes the parent's end.
    UserSession.objects.filter(pk=root_row.pk).update(expires_at=timezone.now() + dt.timedelta(seconds=100))
    assert token_login(rpc(), token) == "SUCCESS"
    limit = timezone.now() + dt.timedelta(seconds=100)
    assert Token.objects.get(token_hash=keys.hash_secret(token)).expires_at <= limit
    assert UserSession.objects.filter(parent=root_row).latest("created_at").expires_at <= limit
    assert root.error("auth.generate_token", 30 * 86400 + 1)["code"] == -32602


def test_B23_onetime_password_session_cannot_mint_tokens(alice: Any, admin: Any, rpc: Any) -> None:
    otpw = admin.call("auth.generate_onetime_password", {"username": "alice"})
    client = rpc()
    assert (
        client.call("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": otpw})[
            "response_type"
        ]
        == "SUCCESS"
    )
    row = row_of(client)
    assert row.credentials == Credentials.LOGIN_ONETIME_PASSWORD
    # First refusal: 403-class (EACCES "set a password first" or EOPNOTSUPP).
    assert error_of(client, "auth.generate_token", 600, {}, False, True)["error"] in (EACCES, EOPNOTSUPP)
    # Even after setting a password the session is still a one-time-password session: EOPNOTSUPP.
    secret = user_set_password(user=alice, password="a brand new password 99", keep=row)
    assert secret is not None
    client.http.cookies[session_cookie_name()] = secret
    assert authed(client)
    for single_use in (True, False):
        assert error_of(client, "auth.generate_token", 600, {}, False, single_use)["error"] == EOPNOTSUPP
    assert not Token.objects.exists()


# --- B24–B26 ----------------------------------------------------------------------------------------


def test_B24_session_cap_evicts_the_oldest_and_audits_it(alice: Any, rpc: Any, settings: Any) -> None:
    settings.SESSIONS_MAX_PER_USER = 3
    clients = []
    for _ in range(4):
        client = rpc()
        password_login(client, "alice")
        clients.append(client)
    first = ended(row_of(clients[0]))
    assert first.end_reason == EndReason.EVICTED
    assert end_audits(first.public_id, EndReason.EVICTED)
    assert not authed(clients[0])
    assert all(authed(c) for c in clients[1:])
    assert UserSession.objects.active().filter(user=alice).count() == 3


@pytest.mark.django_db(transaction=True)
def test_B24_parallel_logins_never_exceed_the_cap(make_user: Any, settings: Any) -> None:
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip(
            "the SQLite test database is in-memory (shared cache): its table locks fail concurrent "
            "writers at once instead of waiting, so this race runs on PostgreSQL (or a file SQLite "
            "test database, SQLITE_TEST_NAME=...)"
        )
    settings.SESSIONS_MAX_PER_USER = 3
    user = make_user("alice", password=PASSWORD)
    workers = 10
    barrier = threading.Barrier(workers)
    results: list[str] = []
    observed: list[int] = []
    errors: list[BaseException] = []

    def login() -> None:
        try:
            barrier.wait(timeout=10)
            result = login_services.login_ex(
                params={"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD},
                client=Client(address="127.0.0.1", port=50000),
            )
            results.append(result.response["response_type"])
            observed.append(UserSession.objects.active().filter(user=user).count())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=login) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert results == ["SUCCESS"] * workers
    assert max(observed) <= 3, observed
    assert UserSession.objects.active().filter(user=user).count() == 3
    evicted = UserSession.objects.filter(user=user, end_reason=EndReason.EVICTED)
    assert evicted.count() == workers - 3
    assert all(end_audits(s.public_id, EndReason.EVICTED) for s in evicted)


def test_B25_lists_and_audit_never_show_secrets(alice: Any, alice_client: Any, admin: Any, rpc: Any) -> None:
    secrets_seen = [sid(alice_client), sid(admin), PASSWORD, alice.password]
    token = alice_client.call("auth.generate_token", 600, {}, False, False)
    derived = rpc()
    token_login(derived, token)
    secrets_seen += [token, sid(derived)]
    created = alice_client.call("api_key.create", {"name": "b25"})
    key_client = rpc()
    api_key_login(key_client, "alice", created["key"])
    secrets_seen += [created["key"], created["key"].split("-", 1)[1], sid(key_client)]
    secrets_seen.append(admin.call("auth.generate_onetime_password", {"username": "alice"}))
    wrong = created["key"][:-1] + ("x" if created["key"][-1] != "x" else "y")
    assert api_key_login(rpc(), "alice", wrong) == "AUTH_ERR"  # a failed attempt records no presented key
    secrets_seen.append(wrong)
    secrets_seen += list(UserSession.objects.exclude(secret_hash=None).values_list("secret_hash", flat=True))
    secrets_seen += list(ApiKey.objects.values_list("key_hash", flat=True))
    secrets_seen += list(Token.objects.values_list("token_hash", flat=True))
    secrets_seen += [keys.hash_secret(token)]
    history = {"extra": {"history": True}}
    outputs = [
        admin.call("auth.sessions"),
        admin.call("auth.sessions", [], history),
        admin.call("auth.my_sessions", [], history),
        alice_client.call("auth.my_sessions", [], history),
        admin.call("api_key.query"),
        alice_client.call("api_key.my_keys"),
        admin.call("api_key.get_instance", created["id"]),
        admin.call("audit.query"),
    ]
    out = StringIO()
    call_command("sessions", "list", "--history", "--format", "json", stdout=out, stderr=StringIO())
    text = json.dumps(outputs) + out.getvalue()
    for secret in secrets_seen:
        assert secret not in text
    for field in ("secret_hash", "key_hash", "token_hash"):
        assert f'"{field}"' not in text
    assert all(k["keyhash"] == "********" for k in outputs[4])


@pytest.mark.django_db
def test_B26_terminate_other_sessions_keeps_callers_and_internal_ones(
    alice: Any, make_user: Any, rpc: Any, settings: Any
) -> None:
    settings.SESSIONS_NODE_SECRET = "node-secret"
    make_user("root", password=PASSWORD)
    make_user("writer", password=PASSWORD, roles=[Role.AUTH_SESSIONS_WRITE])
    writer, writer2, a1, a2 = rpc(), rpc(), rpc(), rpc()
    for client, name in ((writer, "writer"), (writer2, "writer"), (a1, "alice"), (a2, "alice")):
        password_login(client, name)
    root_socket = unix_socket_session(Client(peer=(77, 0, 0)))
    assert root_socket is not None
    assert root_socket.internal
    internal = [root_socket]
    from sessions_app.services.node import node_login, node_signature

    stamp, nonce = int(time.time()), secrets.token_urlsafe(16)
    node = node_login(
        node="peer-b",
        timestamp=stamp,
        nonce=nonce,
        signature=node_signature(secret="node-secret", node="peer-b", timestamp=stamp, nonce=nonce),
        client=Client(address="127.0.0.1", port=7000),
    )
    assert node is not None
    internal.append(node.session)
    others = [row_of(c) for c in (writer2, a1, a2)]
    caller = row_of(writer)
    assert writer.call("auth.terminate_other_sessions") is True
    assert authed(writer)
    assert UserSession.objects.get(pk=caller.pk).ended_at is None
    for row in internal:
        assert UserSession.objects.get(pk=row.pk).ended_at is None
    for row in others:
        row = ended(row)
        assert (row.end_reason, row.ended_by) == (EndReason.TERMINATED, "writer")
        assert len(end_audits(row.public_id, EndReason.TERMINATED)) == 1
    assert not any(authed(c) for c in (writer2, a1, a2))
    audits = AuditRecord.objects.count()
    assert writer.call("auth.terminate_other_sessions") is True  # idempotent
    assert authed(writer)
    new = [r for r in AuditRecord.objects.order_by("id")[audits:] if r.event_data.get("end_reason")]
    assert new == []
    assert all(len(end_audits(r.public_id, EndReason.TERMINATED)) == 1 for r in others)
