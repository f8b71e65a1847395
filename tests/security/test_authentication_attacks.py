"""security.md group A, authentication attacks (A1–A31), at the JSON-RPC layer (``POST /api/current``)
and, where that is clearer, at the login services.

"Generic failure" means the same HTTP status, byte-identical JSON body and the same headers as a wrong
password. Timing (A2) is checked as equal *work* (one password hash and one failure delay per refused
login), never by wall-clock time. The unix-socket side of A19/A30 is tested elsewhere.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import threading
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import MD5PasswordHasher
from django.core.management import call_command
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app import conf
from sessions_app.api.methods import METHODS
from sessions_app.auth import keys, throttle
from sessions_app.auth.clients import Client
from sessions_app.auth.roles import Role
from sessions_app.exceptions import NotSupported
from sessions_app.middleware import pending_cookie_name, session_cookie_name
from sessions_app.models import (
    AccountLockout,
    ApiKey,
    AuditRecord,
    Credentials,
    EndReason,
    OneTimePassword,
    PendingLogin,
    RateCounter,
    Token,
    UserSession,
)
from sessions_app.services import api_keys as key_services
from sessions_app.services.login import login_ex
from sessions_app.services.password_login import check_password
from sessions_app.services.tokens import token_generate
from sessions_app.services.users import onetime_password_issue, user_set_password

PENDING_COOKIE = pending_cookie_name()  # __Host-otp_pending: cookies are Secure in tests

PASSWORD = "correct horse battery staple"
AUTH_ERR = {"response_type": "AUTH_ERR"}
EXPIRED = {"response_type": "EXPIRED"}
LOOPBACK = Client(address="127.0.0.1", port=50000)
#: Headers allowed to differ between two answers (none are sent today; listed for the future).
VOLATILE_HEADERS = {"x-request-id", "date"}


# --- helpers -------------------------------------------------------------------------------------


def pw(username: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password}


def api_key(username: str, key: str) -> dict[str, Any]:
    return {"mechanism": "API_KEY_PLAIN", "username": username, "api_key": key}


def token_plain(token: str) -> dict[str, Any]:
    return {"mechanism": "TOKEN_PLAIN", "token": token}


def otp(code: str) -> dict[str, Any]:
    return {"mechanism": "OTP_TOKEN", "otp_token": code}


def basic(username: str, password: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def headers(response: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in response.items() if k.lower() not in VOLATILE_HEADERS}


def assert_generic_failure(response: Any, reference: Any, label: str = "") -> None:
    """``response`` is indistinguishable from ``reference`` (a wrong password's answer)."""
    assert response.status_code == reference.status_code, label
    assert response.content == reference.content, label
    assert headers(response) == headers(reference), label
    assert not response.cookies, label


def error_of(response: Any) -> dict[str, Any]:
    payload = response.json()
    assert "error" in payload, payload
    return payload["error"]


def is_not_authenticated(client: Any, method: str = "auth.me", *params: Any, **extra: Any) -> bool:
    """The call was refused with ``-32001`` / ``ENOTAUTHENTICATED`` (207)."""
    payload = client.raw(method, *params, **extra).json()
    error = payload.get("error") or {}
    return error.get("code") == -32001 and (error.get("data") or {}).get("error") == 207


def session_of(client: Any) -> UserSession:
    secret = client.http.cookies[session_cookie_name()].value
    return UserSession.objects.get(secret_hash=keys.hash_secret(secret))


def new_token(client: Any, *, single_use: bool = False) -> str:
    return client.call("auth.generate_token", 600, {}, True, single_use)


def lockout(username: str) -> AccountLockout | None:
    return AccountLockout.objects.filter(username=username).first()


def lock_account(username: str) -> dt.datetime:
    """Lock ``username`` with a threshold's worth of failures (service call); returns the lock end."""
    for _ in range(10):
        result = throttle.record_failure(username=username, address="192.0.2.99", mechanism="PASSWORD_PLAIN")
    assert result.newly_locked
    assert result.locked_until is not None
    return result.locked_until


def expire_lock(username: str) -> None:
    """Move the lock of ``username`` into the past, as if its time had run out."""
    AccountLockout.objects.filter(username=username).update(
        locked_until=timezone.now() - dt.timedelta(seconds=1)
    )


def failure_audits(**filters: Any) -> list[AuditRecord]:
    return [
        r
        for r in AuditRecord.objects.filter(event="AUTHENTICATION", success=False, **filters).order_by("id")
        if "error" in r.event_data
    ]


class HashSpy:
    """Counts password-hash computations (the MD5 test hasher's ``encode``; ``verify`` calls it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._lock = threading.Lock()
        real = MD5PasswordHasher.encode

        def encode(hasher: Any, password: str, salt: str) -> str:
            with self._lock:
                self.count += 1
            return real(hasher, password, salt)

        monkeypatch.setattr(MD5PasswordHasher, "encode", encode)


# --- A1–A3: generic failures ---------------------------------------------------------------------

A1_CASES = {
    "a_wrong_password": ("alice", "not the password"),
    "b_unknown_user": ("nobody", PASSWORD),
    "c_inactive_user": ("ingrid", PASSWORD),
    "d_locked_user": ("lucy", PASSWORD),
    "e_unusable_password": ("ulrich", PASSWORD),
}


@pytest.fixture
def a1_users(make_user: Any) -> None:
    make_user("alice")
    ingrid = make_user("ingrid")
    ingrid.is_active = False
    ingrid.save()
    make_user("lucy")
    lock_account("lucy")
    ulrich = make_user("ulrich")
    ulrich.set_unusable_password()
    ulrich.save()


@pytest.mark.parametrize("method", ["auth.login_ex", "auth.login"])
def test_A1_generic_failure_for_wrong_unknown_inactive_locked_and_unusable(
    rpc: Any, a1_users: None, method: str
) -> None:
    responses = {}
    for case, (username, password) in A1_CASES.items():
        params = [pw(username, password)] if method == "auth.login_ex" else [username, password]
        responses[case] = rpc().raw(method, *params)
    reference = responses["a_wrong_password"]
    for case, response in responses.items():
        assert_generic_failure(response, reference, case)
    expected = AUTH_ERR if method == "auth.login_ex" else False
    assert json.loads(reference.content) == {"jsonrpc": "2.0", "id": 1, "result": expected}
    for word in (b"lock", b"disab", b"inactive", b"unknown", b"exist", b"usable"):
        assert word not in reference.content.lower()
    # The audit trail (for operators, never the client) says which case it was.
    reasons = {r.username: r.event_data["error"] for r in failure_audits()}
    assert reasons == {
        "alice": "wrong password",
        "nobody": "unknown user",
        "ingrid": "inactive user",
        "lucy": "locked",
        "ulrich": "wrong password",
    }
    assert not UserSession.objects.exists()


def test_A2_every_refused_case_does_the_same_work(
    rpc: Any, a1_users: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Equal work instead of equal wall-clock time: one password hash and one failure delay each."""
    hashes = HashSpy(monkeypatch)
    delays: list[None] = []
    monkeypatch.setattr(throttle, "sleep_after_failure", lambda: delays.append(None))
    work = {}
    for case, (username, password) in A1_CASES.items():
        hashes.count = 0
        delays.clear()
        assert rpc().call("auth.login_ex", pw(username, password)) == AUTH_ERR
        work[case] = {"password hashes": hashes.count, "failure delays": len(delays)}
    assert work == dict.fromkeys(A1_CASES, {"password hashes": 1, "failure delays": 1})


def test_A3_api_key_failures_are_generic_and_compared_in_constant_time(
    rpc: Any, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = make_user("alice")
    good, good_text = key_services.api_key_create(user=alice, name="good")
    revoked, revoked_text = key_services.api_key_create(user=alice, name="revoked")
    key_services.api_key_revoke(key=revoked, reason="test", actor="root")
    deleted, deleted_text = key_services.api_key_create(user=alice, name="deleted")
    key_services.api_key_delete(key=deleted, actor="root")
    expiring, expiring_text = key_services.api_key_create(
        user=alice, name="expired", expires_at=timezone.now() + dt.timedelta(minutes=1)
    )
    # Its expiry passes (a past expiry cannot be set through any interface).
    ApiKey.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    cases = {
        "unknown key id": f"99999-{good_text.partition('-')[2]}",
        "known id, wrong secret": f"{good.pk}-{'x' * 64}",
        "revoked key": revoked_text,
        "deleted key": deleted_text,
        "malformed key": "not-a-key",
        "expired key, wrong secret": f"{expiring.pk}-{'y' * 64}",
    }
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def compare_digest(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", compare_digest)
    reference = rpc().raw("auth.login_ex", pw("alice", "wrong password"))
    for case, text in cases.items():
        compared.clear()
        response = rpc().raw("auth.login_ex", api_key("alice", text))
        assert_generic_failure(response, reference, case)
        if case in ("known id, wrong secret", "revoked key"):
            stored = ApiKey.objects.get(pk=text.partition("-")[0]).key_hash
            assert any(stored.encode() in pair for pair in compared), f"{case}: not compared in constant time"
    # Expired keys are told apart (TrueNAS's EXPIRED) only once the secret verified.
    assert rpc().call("auth.login_ex", api_key("alice", expiring_text)) == EXPIRED
    assert rpc().call("auth.login_ex", api_key("alice", good_text))["response_type"] == "SUCCESS"
    # Legacy login: the same `false` for every refused key.
    legacy = {case: rpc().raw("auth.login_with_api_key", text) for case, text in cases.items()}
    for case, response in legacy.items():
        assert_generic_failure(response, legacy["known id, wrong secret"], case)
        assert response.json()["result"] is False


# --- A4–A11: lockout and rate limits --------------------------------------------------------------


def test_A4_lock_after_threshold_is_per_account_not_per_address(rpc: Any, make_user: Any) -> None:
    make_user("alice")
    make_user("bob")
    for i in range(9):
        assert rpc(remote_addr=f"198.51.100.{i + 1}").call("auth.login_ex", pw("alice", "guess")) == AUTH_ERR
    assert throttle.locked_until(username="alice") is None
    assert lockout("alice").failures == 9
    # The 10th failure, from yet another address, locks the account for 5 minutes.
    assert rpc(remote_addr="198.51.100.10").call("auth.login_ex", pw("alice", "guess")) == AUTH_ERR
    row = lockout("alice")
    assert row.failures == 10
    assert row.locked_until - row.last_failure_at == dt.timedelta(minutes=5)
    # N+1: wrong and then right passwords, from fresh addresses, are refused.
    assert rpc(remote_addr="198.51.100.11").call("auth.login_ex", pw("alice", "guess")) == AUTH_ERR
    assert rpc(remote_addr="198.51.100.12").call("auth.login_ex", pw("alice")) == AUTH_ERR
    assert not UserSession.objects.exists()
    assert failure_audits()[-1].event_data["error"] == "locked"
    # Another account on the same addresses is untouched.
    assert rpc(remote_addr="198.51.100.1").call("auth.login_ex", pw("bob"))["response_type"] == "SUCCESS"
    # The lock ends at its documented time.
    expire_lock("alice")
    assert rpc(remote_addr="198.51.100.13").call("auth.login_ex", pw("alice"))["response_type"] == "SUCCESS"


def test_A5_failures_on_every_pathway_share_one_counter(rpc: Any, make_user: Any, totp: Any) -> None:
    """Failures on five pathways (OTP step, login_ex, legacy login, API key, Basic): one counter for
    the account's own credentials; API-key guesses count toward the key instead (F7)."""
    alice = make_user("alice")
    device = totp.device(alice)
    key, _ = key_services.api_key_create(user=alice, name="alice-key")
    wrong_codes = totp.wrong_codes(device, 2)
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    counted = {}
    for code in wrong_codes:
        assert client.call("auth.login_ex_continue", otp(code)) == AUTH_ERR
    counted["OTP step"] = lockout("alice").failures
    for _ in range(2):
        assert rpc().call("auth.login_ex", pw("alice", "guess")) == AUTH_ERR
    counted["auth.login_ex password"] = lockout("alice").failures
    for _ in range(2):
        assert rpc().call("auth.login", "alice", "guess") is False
    counted["auth.login (legacy)"] = lockout("alice").failures
    for _ in range(2):
        assert rpc().call("auth.login_ex", api_key("alice", f"{key.pk}-{'z' * 64}")) == AUTH_ERR
    counted["API key"] = lockout("alice").failures  # F7: counted toward the key, never the account
    for _ in range(4):
        assert is_not_authenticated(rpc(), **basic("alice", "guess"))
    counted["Authorization: Basic"] = lockout("alice").failures
    assert counted == {
        "OTP step": 2,
        "auth.login_ex password": 4,
        "auth.login (legacy)": 6,
        "API key": 6,
        "Authorization: Basic": 10,
    }
    assert lockout(throttle.api_key_lockout_name(key.pk)).failures == 2
    assert throttle.locked_until(username="alice") is not None


A6_PATHWAYS = ["auth.login_ex", "auth.login", "API_KEY_PLAIN", "OTP_TOKEN", "Authorization: Basic"]


@pytest.mark.parametrize("pathway", A6_PATHWAYS)
def test_A6_while_locked_every_attempt_fails_generically_and_the_lock_does_not_grow(
    rpc: Any, make_user: Any, totp: Any, pathway: str
) -> None:
    user = make_user("alice")
    _, key_text = key_services.api_key_create(user=user, name="alice-key")
    device = totp.device(user) if pathway == "OTP_TOKEN" else None
    client = rpc()
    if device is not None:
        assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    until = lock_account("alice")
    before = lockout("alice")

    def attempt(right: bool) -> bool:
        """One attempt on ``pathway``; True if it authenticated."""
        if pathway == "auth.login_ex":
            return rpc().call("auth.login_ex", pw("alice", PASSWORD if right else "guess")) != AUTH_ERR
        if pathway == "auth.login":
            return rpc().call("auth.login", "alice", PASSWORD if right else "guess") is not False
        if pathway == "API_KEY_PLAIN":
            text = key_text if right else key_text[:-1] + ("A" if key_text[-1] != "A" else "B")
            return rpc().call("auth.login_ex", api_key("alice", text)) != AUTH_ERR
        if pathway == "OTP_TOKEN":
            code = totp.code(device) if right else totp.wrong_codes(device)[0]
            return client.call("auth.login_ex_continue", otp(code)) != AUTH_ERR
        return not is_not_authenticated(rpc(), **basic("alice", PASSWORD if right else "guess"))

    reference = rpc().raw("auth.login_ex", pw("nobody", "guess"))
    if pathway == "auth.login_ex":
        assert_generic_failure(rpc().raw("auth.login_ex", pw("alice")), reference)
    assert not attempt(right=False)
    assert not attempt(right=True)
    assert not attempt(right=True)
    after = lockout("alice")
    assert (after.failures, after.locked_until, after.lock_count) == (
        before.failures,
        before.locked_until,
        before.lock_count,
    )
    # The lock ends exactly when it said it would.
    assert throttle.locked_until(username="alice", now=until - dt.timedelta(microseconds=1)) == until
    assert throttle.locked_until(username="alice", now=until) is None
    expire_lock("alice")
    assert attempt(right=True)


def test_A7_success_and_a_quiet_window_reset_the_counter(rpc: Any, make_user: Any, settings: Any) -> None:
    settings.SESSIONS_LOGIN_RATE = 0
    make_user("alice")
    make_user("bob")
    for _ in range(9):
        rpc().call("auth.login_ex", pw("alice", "guess"))
    assert rpc().call("auth.login_ex", pw("alice"))["response_type"] == "SUCCESS"
    assert lockout("alice") is None
    for _ in range(9):
        rpc().call("auth.login_ex", pw("alice", "guess"))
    assert lockout("alice").failures == 9
    assert throttle.locked_until(username="alice") is None
    # Observation window (15 min): failures older than that no longer count.
    for _ in range(9):
        rpc().call("auth.login_ex", pw("bob", "guess"))
    AccountLockout.objects.filter(username="bob").update(
        last_failure_at=timezone.now() - dt.timedelta(minutes=15, seconds=1)
    )
    rpc().call("auth.login_ex", pw("bob", "guess"))
    assert lockout("bob").failures == 1
    assert throttle.locked_until(username="bob") is None
    # Inside the window they do: the 10th locks.
    rpc().call("auth.login_ex", pw("alice", "guess"))
    assert throttle.locked_until(username="alice") is not None


def test_A8_victim_locked_by_an_attacker_recovers_by_time_or_admin_and_it_is_audited(
    rpc: Any, make_user: Any
) -> None:
    make_user("alice")
    attacker = rpc(remote_addr="203.0.113.66")
    for _ in range(10):
        attacker.call("auth.login_ex", pw("alice", "guess"))
    victim = rpc()
    assert victim.call("auth.login_ex", pw("alice")) == AUTH_ERR
    locks = AuditRecord.objects.filter(event_data__lockout=True)
    assert [(r.username, r.address) for r in locks] == [("alice", "203.0.113.66:0")]
    # Admin unlock: immediate, audited.
    assert throttle.unlock(username="alice", actor="root", address="127.0.0.1") is True
    unlock_audit = AuditRecord.objects.filter(event="METHOD_CALL").latest("id")
    assert (unlock_audit.username, unlock_audit.event_data) == (
        "root",
        {"method": "auth.unlock_user", "username": "alice", "was_locked": True},
    )
    assert victim.call("auth.login_ex", pw("alice"))["response_type"] == "SUCCESS"
    # Time unlock: locks double (5, 10, 20, 40 min) up to 1 h, and each one ends by itself.
    start = timezone.now()
    durations = []
    for i in range(6):
        at = start + dt.timedelta(hours=2 * i)
        for s in range(10):
            result = throttle.record_failure(
                username="carol",
                address="203.0.113.66",
                mechanism="PASSWORD_PLAIN",
                now=at + dt.timedelta(seconds=s),
            )
        durations.append(result.locked_until - (at + dt.timedelta(seconds=9)))
        assert throttle.locked_until(username="carol", now=result.locked_until) is None
    assert durations == [dt.timedelta(minutes=m) for m in (5, 10, 20, 40, 60, 60)]


def test_A9_password_spraying_hits_the_per_client_rate_limit_and_is_audited(
    rpc: Any, make_user: Any, settings: Any
) -> None:
    settings.SESSIONS_LOGIN_RATE = 20
    settings.SESSIONS_LOGIN_RATE_WINDOW = 60
    names = [f"user{i:02d}" for i in range(50)]
    for name in names:
        make_user(name)
    sprayer = rpc(remote_addr="203.0.113.7")
    responses = [sprayer.raw("auth.login_ex", pw(name, "Spring2026!")) for name in names]
    assert [r.status_code for r in responses] == [200] * 20 + [429] * 30
    assert all(r.json()["result"] == AUTH_ERR for r in responses[:20])
    for response in responses[20:]:
        assert 1 <= int(response["Retry-After"]) <= 60
        error = error_of(response)
        assert error["code"] == -32001
        assert (error["data"]["error"], error["data"]["errname"]) == (16, "EBUSY")
    # Another client is not affected.
    assert rpc(remote_addr="203.0.113.8").call("auth.login_ex", pw("user00", "x")) == AUTH_ERR
    # Every attempt, refused by the rate limit or not, leaves an audit record naming the account.
    audited = {
        r.username
        for r in AuditRecord.objects.filter(event="AUTHENTICATION", address__startswith="203.0.113.7:")
    }
    assert [n for n in names if n not in audited] == []


def test_A9_password_spraying_over_basic_auth_is_throttled(
    rpc: Any, make_user: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``Authorization: Basic`` pathway must not be an unthrottled password oracle."""
    settings.SESSIONS_LOGIN_RATE = 20
    delays: list[None] = []
    monkeypatch.setattr(throttle, "sleep_after_failure", lambda: delays.append(None))
    names = [f"user{i:02d}" for i in range(30)]
    for name in names:
        make_user(name)
    sprayer = rpc(remote_addr="203.0.113.7")
    responses = [sprayer.raw("auth.me", **basic(name, "Spring2026!")) for name in names]
    rate_limited = sum(r.status_code == 429 for r in responses)
    assert rate_limited > 0 or len(delays) == len(names), (rate_limited, len(delays))


def test_A10_forwarded_for_from_an_untrusted_peer_shares_the_peer_bucket(rpc: Any, settings: Any) -> None:
    settings.SESSIONS_TRUSTED_PROXIES = []
    settings.SESSIONS_LOGIN_RATE = 3
    peer = rpc(remote_addr="203.0.113.10")
    statuses = [
        peer.raw("auth.login_ex", pw("x", "y"), HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code
        for i in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
    assert list(RateCounter.objects.values_list("key", flat=True)) == [
        json.dumps(["login", "203.0.113.10"])  # one limit for every login entrance (F4)
    ]
    assert {r.address for r in AuditRecord.objects.all()} == {"203.0.113.10:0"}


def test_A10_forwarded_for_from_a_trusted_proxy_is_the_client(rpc: Any, settings: Any) -> None:
    settings.SESSIONS_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.SESSIONS_LOGIN_RATE = 3
    proxy = rpc()
    for i in range(6):  # six clients behind the proxy, one call each: nobody is limited
        response = proxy.raw("auth.login_ex", pw("x", "y"), HTTP_X_FORWARDED_FOR=f"198.51.100.{i}")
        assert response.status_code == 200
    # One client behind the proxy is limited on its own; a spoofed left-most hop does not help it.
    statuses = [
        proxy.raw("auth.login_ex", pw("x", "y"), HTTP_X_FORWARDED_FOR=f"6.6.6.{i}, 198.51.100.9").status_code
        for i in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    addresses = {r.address for r in AuditRecord.objects.all()}
    assert addresses == {f"198.51.100.{i}:0" for i in (0, 1, 2, 3, 4, 5, 9)}


def wrong_password_from(rpc: Any, i: int) -> Any:
    return rpc(remote_addr=f"198.51.100.{i + 1}").raw("auth.login_ex", pw("alice", f"guess {i}"))


@pytest.mark.django_db(transaction=True)
def test_A11_concurrent_wrong_passwords_are_all_counted(
    rpc: Any, make_user: Any, threads: Any, settings: Any
) -> None:
    settings.SESSIONS_LOCKOUT_THRESHOLD = 1000
    make_user("alice")
    responses = threads.run(50, lambda i: wrong_password_from(rpc, i))
    assert all(r.json()["result"] == AUTH_ERR for r in responses)
    assert threads.read(lambda: AccountLockout.objects.get(username="alice").failures) == 50


@pytest.mark.django_db(transaction=True)
def test_A11_concurrent_wrong_passwords_lock_exactly_once(rpc: Any, make_user: Any, threads: Any) -> None:
    make_user("alice")
    responses = threads.run(50, lambda i: wrong_password_from(rpc, i))
    assert all(r.json()["result"] == AUTH_ERR for r in responses)
    row = threads.read(lambda: AccountLockout.objects.get(username="alice"))
    assert (row.failures, row.lock_count) == (10, 1)
    assert row.locked_until is not None
    assert threads.read(lambda: AuditRecord.objects.filter(event_data__lockout=True).count()) == 1
    assert threads.read(lambda: rpc().call("auth.login_ex", pw("alice"))) == AUTH_ERR


# --- A12–A18: second factor --------------------------------------------------------------------------


def test_A12_a_used_totp_code_and_the_previous_step_code_are_refused_as_reuse(
    rpc: Any, make_user: Any, totp: Any
) -> None:
    device = totp.device(make_user("alice"))
    code = totp.code(device)
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    assert client.call("auth.login_ex_continue", otp(code))["response_type"] == "SUCCESS"
    assert client.call("auth.logout") is True
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    assert client.call("auth.login_ex_continue", otp(code)) == AUTH_ERR
    assert client.call("auth.login_ex_continue", otp(totp.code(device, -1))) == AUTH_ERR
    assert [r.event_data["error"] for r in failure_audits(username="alice")] == ["reused code", "reused code"]
    assert UserSession.objects.filter(ended_at__isnull=True).count() == 0


RACERS = 10  # more than two parallel requests widen the race window; still exactly one may win


def _second_factor_racers(rpc: Any, same_pending: bool) -> list[Any]:
    clients = [rpc() for _ in range(RACERS)]
    for i, client in enumerate(clients):
        if same_pending and i > 0:
            client.http.cookies[PENDING_COOKIE] = clients[0].http.cookies[PENDING_COOKIE].value
        else:
            assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    return clients


@pytest.mark.parametrize("same_pending", [True, False], ids=["same-pending-login", "separate-pending-logins"])
@pytest.mark.django_db(transaction=True)
def test_A13_one_totp_code_in_parallel_requests_opens_one_session(
    rpc: Any, make_user: Any, totp: Any, threads: Any, same_pending: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = totp.device(make_user("alice"))
    clients = _second_factor_racers(rpc, same_pending)
    real_verify = TOTPDevice.verify_token

    def slow_verify(self: TOTPDevice, token: Any) -> bool:
        time.sleep(0.02)  # widen the read-verify-save window so that an unserialised check shows
        return real_verify(self, token)

    monkeypatch.setattr(TOTPDevice, "verify_token", slow_verify)
    code = totp.code(device)
    responses = threads.run(RACERS, lambda i: clients[i].raw("auth.login_ex_continue", otp(code)))
    answers = sorted(r.json()["result"]["response_type"] for r in responses)
    assert answers == ["AUTH_ERR"] * (RACERS - 1) + ["SUCCESS"]
    assert (
        threads.read(lambda: UserSession.objects.filter(credentials=Credentials.LOGIN_TWOFACTOR).count()) == 1
    )


@pytest.mark.django_db(transaction=True)
def test_A14_parallel_wrong_codes_are_all_counted_and_bounded(
    rpc: Any, make_user: Any, totp: Any, threads: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SESSIONS_LOGIN_RATE = 0  # the per-address limit would stop this at 20; test the OTP limit
    device = totp.device(make_user("alice"))
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    pending = client.http.cookies[PENDING_COOKIE].value
    evaluated: list[bool] = []
    real_verify = TOTPDevice.verify_token

    def verify_token(self: TOTPDevice, token: Any) -> bool:
        result = real_verify(self, token)
        evaluated.append(result)
        return result

    monkeypatch.setattr(TOTPDevice, "verify_token", verify_token)
    codes = totp.wrong_codes(device, 30)
    clients = [rpc() for _ in codes]
    for c in clients:
        c.http.cookies[PENDING_COOKIE] = pending
    responses = threads.run(30, lambda i: clients[i].raw("auth.login_ex_continue", otp(codes[i])))
    assert all(r.json()["result"] == AUTH_ERR for r in responses)
    assert 1 <= len(evaluated) <= int(conf.get("SESSIONS_OTP_MAX_FAILURES"))
    assert not any(evaluated)
    stored = threads.read(lambda: TOTPDevice.objects.get(pk=device.pk).throttling_failure_count)
    assert stored == len(evaluated)
    assert threads.read(lambda: PendingLogin.objects.count()) == 0
    assert threads.read(lambda: UserSession.objects.count()) == 0


def test_A14_pending_login_is_dropped_after_K_wrong_codes(rpc: Any, make_user: Any, totp: Any) -> None:
    device = totp.device(make_user("alice"))
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    pending = client.http.cookies[PENDING_COOKIE].value
    for code in totp.wrong_codes(device, 5):
        response = client.raw("auth.login_ex_continue", otp(code))
        assert response.json()["result"] == AUTH_ERR
    assert response.cookies[PENDING_COOKIE].value == ""  # the 5th failure told the client to forget it
    assert not PendingLogin.objects.exists()
    assert failure_audits(username="alice")[-1].event_data["pending_dropped"] is True
    # Even the right code (and the old pending secret replayed) no longer opens a session.
    totp.reset_throttle(device)
    client.http.cookies[PENDING_COOKIE] = pending
    assert client.call("auth.login_ex_continue", otp(totp.code(device))) == AUTH_ERR
    assert not UserSession.objects.exists()


def protected_methods() -> list[str]:
    return sorted(name for name, method in METHODS.items() if method.auth_required)


def test_A15_after_the_password_step_nothing_protected_is_reachable(
    rpc: Any, make_user: Any, totp: Any
) -> None:
    make_user("admin", superuser=True)
    totp.device(make_user("alice", roles=[Role.AUTH_SESSIONS_WRITE]))
    other = rpc()
    other.login("admin")
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    assert PENDING_COOKIE in client.http.cookies
    reachable = [name for name in protected_methods() if not is_not_authenticated(client, name)]
    assert reachable == []
    assert not is_not_authenticated(other)
    target = session_of(other).public_id
    assert is_not_authenticated(client, "auth.terminate_session", target)
    assert UserSession.objects.get(public_id=target).ended_at is None
    assert not UserSession.objects.filter(username="alice").exists()
    assert PendingLogin.objects.filter(user__username="alice").count() == 1
    page = client.http.get("/admin/")
    assert page.status_code == 302
    assert page["Location"].startswith("/admin/login/")


def test_A16_the_otp_step_takes_no_identity_and_only_the_pending_users_code(
    rpc: Any, make_user: Any, totp: Any
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    alice_device, bob_device = totp.device(alice), totp.device(bob)
    bob_code = totp.code(bob_device)
    assert bob_code not in {totp.code(alice_device, o) for o in (-1, 0, 1)}
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    for identity in ({"username": "bob"}, {"user_id": bob.pk}, {"user": "bob"}):
        error = client.error("auth.login_ex_continue", {**otp(bob_code), **identity})
        assert error["code"] == -32602
    assert client.call("auth.login_ex_continue", otp(bob_code)) == AUTH_ERR
    assert not UserSession.objects.exists()
    totp.reset_throttle(alice_device)
    answer = client.call("auth.login_ex_continue", otp(totp.code(alice_device)))
    assert (answer["response_type"], answer["user_info"]["pw_name"]) == ("SUCCESS", "alice")
    assert list(UserSession.objects.values_list("username", flat=True)) == ["alice"]
    # Legacy login with B's code: refused as well.
    totp.reset_throttle(alice_device)
    assert rpc().call("auth.login", "alice", PASSWORD, bob_code) is False


def test_A17_a_new_login_abandons_the_pending_second_factor(rpc: Any, make_user: Any, totp: Any) -> None:
    alice_device = totp.device(make_user("alice"))
    make_user("bob")
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    alice_pending = client.http.cookies[PENDING_COOKIE].value
    response = client.raw("auth.login_ex", pw("bob"))
    assert response.json()["result"]["response_type"] == "SUCCESS"
    assert response.cookies[PENDING_COOKIE].value == ""
    assert not PendingLogin.objects.exists()
    abandoned = failure_audits(username="alice")
    assert [r.event_data["error"] for r in abandoned] == ["abandoned second factor"]
    assert client.call("auth.me")["pw_name"] == "bob"
    # Replaying A's pending secret with A's right code does nothing.
    replay = rpc()
    replay.http.cookies[PENDING_COOKIE] = alice_pending
    assert replay.call("auth.login_ex_continue", otp(totp.code(alice_device))) == AUTH_ERR
    assert not UserSession.objects.filter(username="alice").exists()


def test_A17_switching_to_another_second_factor_user_keeps_only_the_new_pending_login(
    rpc: Any, make_user: Any, totp: Any
) -> None:
    totp.device(make_user("alice"))
    bob_device = totp.device(make_user("bob"))
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    assert client.call("auth.login_ex", pw("bob"))["response_type"] == "OTP_REQUIRED"
    assert list(PendingLogin.objects.values_list("user__username", flat=True)) == ["bob"]
    answer = client.call("auth.login_ex_continue", otp(totp.code(bob_device)))
    assert (answer["response_type"], answer["user_info"]["pw_name"]) == ("SUCCESS", "bob")
    assert [r.event_data["error"] for r in failure_audits(username="alice")] == ["abandoned second factor"]


@pytest.mark.parametrize(("offset", "accepted"), [(-2, False), (-1, True), (0, True), (1, True), (2, False)])
def test_A18_totp_tolerance_is_one_step(
    rpc: Any, make_user: Any, totp: Any, offset: int, accepted: bool
) -> None:
    device = totp.device(make_user("alice"))
    assert (device.tolerance, device.drift) == (1, 0)
    if not accepted:  # precondition: the code is not also valid within the window
        assert totp.code(device, offset) not in {totp.code(device, o) for o in (-1, 0, 1)}
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    answer = client.call("auth.login_ex_continue", otp(totp.code(device, offset)))
    assert (answer["response_type"] == "SUCCESS") is accepted


def test_A18_client_supplied_time_is_ignored(rpc: Any, make_user: Any, totp: Any) -> None:
    device = totp.device(make_user("alice"))
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    future_code = totp.code(device, 2)
    future = dt.datetime.fromtimestamp(totp.now + 60, tz=dt.UTC)
    error = client.error("auth.login_ex_continue", {**otp(future_code), "timestamp": int(totp.now + 60)})
    assert error["code"] == -32602
    answer = client.call(
        "auth.login_ex_continue",
        otp(future_code),
        HTTP_DATE=future.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        HTTP_X_CLIENT_TIME=str(int(totp.now + 60)),
    )
    assert answer == AUTH_ERR


# --- A19–A20: exemptions, assurance level, one-time passwords ------------------------------------------


def test_A19_api_keys_and_tokens_are_exempt_from_totp_but_basic_is_not(
    rpc: Any, make_user: Any, totp: Any
) -> None:
    tina = make_user("tina")
    device = totp.device(tina)
    _, key_text = key_services.api_key_create(user=tina, name="tina-key")
    answer = rpc().call("auth.login_ex", api_key("tina", key_text))
    assert answer["response_type"] == "SUCCESS"
    assert rpc().call("auth.me", **bearer(key_text))["pw_name"] == "tina"
    browser = rpc()
    assert browser.call("auth.login_ex", pw("tina"))["response_type"] == "OTP_REQUIRED"
    assert browser.call("auth.login_ex_continue", otp(totp.code(device)))["response_type"] == "SUCCESS"
    token = new_token(browser)
    assert rpc().call("auth.login_ex", token_plain(token))["response_type"] == "SUCCESS"
    # A password alone, per request, is not enough for a second-factor user.
    assert is_not_authenticated(rpc(), **basic("tina", PASSWORD))


@pytest.fixture
def level_2(settings: Any) -> None:
    settings.SESSIONS_ASSURANCE_LEVEL = "LEVEL_2"


def test_A19_level_2_refuses_api_key_logins(rpc: Any, make_user: Any, level_2: None) -> None:
    _, key_text = key_services.api_key_create(user=make_user("alice"), name="k")
    reference = rpc().raw("auth.login_ex", pw("alice", "wrong"))
    assert_generic_failure(rpc().raw("auth.login_ex", api_key("alice", key_text)), reference)
    assert rpc().call("auth.login_with_api_key", key_text) is False
    assert not UserSession.objects.exists()


def test_A19_level_2_refuses_bearer_api_keys(rpc: Any, make_user: Any, level_2: None) -> None:
    _, key_text = key_services.api_key_create(user=make_user("alice"), name="k")
    assert is_not_authenticated(rpc(), **bearer(key_text))


def test_A19_level_2_refuses_multi_use_tokens(rpc: Any, make_user: Any, totp: Any, settings: Any) -> None:
    device = totp.device(make_user("alice"))
    client = rpc()
    assert client.call("auth.login_ex", pw("alice"))["response_type"] == "OTP_REQUIRED"
    assert client.call("auth.login_ex_continue", otp(totp.code(device)))["response_type"] == "SUCCESS"
    made_at_level_1 = new_token(client)
    settings.SESSIONS_ASSURANCE_LEVEL = "LEVEL_2"
    error = client.error("auth.generate_token", 600, {}, True, False)
    assert (error["code"], error["data"]["error"], error["data"]["errname"]) == (-32001, 95, "EOPNOTSUPP")
    single = new_token(client, single_use=True)
    assert rpc().call("auth.login_ex", token_plain(single))["response_type"] == "SUCCESS"
    assert rpc().call("auth.login_ex", token_plain(single)) == AUTH_ERR
    # A multi-use token minted before the level was raised is refused as well.
    assert rpc().call("auth.login_ex", token_plain(made_at_level_1)) == AUTH_ERR


def test_A19_level_2_password_logins_need_a_second_factor(
    rpc: Any, make_user: Any, totp: Any, level_2: None
) -> None:
    make_user("alice")
    device = totp.device(make_user("tina"))
    assert rpc().call("auth.login_ex", pw("alice")) == AUTH_ERR
    client = rpc()
    assert client.call("auth.login_ex", pw("tina"))["response_type"] == "OTP_REQUIRED"
    answer = client.call("auth.login_ex_continue", otp(totp.code(device)))
    assert (answer["response_type"], answer["authenticator"]) == ("SUCCESS", "LEVEL_2")


def test_A20_onetime_password_is_flagged_single_use_and_cannot_mint_tokens(rpc: Any, make_user: Any) -> None:
    alice = make_user("alice")
    onetime = onetime_password_issue(user=alice, actor="root")
    client = rpc()
    answer = client.call("auth.login_ex", pw("alice", onetime))
    assert answer["response_type"] == "SUCCESS"
    assert "OTPW" in answer["user_info"]["account_attributes"]
    row = session_of(client)
    assert (row.credentials, row.password_change_required) == (Credentials.LOGIN_ONETIME_PASSWORD, True)
    # Second use: the generic failure.
    reference = rpc().raw("auth.login_ex", pw("alice", "wrong"))
    assert_generic_failure(rpc().raw("auth.login_ex", pw("alice", onetime)), reference)
    # No tokens: refused over JSON-RPC (a new password must be set first) and by the service.
    assert client.error("auth.generate_token")["code"] == -32001
    with pytest.raises(NotSupported):
        token_generate(session=row, client=LOOPBACK)
    assert not Token.objects.exists()
    # Even once the password is set (the session kept), the one-time-password session mints none.
    secret = user_set_password(user=alice, password="a brand new password", keep=row)
    client.http.cookies[session_cookie_name()] = secret
    error = client.error("auth.generate_token")
    assert (error["data"]["error"], error["data"]["errname"]) == (95, "EOPNOTSUPP")
    assert not Token.objects.exists()


def test_A20_expired_onetime_password_fails(rpc: Any, make_user: Any) -> None:
    onetime = onetime_password_issue(user=make_user("alice"), actor="root")
    OneTimePassword.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    reference = rpc().raw("auth.login_ex", pw("alice", "wrong"))
    assert_generic_failure(rpc().raw("auth.login_ex", pw("alice", onetime)), reference)
    assert not UserSession.objects.exists()


# --- A21–A27: credential changes end sessions ---------------------------------------------------------


def test_A21_own_password_change_keeps_the_current_session_with_a_new_id(rpc: Any, make_user: Any) -> None:
    alice = make_user("alice")
    current, other = rpc(), rpc()
    current.login("alice")
    other.login("alice")
    _, key_text = key_services.api_key_create(user=alice, name="k")
    by_key = rpc()
    by_key.call("auth.login_ex", api_key("alice", key_text))
    by_token = rpc()
    by_token.call("auth.login_ex", token_plain(new_token(other)))
    unused_token = new_token(other)
    old_cookie = current.http.cookies[session_cookie_name()].value
    old = session_of(current)
    old_id = old.public_id

    secret = user_set_password(user=alice, password="another long password", keep=old)
    current.http.cookies[session_cookie_name()] = secret
    mine = current.call("auth.my_sessions", [["current", "=", True]])
    assert len(mine) == 1
    assert mine[0]["id"] != old_id
    assert session_of(current).pk == old.pk
    stale = rpc()
    stale.http.cookies[session_cookie_name()] = old_cookie
    assert is_not_authenticated(stale)
    for name, client in {"other": other, "api key": by_key, "token": by_token}.items():
        assert is_not_authenticated(client), name
    assert rpc().call("auth.login_ex", token_plain(unused_token)) == AUTH_ERR
    reasons = set(UserSession.objects.exclude(pk=old.pk).values_list("end_reason", flat=True))
    assert reasons <= {EndReason.PASSWORD_CHANGED, EndReason.PARENT_ENDED}
    assert UserSession.objects.filter(ended_at__isnull=True).count() == 1


def test_A21_tokens_minted_before_the_change_die_with_it(rpc: Any, make_user: Any) -> None:
    alice = make_user("alice")
    current = rpc()
    current.login("alice")
    minted_before = new_token(current)
    secret = user_set_password(user=alice, password="another long password", keep=session_of(current))
    current.http.cookies[session_cookie_name()] = secret
    assert current.call("auth.me")["pw_name"] == "alice"
    assert rpc().call("auth.login_ex", token_plain(minted_before)) == AUTH_ERR


def _sessions_of_bob(rpc: Any, bob: Any, totp: Any, device: Any) -> dict[str, Any]:
    """Bob's browser (password + OTP), API-key and token sessions, and a Bearer key."""
    browser = rpc()
    assert browser.call("auth.login_ex", pw("bob"))["response_type"] == "OTP_REQUIRED"
    assert browser.call("auth.login_ex_continue", otp(totp.code(device)))["response_type"] == "SUCCESS"
    _, key_text = key_services.api_key_create(user=bob, name="bob-key")
    by_key = rpc()
    assert by_key.call("auth.login_ex", api_key("bob", key_text))["response_type"] == "SUCCESS"
    by_token = rpc()
    assert by_token.call("auth.login_ex", token_plain(new_token(browser)))["response_type"] == "SUCCESS"
    return {"browser": browser, "api key": by_key, "token": by_token, "key": key_text}


@pytest.mark.parametrize(
    "change", ["admin resets password", "admin form saves password", "TOTP device removed"]
)
def test_A22_admin_credential_change_ends_all_sessions(
    rpc: Any, make_user: Any, totp: Any, change: str
) -> None:
    bob = make_user("bob")
    device = totp.device(bob)
    bob_sessions = _sessions_of_bob(rpc, bob, totp, device)
    if change == "admin resets password":
        user_set_password(user=bob, password="set by the admin", actor="root")
    elif change == "admin form saves password":
        bob.set_password("set by the admin")
        bob.save()
    else:
        device.delete()
    for name in ("browser", "api key", "token"):
        assert is_not_authenticated(bob_sessions[name]), name
    assert not UserSession.objects.filter(ended_at__isnull=True).exists()


@pytest.mark.parametrize("change", ["disabled", "disabled by QuerySet.update", "deleted"])
def test_A23_disabled_or_deleted_user_loses_every_session_and_key(
    rpc: Any, make_user: Any, totp: Any, change: str
) -> None:
    bob = make_user("bob")
    bob_sessions = _sessions_of_bob(rpc, bob, totp, totp.device(bob))
    key_text = bob_sessions["key"]
    assert rpc().call("auth.me", **bearer(key_text))["pw_name"] == "bob"
    if change == "disabled":
        bob.is_active = False
        bob.save()
    elif change == "disabled by QuerySet.update":
        get_user_model().objects.filter(pk=bob.pk).update(is_active=False)
    else:
        bob.delete()
    for name in ("browser", "api key", "token"):
        assert is_not_authenticated(bob_sessions[name]), name
    assert is_not_authenticated(rpc(), **bearer(key_text))
    assert rpc().call("auth.login_ex", api_key("bob", key_text)) == AUTH_ERR
    ended = UserSession.objects.filter(username="bob")
    # Each session with its own reason: the account's, and the token's parent (the browser session).
    assert sorted(ended.values_list("credentials", "end_reason")) == [
        (Credentials.API_KEY, EndReason.USER_DISABLED),
        (Credentials.LOGIN_TWOFACTOR, EndReason.USER_DISABLED),
        (Credentials.TOKEN, EndReason.PARENT_ENDED),
    ]
    assert not ended.filter(ended_at__isnull=True).exists()


def test_A23_a_failed_login_lock_stops_new_logins_and_keeps_open_sessions(
    rpc: Any, make_user: Any, totp: Any, settings: Any
) -> None:
    """The policy (docs/security.md, "Authentication policy"): the lock after failed logins stops every *new* login of the
    account name; it does not end open sessions -- anyone can trigger it by guessing, and ending
    sessions would turn the brute-force protection into a remote "sign everyone out" button.
    Ending a user's sessions is the administrator's disable (above)."""
    settings.SESSIONS_LOGIN_RATE = 0  # the guesses come from one address; the lock is the subject
    bob = make_user("bob")
    bob_sessions = _sessions_of_bob(rpc, bob, totp, totp.device(bob))
    for _ in range(10):
        assert rpc().call("auth.login_ex", pw("bob", "wrong")) == AUTH_ERR
    assert throttle.locked_until(username="bob") is not None
    for name in ("browser", "api key", "token"):
        assert bob_sessions[name].call("auth.me")["pw_name"] == "bob", name
    assert rpc().call("auth.me", **bearer(bob_sessions["key"]))["pw_name"] == "bob"
    assert not UserSession.objects.filter(username="bob", ended_at__isnull=False).exists()
    # Every new login is refused while the lock lasts, the right password and the key included.
    assert rpc().call("auth.login_ex", pw("bob")) == AUTH_ERR
    assert rpc().call("auth.login_ex", api_key("bob", bob_sessions["key"])) == AUTH_ERR


def test_A24_revoking_a_key_ends_its_sessions_and_records_why(rpc: Any, make_user: Any) -> None:
    key, key_text = key_services.api_key_create(user=make_user("alice"), name="k")
    by_key = rpc()
    by_key.call("auth.login_ex", api_key("alice", key_text))
    by_token = rpc()
    by_token.call("auth.login_ex", token_plain(new_token(by_key)))
    key_services.api_key_revoke(key=key, reason="leaked in a pastebin", actor="root")
    assert is_not_authenticated(by_key)
    assert is_not_authenticated(by_token)
    reference = rpc().raw("auth.login_ex", pw("alice", "wrong"))
    assert_generic_failure(rpc().raw("auth.login_ex", api_key("alice", key_text)), reference)
    key.refresh_from_db()
    assert (key.revoked, key.revoked_reason) == (True, "leaked in a pastebin")
    alert = AuditRecord.objects.filter(event_data__method="api_key.revoke").get()
    assert (alert.username, alert.event_data["reason"]) == ("root", "leaked in a pastebin")
    reasons = dict(UserSession.objects.values_list("credentials", "end_reason"))
    assert reasons == {
        Credentials.API_KEY: EndReason.CREDENTIAL_REVOKED,
        Credentials.TOKEN: EndReason.PARENT_ENDED,
    }


def test_A25_a_key_expiring_mid_session_ends_the_session(rpc: Any, make_user: Any) -> None:
    key, key_text = key_services.api_key_create(
        user=make_user("alice"), name="k", expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    client = rpc()
    client.call("auth.login_ex", api_key("alice", key_text))
    assert client.call("auth.me")["pw_name"] == "alice"
    ApiKey.objects.filter(pk=key.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )  # time passes
    assert is_not_authenticated(client)
    assert session_of(client).end_reason == EndReason.EXPIRED
    assert rpc().call("auth.login_ex", api_key("alice", key_text)) == EXPIRED
    assert rpc().call("auth.login_ex", api_key("alice", f"{key.pk}-{'q' * 64}")) == AUTH_ERR


@pytest.mark.parametrize("carrier", ["API_KEY_PLAIN", "auth.login_with_api_key", "Bearer"])
def test_A26_api_key_over_plain_http_from_a_remote_address_is_revoked(
    rpc: Any, make_user: Any, carrier: str
) -> None:
    key, key_text = key_services.api_key_create(user=make_user("alice"), name="k")
    local = rpc()
    local.call("auth.login_ex", api_key("alice", key_text))
    # A wrong secret from the same remote address revokes nothing (ids are guessable).
    remote = rpc(remote_addr="10.0.0.5")
    assert remote.call("auth.login_ex", api_key("alice", f"{key.pk}-{'w' * 64}")) == AUTH_ERR
    assert is_not_authenticated(remote, **bearer(f"{key.pk}-{'w' * 64}"))
    assert ApiKey.objects.get(pk=key.pk).revoked is False
    # Over HTTPS the same remote address is fine.
    assert (
        rpc(remote_addr="10.0.0.5").call("auth.login_ex", api_key("alice", key_text), secure=True)[
            "response_type"
        ]
        == "SUCCESS"
    )
    if carrier == "API_KEY_PLAIN":
        assert remote.call("auth.login_ex", api_key("alice", key_text)) == EXPIRED
    elif carrier == "auth.login_with_api_key":
        assert remote.call("auth.login_with_api_key", key_text) is False
    else:
        assert is_not_authenticated(remote, **bearer(key_text))
    key.refresh_from_db()
    assert (key.revoked, key.revoked_reason) == (True, "Attempt to use over an insecure transport")
    assert is_not_authenticated(local)
    assert rpc().call("auth.login_ex", api_key("alice", key_text)) == AUTH_ERR
    assert AuditRecord.objects.filter(event_data__method="api_key.revoke").count() == 1


def test_A27_reset_key_old_value_dies_new_value_shown_once(rpc: Any, make_user: Any) -> None:
    make_user("alice")
    owner = rpc()
    owner.login("alice")
    created = owner.call("api_key.create", {"name": "ci"})
    old_text = created["key"]
    by_old = rpc()
    by_old.call("auth.login_ex", api_key("alice", old_text))
    updated = owner.call("api_key.update", created["id"], {"reset": True})
    new_text = updated["key"]
    assert new_text != old_text
    assert new_text.startswith(f"{created['id']}-")
    assert rpc().call("auth.login_ex", api_key("alice", old_text)) == AUTH_ERR
    assert is_not_authenticated(by_old)
    assert rpc().call("auth.login_ex", api_key("alice", new_text))["response_type"] == "SUCCESS"
    later = [
        owner.raw("api_key.query").content,
        owner.raw("api_key.my_keys").content,
        owner.raw("api_key.get_instance", created["id"]).content,
        owner.raw("api_key.update", created["id"], {"name": "ci-2"}).content,
    ]
    secret = new_text.partition("-")[2].encode()
    assert [secret in body for body in later] == [False] * 4
    assert all(b'"key":' not in body for body in later)


# --- A28–A29: storage and passwords -------------------------------------------------------------------


def _dump_tables() -> str:
    """Every row of every registry table and of the user table, as text."""
    from django.apps import apps

    models = [*apps.get_app_config("sessions_app").get_models(), get_user_model()]
    return json.dumps({m._meta.db_table: list(m.objects.values()) for m in models}, default=str)


def test_A28_only_hashes_are_stored_and_failed_logins_never_log_the_presented_secret(
    rpc: Any, make_user: Any, totp: Any, settings: Any
) -> None:
    settings.SESSIONS_LOGIN_RATE = 0
    alice = make_user("alice", roles=[Role.API_KEY_WRITE])
    make_user("root", superuser=True)
    bob_device = totp.device(make_user("bob"))
    browser = rpc()
    browser.login("alice")
    cookie = browser.http.cookies[session_cookie_name()].value
    key_text = browser.call("api_key.create", {"name": "ci"})["key"]
    key_id, _, key_secret = key_text.partition("-")
    token = new_token(browser)
    onetime = onetime_password_issue(user=alice, actor="root")
    pending_client = rpc()
    pending_client.call("auth.login_ex", pw("bob"))
    pending = pending_client.http.cookies[PENDING_COOKIE].value
    code = totp.code(bob_device)
    pending_client.call("auth.login_ex_continue", otp(code))
    wrong_password = "hunter2-but-not-quite"
    wrong_key_known_id = f"{key_id}-{'W' * 64}"
    wrong_key_unknown = f"424242-{'V' * 64}"
    rpc().call("auth.login_ex", pw("alice", wrong_password))
    rpc().call("auth.login_ex", api_key("alice", wrong_key_known_id))
    rpc().call("auth.login_ex", api_key("alice", wrong_key_unknown))
    rpc().call("auth.login_ex", api_key("alice", "garbage-that-is-no-key"))
    rpc().call("auth.login_with_api_key", wrong_key_known_id)
    rpc().raw("auth.me", **bearer(wrong_key_unknown))
    rpc().raw("auth.me", **basic("alice", wrong_password))

    stored = _dump_tables()
    secrets = {
        "password": PASSWORD,
        "wrong password": wrong_password,
        "session cookie": cookie,
        "api key": key_text,
        "api key secret": key_secret,
        "token": token,
        "one-time password": onetime,
        "pending second-factor secret": pending,
        "presented wrong key (known id)": wrong_key_known_id.partition("-")[2],
        "presented wrong key (unknown id)": wrong_key_unknown.partition("-")[2],
        "presented garbage key": "garbage-that-is-no-key",
    }
    assert [name for name, value in secrets.items() if value in stored] == []
    assert code not in json.dumps(list(AuditRecord.objects.values_list("event_data", flat=True)))
    # The key is a keyed hash (HMAC with a server-side pepper) of a >= 128-bit random secret.
    stored_key = ApiKey.objects.get(pk=int(key_id))
    pepper = key_services.api_key_pepper()
    assert stored_key.key_hash == hmac.new(pepper, key_secret.encode(), hashlib.sha256).hexdigest()
    assert stored_key.key_hash != hashlib.sha256(key_secret.encode()).hexdigest()
    assert len(key_secret) == 64
    assert key_secret.isalnum()
    # Failed key logins name the key (id:name) or <INVALID>, never the presented text.
    refs = [r.event_data.get("api_key_ref") for r in failure_audits() if "api_key_ref" in r.event_data]
    assert sorted(set(refs)) == sorted({f"{key_id}:ci", "<INVALID>"})
    # Listing keys or sessions never shows a secret (API and manage.py).
    admin = rpc()
    admin.login("root")
    listings = [
        admin.raw("api_key.query").content.decode(),
        admin.raw("auth.sessions").content.decode(),
        admin.raw("audit.query").content.decode(),
    ]
    out = io.StringIO()
    call_command("sessions", "list", "--format", "json", "--history", stdout=out)
    listings.append(out.getvalue())
    assert [name for name, value in secrets.items() if any(value in text for text in listings)] == []
    assert '"keyhash": "********"' in listings[0]


def test_A29_long_and_unicode_passwords_are_accepted_and_never_truncated(rpc: Any, make_user: Any) -> None:
    from project import settings as project_settings

    assert project_settings.PASSWORD_HASHERS[0].rsplit(".", 1)[1] in {
        "Argon2PasswordHasher",
        "PBKDF2PasswordHasher",
    }
    passwords = {
        "sixty-four": "p" * 63 + "!",
        "unicode": "pässwörd – 密码 – пароль – 🔐🔑 – ﷽",
        "hundred": "".join(chr(0x41 + i % 26) for i in range(99)) + "z",
    }
    for name, password in passwords.items():
        make_user(name, password=password)
        assert rpc().call("auth.login_ex", pw(name, password))["response_type"] == "SUCCESS", name
    hundred = passwords["hundred"]
    assert rpc().call("auth.login_ex", pw("hundred", hundred[:-1] + "y")) == AUTH_ERR
    assert rpc().call("auth.login_ex", pw("hundred", hundred[:72])) == AUTH_ERR


def test_A29_oversized_passwords_are_refused_before_hashing(
    rpc: Any, make_user: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    user = make_user("alice")
    hashes = HashSpy(monkeypatch)
    huge = "a" * 1_000_000
    assert check_password(user, huge) is False
    assert login_ex(params=pw("alice", huge), client=LOOPBACK).response == AUTH_ERR
    assert hashes.count == 0
    # Over HTTP: beyond the 8 KiB unauthenticated body cap -> 413, before any parsing or hashing.
    response = rpc().raw("auth.login_ex", pw("alice", huge))
    assert response.status_code == 413
    # Within the body cap but over SESSIONS_MAX_PASSWORD_LENGTH: the generic failure, no hashing.
    too_long = "b" * (int(conf.get("SESSIONS_MAX_PASSWORD_LENGTH")) + 1)
    assert rpc().call("auth.login_ex", pw("alice", too_long)) == AUTH_ERR
    assert hashes.count == 0


# --- A30–A31: who is unauthenticated --------------------------------------------------------------


def test_A30_a_tcp_client_cannot_claim_a_unix_socket_identity(rpc: Any, make_user: Any) -> None:
    make_user("root", superuser=True)
    claims = {
        "HTTP_X_PEER_UID": "0",
        "HTTP_X_REMOTE_UID": "0",
        "HTTP_SO_PEERCRED": "1 0 0",
        "HTTP_REMOTE_USER": "root",
        "HTTP_X_REMOTE_USER": "root",
        "HTTP_X_FORWARDED_USER": "root",
        "HTTP_GUNICORN_SOCKET": "/run/sessions.sock",
        "HTTP_X_FORWARDED_FOR": "unix:/run/sessions.sock",
    }
    client = rpc()
    assert is_not_authenticated(client, **claims)
    assert is_not_authenticated(client, "auth.sessions", **claims)
    for body in (
        {"mechanism": "UNIX_SOCKET", "uid": 0},
        {**pw("root", ""), "uid": 0},
        {**pw("root", ""), "peer": [1, 0, 0]},
    ):
        assert client.error("auth.login_ex", body, **claims)["code"] == -32602
    assert not UserSession.objects.exists()


UNAUTHENTICATED_METHODS = {
    "auth.login_ex",
    "auth.login_ex_continue",
    "auth.login",
    "auth.login_with_api_key",
    "auth.login_with_token",
    "auth.mechanism_choices",
    "core.ping",
    "core.set_options",
}


def test_A31_only_the_documented_methods_are_unauthenticated() -> None:
    assert {name for name, method in METHODS.items() if not method.auth_required} == UNAUTHENTICATED_METHODS


@pytest.mark.parametrize("method", sorted(set(METHODS) - UNAUTHENTICATED_METHODS))
def test_A31_every_other_method_needs_a_session(rpc: Any, make_user: Any, method: str) -> None:
    make_user("alice")
    logged_out = rpc()
    logged_out.login("alice")
    cookie = logged_out.http.cookies[session_cookie_name()].value
    logged_out.call("auth.logout")
    logged_out.http.cookies[session_cookie_name()] = cookie
    forged = rpc()
    forged.http.cookies[session_cookie_name()] = keys.new_token()
    for name, client, extra in (
        ("anonymous", rpc(), {}),
        ("logged-out cookie", logged_out, {}),
        ("never-issued cookie", forged, {}),
        ("bad bearer", rpc(), bearer("1-" + "x" * 64)),
    ):
        error = client.error(method, **extra)
        assert (error["code"], error["data"]["error"], error["data"]["errname"]) == (
            -32001,
            207,
            "ENOTAUTHENTICATED",
        ), name
