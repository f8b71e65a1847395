"""security.md group (F), the limiter: F4 (one login limit per address, whatever the caller presents,
across every login entrance), F7 (API-key guesses count toward the key, never the owner), F8 (a
right password is never a failure) and F9 (failed per-request credentials are throttled, and their
audit records aggregated), over the real interfaces: JSON-RPC over HTTP and WebSocket, REST, the
sign-in page and per-request ``Authorization`` headers."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from sessions_app.auth import keys, throttle
from sessions_app.auth.clients import Client as Peer
from sessions_app.middleware import session_cookie_name
from sessions_app.models import AccountLockout, AuditRecord
from sessions_app.services import api_keys as key_services
from sessions_app.services.sessions import session_create
from tests.conftest import PASSWORD, RPC
from tests.integration.conftest import create_user  # noqa: F401 - fixture, for the served WebSocket
from tests.integration.servers import Server
from tests.ws.conftest import _sessions_settled, ws_server  # noqa: F401 - fixtures, reused as they are
from tests.ws.helpers import open_socket

AUTH_ERR = {"response_type": "AUTH_ERR"}
API = "/api/v2.0"
ATTACKER = "203.0.113.50"


def pw(username: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password}


def basic(username: str, password: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def errno_of(response: Any) -> int | None:
    """The errno of a JSON-RPC error (in ``error.data``) or of a REST/middleware ``errors`` body."""
    payload = response.json()
    if "errors" in payload:
        return payload["errors"][0]["errno"]
    error = payload.get("error") or {}
    return (error.get("data") or {}).get("error")


def lockout(name: str) -> AccountLockout | None:
    return AccountLockout.objects.filter(username=name).first()


@pytest.fixture
def rate_20(settings: Any) -> None:
    settings.SESSIONS_LOGIN_RATE = 20
    settings.SESSIONS_LOGIN_RATE_WINDOW = 60


# --- F4: the login limiter counts every login attempt from an address --------------------------------


@pytest.mark.parametrize("carrier", ["anonymous", "bearer", "cookie", "rest", "rest-cookie"])
def test_f04_login_limit_counts_callers_that_present_a_credential(
    rpc: Callable[..., RPC], make_user: Any, rate_20: None, carrier: str
) -> None:
    """30 password guesses for bob from one address: 20 answered, then 429, whatever mallory presents."""
    mallory = make_user("mallory")
    make_user("bob")
    _, key_text = key_services.api_key_create(user=mallory, name="own")
    client = rpc(remote_addr="127.0.0.1")
    headers: dict[str, str] = {}
    if carrier == "bearer":
        headers = bearer(key_text)
    elif carrier in ("cookie", "rest-cookie"):
        # Her own session cookie (made directly: the login itself is not what this counts).
        new = session_create(
            credentials="LOGIN_PASSWORD", client=Peer(address="127.0.0.1", port=4321), user=mallory
        )
        client.http.cookies[session_cookie_name()] = new.secret
    statuses = []
    for i in range(30):
        if carrier.startswith("rest"):
            response = client.http.post(
                f"{API}/auth/login", json.dumps(pw("bob", f"guess {i}")), content_type="application/json"
            )
        else:
            response = client.raw("auth.login_ex", pw("bob", f"guess {i}"), **headers)
        statuses.append(response.status_code)
        if response.status_code == 200:
            body = response.json()
            assert body.get("result", body) == AUTH_ERR, body
        else:
            assert errno_of(response) == 16  # EBUSY
            assert 1 <= int(response["Retry-After"]) <= 60
    assert statuses == [200] * 20 + [429] * 10, carrier
    assert throttle.locked_until(username="bob") is not None  # the 20 answered guesses did count


def test_f04_basic_on_a_login_call_does_not_exempt_it(
    rpc: Callable[..., RPC], make_user: Any, rate_20: None
) -> None:
    """A valid ``Basic`` header is itself a login attempt: it and the login call both count."""
    make_user("mallory")
    make_user("bob")
    client = rpc()
    answered = 0
    for i in range(30):
        response = client.raw("auth.login_ex", pw("bob", f"guess {i}"), **basic("mallory", PASSWORD))
        if response.status_code == 429:
            break
        answered += 1
    assert answered == 10  # each call: the Basic login and the login_ex guess


def test_f04_every_login_entrance_shares_one_limit(
    rpc: Callable[..., RPC], make_user: Any, rate_20: None
) -> None:
    """JSON-RPC, REST, the sign-in page and Basic, from one address: one budget of 20 attempts."""
    make_user("bob")
    client = rpc()
    browser = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    browser.get("/sign-in/")
    token = browser.cookies["csrftoken"].value
    rest = Client(REMOTE_ADDR="127.0.0.1")

    def rest_login(i: int) -> Any:
        body = json.dumps(pw("bob", f"rest {i}"))
        return rest.post(f"{API}/auth/login", body, content_type="application/json")

    def sign_in(i: int) -> Any:
        return browser.post(
            "/sign-in/", {"username": "bob", "password": f"page {i}", "csrfmiddlewaretoken": token}
        )

    entrances: list[tuple[str, Callable[[int], Any]]] = [
        ("auth.login_ex", lambda i: client.raw("auth.login_ex", pw("bob", f"rpc {i}"))),
        ("auth.login", lambda i: client.raw("auth.login", "bob", f"legacy {i}")),
        ("auth.login_with_api_key", lambda i: client.raw("auth.login_with_api_key", f"1-{'x' * 64}")),
        ("auth.login_with_token", lambda i: client.raw("auth.login_with_token", "t" * 64)),
        ("REST /auth/login", rest_login),
        ("sign-in page", sign_in),
        (
            "sign-in code step",
            lambda i: browser.post("/sign-in/otp/", {"otp_token": f"{i:06d}", "csrfmiddlewaretoken": token}),
        ),
        ("Basic", lambda i: client.raw("core.ping", **basic("nobody", f"basic {i}"))),
    ]
    statuses: dict[str, list[int]] = {name: [] for name, _ in entrances}
    for i in range(4):  # 8 entrances x 4 = 32 attempts: 20 answered, then every entrance is refused
        for name, attempt in entrances:
            statuses[name].append(attempt(i).status_code)
    assert sum(s != 429 for codes in statuses.values() for s in codes) == 20, statuses
    assert all(codes[-1] == 429 for codes in statuses.values()), statuses
    # Another address has its own budget.
    assert rpc(remote_addr="127.0.0.2").call("auth.login_ex", pw("bob", "x")) == AUTH_ERR


@pytest.mark.django_db(transaction=True)
def test_f04_logins_on_a_logged_in_websocket_are_limited(
    ws_server: Server,  # noqa: F811
    create_user: Callable[..., Any],  # noqa: F811
) -> None:
    """A socket that is already logged in is still one client address: its logins are counted."""
    create_user("alice")
    with open_socket(ws_server) as ws:
        ws.login("alice")  # attempt 1 of 20
        answers = [ws.call("auth.login_with_token", "t" * 64) for _ in range(19)]
        assert answers == [False] * 19
        error = ws.error("auth.login_with_token", "t" * 64)
        assert error["data"]["errname"] == "EBUSY"
        # The socket itself stays logged in.
        assert ws.call("auth.me")["pw_name"] == "alice"


# --- F7: guesses against an API key id count toward the key, never the owner -------------------------


@pytest.mark.parametrize("entrance", ["auth.login_with_api_key", "API_KEY_PLAIN", "Bearer"])
def test_f07_key_guesses_lock_the_key_not_the_owner_and_reveal_nothing(
    rpc: Callable[..., RPC], make_user: Any, settings: Any, entrance: str
) -> None:
    settings.SESSIONS_LOGIN_RATE = 0  # the address limit is not what this is about (F4 covers it)
    alice = make_user("alice")
    key, key_text = key_services.api_key_create(user=alice, name="ci")
    for i in range(12):
        wrong = f"{key.pk}-{keys.new_token()}"
        attacker = rpc(remote_addr=f"198.51.100.{i + 1}")
        if entrance == "auth.login_with_api_key":
            assert attacker.call("auth.login_with_api_key", wrong) is False
        elif entrance == "API_KEY_PLAIN":
            # Whatever name is presented, the guess counts toward the key (and never toward that name).
            name = "alice" if i % 2 else "bob"
            params = {"mechanism": "API_KEY_PLAIN", "username": name, "api_key": wrong}
            assert attacker.call("auth.login_ex", params) == AUTH_ERR
        else:
            assert attacker.error("auth.me", **bearer(wrong))["data"]["errname"] == "ENOTAUTHENTICATED"
    # The owner's password login is untouched: no counter, no lock, a normal login works.
    assert lockout("alice") is None
    assert lockout("bob") is None
    assert rpc().call("auth.login_ex", pw("alice"))["response_type"] == "SUCCESS"
    # The key is locked: even its right secret gets the generic failure on a login, for a while.
    key_lock = lockout(throttle.api_key_lockout_name(key.pk))
    assert key_lock is not None
    assert key_lock.locked_until is not None
    assert rpc().call("auth.login_with_api_key", key_text) is False
    reference = rpc().raw("auth.login_ex", pw("alice", "wrong"))
    answer = rpc().raw(
        "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": key_text}
    )
    assert (answer.status_code, answer.content) == (reference.status_code, reference.content)
    # The sign-in page names no lock for the owner (nothing tells who owns key N).
    browser = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    browser.get("/sign-in/")
    token = browser.cookies["csrftoken"].value
    page = browser.post("/sign-in/", {"username": "alice", "password": "nope", "csrfmiddlewaretoken": token})
    assert page.status_code == 401
    assert "Too many failed attempts" not in page.content.decode()
    # The lock ends like any other; an early unlock (admin, manage.py) lifts it.
    throttle.unlock(username=throttle.api_key_lockout_name(key.pk), actor=None)
    assert rpc().call("auth.login_with_api_key", key_text) is True


def test_f07_a_locked_owner_still_refuses_the_right_key(rpc: Callable[..., RPC], make_user: Any) -> None:
    """The account lock (password guesses) still covers every pathway of the account (A6)."""
    alice = make_user("alice")
    _, key_text = key_services.api_key_create(user=alice, name="ci")
    for i in range(10):
        assert rpc(remote_addr=f"198.51.100.{i + 1}").call("auth.login_ex", pw("alice", "guess")) == AUTH_ERR
    assert rpc().call("auth.login_with_api_key", key_text) is False


def test_f07_a_key_login_does_not_reset_the_owner_password_counter(
    rpc: Callable[..., RPC], make_user: Any
) -> None:
    """Key logins (a script, every minute) must not keep an owner's password guesses from locking."""
    alice = make_user("alice")
    _, key_text = key_services.api_key_create(user=alice, name="ci")
    for i in range(9):
        assert rpc(remote_addr=f"198.51.100.{i + 1}").call("auth.login_ex", pw("alice", "guess")) == AUTH_ERR
        assert rpc().call("auth.login_with_api_key", key_text) is True
    assert rpc(remote_addr="198.51.100.99").call("auth.login_ex", pw("alice", "guess")) == AUTH_ERR
    assert throttle.locked_until(username="alice") is not None


