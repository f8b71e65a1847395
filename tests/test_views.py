"""The sign-in pages: the same login policy as the API (and the Django admin goes through them)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.models import AuditRecord, Credentials, UserSession
from tests.conftest import PASSWORD


@pytest.fixture
def browser(db: Any) -> Client:
    return Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")


def _csrf(browser: Client, url: str = "/sign-in/") -> str:
    browser.get(url)
    return browser.cookies["csrftoken"].value


def test_sign_in_creates_a_password_session_and_opens_the_admin(browser: Client, make_user: Any) -> None:
    make_user("admin", superuser=True)
    token = _csrf(browser)
    response = browser.post(
        "/sign-in/",
        {"username": "admin", "password": PASSWORD, "next": "/admin/", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert UserSession.objects.get().credentials == Credentials.LOGIN_PASSWORD
    assert browser.get("/admin/").status_code == 200


def test_wrong_password_shows_the_generic_error(browser: Client, make_user: Any) -> None:
    make_user("admin")
    token = _csrf(browser)
    for username in ("admin", "nobody"):
        response = browser.post(
            "/sign-in/", {"username": username, "password": "nope", "csrfmiddlewaretoken": token}
        )
        assert response.status_code == 401
        assert b"The username or password is not correct" in response.content
    assert not UserSession.objects.exists()
    assert AuditRecord.objects.filter(success=False).count() == 2


def test_sign_in_without_csrf_token_is_refused(browser: Client, make_user: Any) -> None:
    make_user("admin")
    assert browser.post("/sign-in/", {"username": "admin", "password": PASSWORD}).status_code == 403
    assert not UserSession.objects.exists()


def test_admin_login_goes_through_the_registry_sign_in(browser: Client) -> None:
    response = browser.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/sign-in/")


def test_totp_sign_in(browser: Client, make_user: Any) -> None:
    user = make_user("alice")
    device = TOTPDevice.objects.create(user=user, confirmed=True)
    token = _csrf(browser)
    response = browser.post(
        "/sign-in/", {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert b"Two-factor authentication" in response.content
    assert not UserSession.objects.exists()
    code = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()
    response = browser.post(
        "/sign-in/otp/", {"otp_token": f"{code:06d}", "csrfmiddlewaretoken": token, "next": "/"}
    )
    assert response.status_code == 302
    assert UserSession.objects.get().credentials == Credentials.LOGIN_TWOFACTOR


def test_sign_out_ends_the_session(browser: Client, make_user: Any) -> None:
    make_user("alice")
    token = _csrf(browser)
    browser.post("/sign-in/", {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token})
    response = browser.post("/sign-out/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert UserSession.objects.get().end_reason == "LOGOUT"
    assert "Clear-Site-Data" in response
