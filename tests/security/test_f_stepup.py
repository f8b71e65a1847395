"""security.md (F) F1, F2: a stolen credential must not become the password or the second factor.

F1 — a check of the current password is a login (lockout, delay, audit, locked refuses the right
one, the answer to a wrong one never depends on the other fields). F2 — step-up before
account-security changes, and only password sessions change the second factor.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.auth import keys, throttle
from sessions_app.middleware import session_cookie_name
from sessions_app.models import ApiKey, AuditRecord, Credentials, UserSession
from sessions_app.services.api_keys import api_key_create
from sessions_app.services.users import onetime_password_issue
from tests.conftest import PASSWORD
from tests.test_views import Browser

NEW_PASSWORD = "a much longer new passphrase 42"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The failure delays that were asked for (the delay itself is 0 in tests)."""
    calls: list[float] = []
    monkeypatch.setattr(throttle, "sleep_after_failure", lambda: calls.append(throttle.fail_delay()))
    return calls


def _bearer(user: Any) -> dict[str, str]:
    _, plaintext = api_key_create(user=user, name=f"{user.get_username()}-key")
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


def _session(browser: Browser) -> UserSession:
    secret = browser.http.cookies[session_cookie_name()].value
    return UserSession.objects.get(secret_hash=keys.hash_secret(secret))


def _age(browser: Browser, minutes: int = 10) -> None:
    """Make the browser's session older than the step-up window (as if signed in long ago)."""
    UserSession.objects.filter(pk=_session(browser).pk).update(
        created_at=timezone.now() - dt.timedelta(minutes=minutes)
    )


# --- F1 ---------------------------------------------------------------------------------------------


def test_f01_set_password_with_a_key_is_a_counted_delayed_audited_login(
    rpc: Any, make_user: Any, sleeps: list[float]
) -> None:
    alice = make_user("alice")
    bearer = _bearer(alice)
    client = rpc()
    for _ in range(10):
        error = client.error("auth.set_password", {"old_password": "guess", "new_password": "a"}, **bearer)
        assert error["data"]["extra"] == [
            ["set_password.old_password", "the current password is not correct", 22]
        ]
    assert len(sleeps) == 10
    failures = AuditRecord.objects.filter(success=False, event_data__method="auth.set_password")
    assert failures.count() == 10
    assert {r.address.rsplit(":", 1)[0] for r in failures} == {"127.0.0.1"}
    # The tenth wrong guess locked the account: a normal login fails, and so does the right password.
    assert throttle.locked_until(username="alice") is not None
    assert rpc().login()["response_type"] == "AUTH_ERR"
    error = client.error(
        "auth.set_password", {"old_password": PASSWORD, "new_password": NEW_PASSWORD}, **bearer
    )
    assert error["data"]["extra"][0][:2] == [
        "set_password.old_password",
        "the current password is not correct",
    ]
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_f01_answer_to_a_wrong_current_password_ignores_the_new_one(rpc: Any, make_user: Any) -> None:
    bearer = _bearer(make_user("alice"))
    client = rpc()
    answers = [
        client.error("auth.set_password", {"old_password": "guess", "new_password": new}, **bearer)["data"][
            "extra"
        ]
        for new in ("a", NEW_PASSWORD, "password")
    ]
    assert answers[0] == answers[1] == answers[2]
    # With the right one, the new password's own problems are then reported.
    right = client.error("auth.set_password", {"old_password": PASSWORD, "new_password": "a"}, **bearer)
    assert right["data"]["extra"][0][0] == "set_password.new_password"


def test_f01_session_that_proves_the_password_resets_the_counter(rpc: Any, make_user: Any) -> None:
    alice = make_user("alice")
    client = rpc()
    client.login()
    for _ in range(5):
        client.error("auth.set_password", {"old_password": "guess", "new_password": NEW_PASSWORD})
    assert client.call("auth.set_password", {"old_password": PASSWORD, "new_password": NEW_PASSWORD}) is True
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert throttle.locked_until(username="alice") is None