# --- F8: a right password is never counted as a failure ---------------------------------------------


def test_f08_basic_with_the_right_password_of_a_totp_user_is_refused_with_a_reason_not_counted(
    rpc: Callable[..., RPC], make_user: Any, totp: Any, settings: Any
) -> None:
    settings.SESSIONS_LOGIN_RATE = 0
    tina = make_user("tina")
    totp.device(tina)
    rest = Client(REMOTE_ADDR="127.0.0.1")
    for _ in range(12):
        response = rest.get(f"{API}/auth/me", **basic("tina", PASSWORD))
        assert response.status_code == 401
        assert "second factor required; Basic cannot carry it" in response.json()["errors"][0]["message"]
        error = rpc().error("auth.me", **basic("tina", PASSWORD))
        assert error["data"]["errname"] == "ENOTAUTHENTICATED"
        assert "second factor required; Basic cannot carry it" in error["data"]["reason"]
    assert lockout("tina") is None
    assert rpc().call("auth.login_ex", pw("tina"))["response_type"] == "OTP_REQUIRED"
    # A wrong password says nothing of the kind, and counts.
    response = rest.get(f"{API}/auth/me", **basic("tina", "wrong"))
    assert response.status_code == 401
    assert "second factor" not in response.content.decode()
    assert lockout("tina").failures == 1


