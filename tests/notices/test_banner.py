"""The banner of new sign-ins in the user's other sessions (issue 16): "New sign-in from Safari on iOS
… — was this you? [Yes, it was me] [No — end it]", answered once per notice."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from sessions_app.models import (
    AuditRecord,
    EndReason,
    KnownDevice,
    PasswordChangeDemand,
    SessionEvent,
    SignInNotice,
    UserSession,
)
from tests.notices.conftest import AWAY, DESKTOP, HOME, IPHONE, Browser

pytestmark = pytest.mark.django_db

BANNER = re.compile(r'<section id="sign-in-notices".*?</section>', re.S)


def _banner(response: Any) -> str:
    found = BANNER.search(response.content.decode())
    assert found, "no banner section"
    return found[0]


@pytest.fixture
def two_devices(make_user: Callable[..., Any], browser: Callable[..., Browser]) -> tuple[Browser, Browser]:
    """Alice signs in on her desktop (first login), then on an iPhone elsewhere: one notice."""
    make_user("alice")
    desktop = browser("alice", ua=DESKTOP, address=HOME)
    phone = browser("alice", ua=IPHONE, address=AWAY)
    assert SignInNotice.objects.count() == 1
    return desktop, phone


def test_the_banner_shows_in_other_sessions_only(two_devices: tuple[Browser, Browser], browser: Any) -> None:
    desktop, phone = two_devices
    shown = _banner(desktop.get("/me/sessions/"))
    assert "New sign-in from <strong>Safari on iOS</strong>" in shown
    assert AWAY in shown
    assert "was this you?" in shown
    assert "Yes, it was me" in shown
    assert "No — end it" in shown
    notice = SignInNotice.objects.get()
    assert timezone.localtime(notice.created_at).strftime("%H:%M") in shown
    assert "data-notice-id" not in _banner(phone.get("/me/sessions/"))  # the session it is about
    second_phone = browser("alice", ua=IPHONE, address=AWAY)  # a known pair now: no new notice
    assert "data-notice-id" not in _banner(second_phone.get("/me/sessions/"))  # same device
    assert SignInNotice.objects.count() == 1


def test_the_banner_is_on_every_page_and_has_no_inline_code(two_devices: tuple[Browser, Browser]) -> None:
    desktop, _ = two_devices
    for path in ("/me/sessions/", "/api-keys/", "/two-factor/", "/me/devices/"):
        shown = _banner(desktop.get(path))
        assert "Safari on iOS" in shown
        assert "style=" not in shown
        assert "<script>" not in shown
        assert "onclick" not in shown
    page = desktop.get("/me/sessions/").content.decode()
    assert '<script src="/static/sessions_app/notices.js" defer></script>' in page


def test_the_banner_partial_alone(two_devices: tuple[Browser, Browser]) -> None:
    desktop, _ = two_devices
    response = desktop.get("/me/notices/?next=/api-keys/")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert "Safari on iOS" in response.content.decode()
    assert 'name="next" value="/api-keys/"' in response.content.decode()
    foreign = desktop.get("/me/notices/?next=https://evil.example/")
    assert "evil.example" not in foreign.content.decode()


def test_the_banner_escapes_what_the_client_chose(two_devices: tuple[Browser, Browser]) -> None:
    desktop, _ = two_devices
    SignInNotice.objects.update(device_label="<script>alert(1)</script>", place="<i>x</i>")
    shown = _banner(desktop.get("/me/sessions/"))
    assert "<script>alert(1)" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "<i>x</i>" not in shown


def test_old_and_answered_notices_are_not_shown(two_devices: tuple[Browser, Browser]) -> None:
    desktop, _ = two_devices
    SignInNotice.objects.update(created_at=timezone.now() - timezone.timedelta(days=8))
    assert "data-notice-id" not in _banner(desktop.get("/me/sessions/"))


def test_yes_confirms_the_device_once(two_devices: tuple[Browser, Browser]) -> None:
    desktop, phone = two_devices
    notice = SignInNotice.objects.get()
    response = desktop.post(f"/me/notices/{notice.pk}/confirm/", {"next": "/api-keys/"})
    assert response.status_code == 302
    assert response["Location"] == "/api-keys/"
    notice.refresh_from_db()
    assert notice.answer == "confirmed"
    assert notice.answered_at is not None
    assert KnownDevice.objects.get(signature="Safari|iOS|iPhone").confirmed
    assert "data-notice-id" not in _banner(desktop.get("/me/sessions/"))
    assert UserSession.objects.get(pk=phone.session.pk).ended_at is None  # type: ignore[union-attr]
    again = desktop.post(f"/me/notices/{notice.pk}/confirm/")
    assert again.status_code == 302
    assert "already answered" in desktop.get("/me/sessions/").content.decode()
    assert desktop.post(f"/me/notices/{notice.pk}/deny/").status_code == 302  # answered: no effect
    assert AuditRecord.objects.filter(event_data__method="sign_in_notice.confirm").count() == 1
    assert not AuditRecord.objects.filter(event_data__method="sign_in_notice.deny").exists()
    assert UserSession.objects.get(pk=phone.session.pk).ended_at is None  # type: ignore[union-attr]
    assert SessionEvent.objects.filter(kind=SessionEvent.Kind.NOTICE).count() == 2  # created, answered


def test_no_ends_the_session_and_demands_a_new_password_once(two_devices: tuple[Browser, Browser]) -> None:
    desktop, phone = two_devices
    notice = SignInNotice.objects.get()
    response = desktop.post(f"/me/notices/{notice.pk}/deny/", {"next": "/me/sessions/"})
    assert response.status_code == 302
    assert response["Location"] == "/password/"
    ended = UserSession.objects.get(pk=phone.session.pk)  # type: ignore[union-attr]
    assert (ended.end_reason, ended.ended_by) == (EndReason.TERMINATED, "alice")
    assert UserSession.objects.get(pk=desktop.session.pk).ended_at is None  # type: ignore[union-attr]
    assert PasswordChangeDemand.objects.filter(user__username="alice").exists()
    assert not KnownDevice.objects.filter(signature="Safari|iOS|iPhone").exists()  # forgotten
    page = desktop.get("/password/").content.decode()
    assert "choose a new one now" in page
    # The phone's next page asks it to sign in.
    next_page = phone.get("/me/sessions/")
    assert next_page.status_code == 302
    assert next_page["Location"].startswith("/sign-in/")
    again = desktop.post(f"/me/notices/{notice.pk}/deny/")
    assert again.status_code == 302
    assert again["Location"] != "/password/"
    record = AuditRecord.objects.get(event_data__method="sign_in_notice.deny")
    assert record.event_data["via"] == "banner"
    assert record.session == desktop.session.public_id


def test_answers_need_the_csrf_token_and_post(two_devices: tuple[Browser, Browser]) -> None:
    desktop, phone = two_devices
    notice = SignInNotice.objects.get()
    assert desktop.http.post(f"/me/notices/{notice.pk}/deny/").status_code == 403
    assert desktop.get(f"/me/notices/{notice.pk}/deny/").status_code == 405
    assert UserSession.objects.get(pk=phone.session.pk).ended_at is None  # type: ignore[union-attr]


def test_another_user_s_notice_is_a_404(
    two_devices: tuple[Browser, Browser], make_user: Callable[..., Any], browser: Any
) -> None:
    _, phone = two_devices
    make_user("bob")
    bob = browser("bob", ua=DESKTOP, address=HOME)
    notice = SignInNotice.objects.get()
    assert bob.post(f"/me/notices/{notice.pk}/deny/").status_code == 404
    assert bob.post(f"/me/notices/{notice.pk}/confirm/").status_code == 404
    assert UserSession.objects.get(pk=phone.session.pk).ended_at is None  # type: ignore[union-attr]
    assert SignInNotice.objects.get().answered_at is None


def test_the_session_a_notice_is_about_cannot_answer_it(two_devices: tuple[Browser, Browser]) -> None:
    _, phone = two_devices
    notice = SignInNotice.objects.get()
    phone.post(f"/me/notices/{notice.pk}/confirm/")
    assert SignInNotice.objects.get().answered_at is None
    assert not KnownDevice.objects.filter(confirmed=True).exists()
