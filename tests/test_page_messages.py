"""Issue 17 item 7: every unclear case says what happened, inside the normal layout.

- a 404 or 403 page keeps the navigation of the signed-in user (Sessions, Audit for those roles);
- a signed-in user who is not staff and opens ``/admin/`` is told why, not shown a sign-in form;
- on two-factor setup, the right code sent right after a wrong one is refused by django-otp's
  throttle: the page says to wait, not "check the time on your device".
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import pytest
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.auth.roles import Role
from sessions_app.models import AuditRecord
from tests.test_views import Browser, _field_errors


@pytest.fixture
def signed_in(make_user: Any) -> Callable[..., Browser]:
    def make(username: str, *, roles: Any = (), superuser: bool = False) -> Browser:
        make_user(username, roles=roles, superuser=superuser)
        return Browser(username)

    return make


def _nav(response: Any) -> str:
    match = re.search(r'<nav aria-label="Main">.*?</nav>', response.content.decode(), re.S)
    return match.group(0) if match else ""


def test_not_found_page_keeps_the_navigation(signed_in: Any) -> None:
    op = signed_in("op", roles=[Role.AUTH_SESSIONS_READ, Role.AUTH_SESSIONS_WRITE, Role.AUDIT_READ])
    response = op.get("/sessions/no-such-session/terminate/")
    assert response.status_code == 404
    nav = _nav(response)
    assert 'href="/sessions/"' in nav
    assert 'href="/audit/"' in nav
    assert "Not found" in response.content.decode()
    # An unknown address (Django's own 404 handler, outside every page view) keeps it too.
    response = op.get("/no/such/page/")
    assert response.status_code == 404
    assert 'href="/audit/"' in _nav(response)


def test_forbidden_page_keeps_the_navigation_the_user_has(signed_in: Any) -> None:
    reader = signed_in("reader", roles=[Role.AUTH_SESSIONS_READ])
    response = reader.get("/audit/")
    assert response.status_code == 403
    nav = _nav(response)
    assert 'href="/sessions/"' in nav
    assert 'href="/audit/"' not in nav  # the role it lacks is not offered
    assert "AUDIT_READ" in response.content.decode()


def test_signed_in_non_staff_at_the_admin_is_told_why(signed_in: Any) -> None:
    alice = signed_in("alice")
    response = alice.http.get("/admin/", follow=True)
    assert response.status_code == 403
    body = response.content.decode()
    assert "The admin site is for staff accounts; alice is not one." in body
    assert 'name="password"' not in body  # no sign-in form for someone already signed in
    assert 'href="/me/sessions/"' in _nav(response)


def test_staff_at_the_admin_sign_in_page_goes_to_the_admin(signed_in: Any) -> None:
    admin = signed_in("admin", superuser=True)
    response = admin.get("/admin/login/?next=/admin/sessions_app/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/sessions_app/"
    response = admin.get("/admin/login/?next=https://evil.example/")
    assert response["Location"] == "/admin/"


def test_totp_setup_says_wait_when_the_throttle_refuses_a_right_code(signed_in: Any, settings: Any) -> None:
    settings.OTP_TOTP_THROTTLE_FACTOR = 40  # one failure holds the device 40 s: no race with the clock
    alice = signed_in("alice")
    assert alice.post("/two-factor/")["Location"] == "/two-factor/enrol/"
    page = alice.get("/two-factor/enrol/").content.decode()
    secret = re.search(r'data-secret="([A-Z2-7]+)"', page).group(1)  # type: ignore[union-attr]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    right = f"{TOTP(key).token():06d}"
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    refused = alice.post("/two-factor/enrol/", {"otp_token": wrong})
    assert "That code is not valid. Check the time on your device" in _field_errors(refused, "otp_token")
    throttled = alice.post("/two-factor/enrol/", {"otp_token": right})
    assert throttled.status_code == 400
    message = _field_errors(throttled, "otp_token")
    assert re.search(r"Too many wrong codes in a row: wait (39|40) seconds, then enter the code", message)
    assert "Check the time" not in message
    assert not TOTPDevice.objects.get(user__username="alice").confirmed
    record = AuditRecord.objects.filter(event_data__method="two_factor.confirm").order_by("-pk").first()
    assert record is not None
    assert record.success is False
    assert record.event_data.get("throttled") is True