def test_f08_level_2_right_passwords_are_refused_with_a_reason_and_not_counted(
    rpc: Callable[..., RPC], make_user: Any, settings: Any
) -> None:
    settings.SESSIONS_LOGIN_RATE = 0
    settings.SESSIONS_ASSURANCE_LEVEL = "LEVEL_2"
    make_user("alice")
    for _ in range(12):
        error = rpc().error("auth.me", **basic("alice", PASSWORD))
        assert "second factor required; Basic cannot carry it" in error["data"]["reason"]
        assert rpc().call("auth.login_ex", pw("alice")) == AUTH_ERR  # needs a second factor
    assert lockout("alice") is None


# --- F9: failed per-request credentials are throttled, their audit records aggregated -----------------


def failure_records(address: str) -> list[AuditRecord]:
    return list(AuditRecord.objects.filter(event="AUTHENTICATION", address__startswith=f"{address}:"))


@pytest.mark.parametrize("carrier", ["bearer", "basic", "cookie"])
def test_f09_failed_credentials_are_throttled_and_audited_once_per_window(
    rpc: Callable[..., RPC], make_user: Any, rate_20: None, carrier: str
) -> None:
    alice = make_user("alice")
    _, key_text = key_services.api_key_create(user=alice, name="ci")
    attacker = rpc(remote_addr=ATTACKER)
    statuses = []
    for i in range(100):
        if carrier == "bearer":
            response = attacker.raw("auth.me", **bearer(f"{i + 1}-{'x' * 64}"))
        elif carrier == "basic":
            response = attacker.raw("auth.me", **basic(f"nobody{i}", "guess"))
        else:
            attacker.http.cookies[session_cookie_name()] = keys.new_token()
            response = attacker.raw("auth.me")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert errno_of(response) == 16
            assert 1 <= int(response["Retry-After"]) <= 60
        else:
            assert errno_of(response) == 207  # ENOTAUTHENTICATED
    assert statuses == [200] * 20 + [429] * 80
    records = failure_records(ATTACKER)
    assert len(records) == 1, [r.event_data for r in records]
    assert records[0].event_data["count"] == 100
    assert records[0].success is False
    # Another address is not affected, and a valid credential from this one is never refused.
    assert rpc(remote_addr="203.0.113.51").error("auth.me", **bearer("1-" + "x" * 64))["data"]["error"] == 207
    assert rpc(remote_addr=ATTACKER).call("auth.me", **bearer(key_text), secure=True)["pw_name"] == "alice"