def test_f01_password_page_counts_wrong_current_passwords(make_user: Any, sleeps: list[float]) -> None:
    make_user("alice")
    browser = Browser("alice")
    for _ in range(10):
        response = browser.post(
            "/password/",
            {"current_password": "guess", "new_password1": "a", "new_password2": "b"},
        )
        assert response.status_code == 400
        body = response.content.decode()
        assert "The current password is not correct." in body
        assert "differ" not in body  # the other fields are not judged before the current password
    assert len(sleeps) == 10
    assert AuditRecord.objects.filter(success=False, event_data__method="web.password_change").count() == 10
    assert throttle.locked_until(username="alice") is not None
    response = browser.post(
        "/password/",
        {"current_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 400
    assert "The current password is not correct." in response.content.decode()


def test_f01_turning_the_second_factor_off_counts_a_wrong_password(make_user: Any, totp: Any) -> None:
    user = make_user("alice")
    browser = Browser("alice")  # no second factor yet: a plain password session
    device = totp.device(user)
    for _ in range(10):
        response = browser.post("/two-factor/disable/", {"password": "guess", "otp_token": totp.code(device)})
        assert response.status_code == 400
    assert throttle.locked_until(username="alice") is not None
    assert TOTPDevice.objects.filter(user=user).exists()


# --- F2 ---------------------------------------------------------------------------------------------


def _cookie_session_from(rpc: Any, login: dict[str, Any]) -> Client:
    """A browser holding the cookie of a JSON-RPC login (``login_ex`` with any mechanism)."""
    client = rpc()
    assert client.call("auth.login_ex", login)["response_type"] == "SUCCESS"
    browser = Client(enforce_csrf_checks=False, REMOTE_ADDR="127.0.0.1")
    browser.cookies = client.http.cookies
    return browser


def test_f02_api_key_session_cannot_enrol_a_second_factor(rpc: Any, make_user: Any) -> None:
    alice = make_user("alice")
    _, plaintext = api_key_create(user=alice, name="script")
    browser = _cookie_session_from(
        rpc, {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": plaintext}
    )
    assert UserSession.objects.active().get().credentials == Credentials.API_KEY
    page = browser.get("/two-factor/")
    assert page.status_code == 200
    assert "was not signed in with your password" in page.content.decode()
    assert browser.post("/two-factor/", {"stepup-password": PASSWORD}).status_code == 403
    assert browser.get("/two-factor/enrol/").status_code == 403
    assert browser.post("/two-factor/enrol/", {"otp_token": "123456"}).status_code == 403
    assert not TOTPDevice.objects.exists()
    # The owner's next password login is still a plain one: nobody else holds a seed for it.
    assert rpc().login()["response_type"] == "SUCCESS"


@pytest.mark.parametrize("kind", ["token", "onetime_password"])
def test_f02_token_and_onetime_sessions_cannot_change_the_second_factor(
    rpc: Any, make_user: Any, totp: Any, kind: str
) -> None:
    alice = make_user("alice")
    if kind == "token":
        owner = rpc()
        owner.login()
        login = {"mechanism": "TOKEN_PLAIN", "token": owner.call("auth.generate_token")}
    else:
        login = {
            "mechanism": "PASSWORD_PLAIN",
            "username": "alice",
            "password": onetime_password_issue(user=alice, actor=None),
        }
    browser = _cookie_session_from(rpc, login)
    if kind == "onetime_password":
        # A one-time-password session must choose a password first; it stays a one-time session.
        response = browser.post("/password/", {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
        assert response.status_code == 302
    assert (
        browser.post(
            "/two-factor/", {"stepup-password": PASSWORD if kind == "token" else NEW_PASSWORD}
        ).status_code
        == 403
    )
    device = totp.device(alice)
    response = browser.post("/two-factor/disable/", {"password": PASSWORD, "otp_token": totp.code(device)})
    assert response.status_code == 403
    assert TOTPDevice.objects.filter(pk=device.pk).exists()


def test_f02_enrolment_after_the_window_needs_the_password_again(make_user: Any) -> None:
    make_user("alice")
    browser = Browser("alice")
    _age(browser)
    # Without the password: nothing starts, and the secret page is not shown.
    response = browser.post("/two-factor/")
    assert response.status_code == 400
    assert not TOTPDevice.objects.exists()
    assert browser.get("/two-factor/enrol/")["Location"] == "/two-factor/"
    # A wrong one: refused, counted, audited, nothing created.
    response = browser.post("/two-factor/", {"stepup-password": "guess"})
    assert response.status_code == 400
    assert not TOTPDevice.objects.exists()
    assert AuditRecord.objects.filter(success=False, event_data__method="two_factor.start").exists()
    assert throttle.locked_until(username="alice") is None  # one failure so far
    # The right one: the enrolment starts and the secret is shown.
    response = browser.post("/two-factor/", {"stepup-password": PASSWORD})
    assert response["Location"] == "/two-factor/enrol/"
    assert "data-secret" in browser.get("/two-factor/enrol/").content.decode()
    assert _session(browser).reauthenticated_at is not None


def test_f02_enrol_page_hides_the_secret_once_the_window_has_passed(make_user: Any) -> None:
    make_user("alice")
    browser = Browser("alice")
    assert (
        browser.post("/two-factor/")["Location"] == "/two-factor/enrol/"
    )  # fresh sign-in: within the window
    _age(browser)
    response = browser.get("/two-factor/enrol/")
    assert response.status_code == 302
    assert browser.post("/two-factor/enrol/", {"otp_token": "123456"}).status_code == 302
    assert not TOTPDevice.objects.filter(confirmed=True).exists()


def test_f02_second_factor_off_needs_password_and_current_code(make_user: Any, totp: Any) -> None:
    user = make_user("alice")
    browser = Browser("alice")
    device = totp.device(user)
    assert browser.post("/two-factor/disable/", {"password": PASSWORD}).status_code == 400
    wrong_code = totp.wrong_codes(device)[0]
    response = browser.post("/two-factor/disable/", {"password": PASSWORD, "otp_token": wrong_code})
    assert response.status_code == 400
    assert TOTPDevice.objects.filter(pk=device.pk).exists()
    refused = AuditRecord.objects.filter(success=False, event_data__method="two_factor.disable")
    assert refused.exists()
    totp.reset_throttle(device)  # django-otp's own back-off after the wrong code
    response = browser.post("/two-factor/disable/", {"password": PASSWORD, "otp_token": totp.code(device)})
    assert response["Location"] == "/sign-in/"
    assert not TOTPDevice.objects.exists()


def test_f02_browser_key_creation_needs_a_recent_password(make_user: Any) -> None:
    make_user("alice")
    browser = Browser("alice")
    _age(browser)
    response = browser.post("/api-keys/", {"name": "laptop"})
    assert response.status_code == 400
    assert 'id="id_stepup-password_error"' in response.content.decode()
    response = browser.post("/api-keys/", {"name": "laptop", "stepup-password": "guess"})
    assert response.status_code == 400
    assert not ApiKey.objects.exists()
    assert AuditRecord.objects.filter(success=False, event_data__method="api_key.create").exists()
    response = browser.post("/api-keys/", {"name": "laptop", "stepup-password": PASSWORD})
    assert response.status_code == 200
    assert ApiKey.objects.get().name == "laptop"
    # Within the window the next key needs no password.
    assert browser.post("/api-keys/", {"name": "desktop"}).status_code == 200
    assert ApiKey.objects.count() == 2


def test_f02_browser_key_creation_asks_for_the_code_too(make_user: Any, totp: Any) -> None:
    user = make_user("alice")
    browser = Browser("alice")
    device = totp.device(user)
    _age(browser)
    response = browser.post("/api-keys/", {"name": "laptop", "stepup-password": PASSWORD})
    assert response.status_code == 400
    assert not ApiKey.objects.exists()
    response = browser.post(
        "/api-keys/", {"name": "laptop", "stepup-password": PASSWORD, "stepup-otp_token": totp.code(device)}
    )
    assert response.status_code == 200
    assert ApiKey.objects.get().name == "laptop"


def test_f02_key_reset_in_the_browser_needs_a_recent_password(make_user: Any) -> None:
    alice = make_user("alice")
    key, _ = api_key_create(user=alice, name="laptop")
    old_hash = key.key_hash
    browser = Browser("alice")
    _age(browser)
    page = browser.post(f"/api-keys/{key.pk}/reset/")  # the list's button: the confirmation page
    assert page.status_code == 200
    assert "stepup-password" in page.content.decode()
    assert (
        browser.post(f"/api-keys/{key.pk}/reset/", {"confirm": "1", "stepup-password": "x"}).status_code
        == 400
    )
    key.refresh_from_db()
    assert key.key_hash == old_hash
    response = browser.post(f"/api-keys/{key.pk}/reset/", {"confirm": "1", "stepup-password": PASSWORD})
    assert response.status_code == 200
    key.refresh_from_db()
    assert key.key_hash != old_hash


def test_f02_step_up_is_per_session(make_user: Any) -> None:
    make_user("alice")
    first, second = Browser("alice"), Browser("alice")
    _age(first)
    _age(second)
    assert first.post("/two-factor/", {"stepup-password": PASSWORD}).status_code == 302
    assert second.post("/api-keys/", {"name": "laptop"}).status_code == 400
    assert not ApiKey.objects.exists()


def test_f02_an_administrators_reset_of_a_second_factor_is_audited(make_user: Any, totp: Any) -> None:
    alice = make_user("alice")
    device = totp.device(alice)
    make_user("admin", superuser=True)
    admin = Browser("admin")
    url = f"/admin/otp_totp/totpdevice/{device.pk}/delete/"
    assert admin.get(url).status_code == 200
    response = admin.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not TOTPDevice.objects.exists()
    record = AuditRecord.objects.get(event_data__method="two_factor.reset")
    assert (record.username, record.event_data["target_username"]) == ("admin", "alice")


# --- F12 --------------------------------------------------------------------------------------------


def _flags(morsel: Any) -> tuple[Any, ...]:
    return (
        morsel.key,
        bool(morsel["secure"]),
        bool(morsel["httponly"]),
        morsel["samesite"],
        morsel["path"],
        morsel["domain"],
    )


def test_f12_every_login_state_cookie_has_the_same_flags(rpc: Any, make_user: Any, totp: Any) -> None:
    device = totp.device(make_user("alice"))
    expected = ("__Host-otp_pending", True, True, "Lax", "/", "")
    # JSON-RPC over HTTP.
    client = rpc()
    assert (
        client.call(
            "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}
        )["response_type"]
        == "OTP_REQUIRED"
    )
    assert _flags(client.last.cookies["__Host-otp_pending"]) == expected
    # REST.
    rest = Client(REMOTE_ADDR="127.0.0.1")
    response = rest.post(
        "/api/v2.0/auth/login",
        {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD},
        content_type="application/json",
    )
    assert response.json()["response_type"] == "OTP_REQUIRED", response.content
    assert _flags(response.cookies["__Host-otp_pending"]) == expected
    # The sign-in page (it lacked Secure).
    browser = Client(REMOTE_ADDR="127.0.0.1")
    browser.get("/sign-in/")
    response = browser.post("/sign-in/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    assert _flags(response.cookies["__Host-otp_pending"]) == expected
    # The session cookie the second step sets has the same flags under its own name.
    response = browser.post("/sign-in/otp/", {"otp_token": totp.code(device)})
    assert _flags(response.cookies["__Host-sid"]) == ("__Host-sid", *expected[1:])
    assert response.cookies["__Host-otp_pending"].value == ""  # and the pending one is dropped