def test_f09_a_stale_cookie_is_dropped_by_its_429(
    rpc: Callable[..., RPC], make_user: Any, rate_20: None
) -> None:
    """A browser holding a stale cookie is refused once, then served (and can sign in) again."""
    make_user("alice")
    client = rpc()
    client.login("alice")
    cookie = client.http.cookies[session_cookie_name()].value
    client.call("auth.logout")
    client.http.cookies[session_cookie_name()] = cookie
    statuses = [client.raw("core.ping").status_code for _ in range(21)]
    assert statuses == [200] * 20 + [429]
    assert client.last.cookies[session_cookie_name()]["max-age"] == 0
    assert client.http.cookies[session_cookie_name()].value == ""
    assert client.call("core.ping") == "pong"


@pytest.mark.django_db
def test_f09_one_record_per_address_and_window() -> None:
    now = timezone.now()

    def fail(seconds: float, address: str = "192.0.2.1") -> int | None:
        return throttle.record_request_failure(
            address=address,
            origin=f"{address}:1234",
            mechanism="API_KEY_BEARER",
            username=None,
            reason="invalid key",
            now=now + dt.timedelta(seconds=seconds),
        )

    assert [fail(s) for s in range(20)] == [None] * 20
    assert fail(20) == 40
    fail(30, address="192.0.2.2")
    assert fail(60) is None  # a new window: a new record
    counts = sorted(
        (r.address, r.event_data["count"]) for r in AuditRecord.objects.filter(event="AUTHENTICATION")
    )
    assert counts == [("192.0.2.1:1234", 1), ("192.0.2.1:1234", 21), ("192.0.2.2:1234", 1)]


def test_f09_concurrent_failures_make_one_record_with_the_full_count(threads: Any) -> None:
    threads.share()
    results = threads.run(
        12,
        lambda _: throttle.record_request_failure(
            address="192.0.2.7", origin="192.0.2.7:1", mechanism="API_KEY_BEARER", username=None, reason="x"
        ),
    )
    assert results == [None] * 12
    counts = threads.read(
        lambda: [r.event_data["count"] for r in AuditRecord.objects.filter(event="AUTHENTICATION")]
    )
    assert counts == [12]
