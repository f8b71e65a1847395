"""The email of a new sign-in and its "This wasn't me" link (issue 16 acceptance: in the test outbox
with the right device and place; the link works once, and is refused after use, after 7 days and
when tampered with)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.core import mail, signing
from django.core.mail.backends.base import BaseEmailBackend
from django.test import Client

from sessions_app.models import (
    AuditEvent,
    AuditRecord,
    EndReason,
    KnownDevice,
    PasswordChangeDemand,
    SignInNotice,
    UserSession,
)
from sessions_app.services.notices import LINK_SALT, link_token, notice_email
from tests.conftest import PASSWORD, RPC
from tests.notices.conftest import AWAY, DESKTOP, HOME, IPHONE

pytestmark = pytest.mark.django_db

LINK = re.compile(r"http://testserver(/sign-in-notices/[^/\s\"]+/)")


@pytest.fixture
def alice(make_user: Callable[..., Any]) -> Any:
    user = make_user("alice")
    user.email = "alice@example.com"
    user.save(update_fields=["email"])
    return user


def _phone_signs_in(rpc_login: Any) -> tuple[RPC, RPC]:
    """Alice's desktop (her first login), then her phone from another network: one notice."""
    desktop = rpc_login("alice", ua=DESKTOP, address=HOME)
    phone = rpc_login("alice", ua=IPHONE, address=AWAY)
    return desktop, phone


def _link(message: Any) -> str:
    found = LINK.search(message.body)
    assert found, message.body
    return found[1]


def _session_of(client: RPC) -> UserSession:
    public_id = client.call("auth.my_sessions", [["current", "=", True]])[0]["id"]
    return UserSession.objects.get(public_id=public_id)


# --- the email ------------------------------------------------------------------------------------


def test_the_email_names_device_place_address_and_time(alice: Any, rpc_login: Any, berlin: Any) -> None:
    rpc_login("alice", ua=DESKTOP, address=HOME)
    assert mail.outbox == []
    KnownDevice.objects.all().update(network="country:FR")  # the desktop was in France
    rpc_login("alice", ua=IPHONE, address=AWAY)
    (message,) = mail.outbox
    notice = SignInNotice.objects.get()
    assert message.to == ["alice@example.com"]
    assert message.subject == "New sign-in to your account"
    when = notice.created_at.strftime("%H:%M")
    for text in (message.body, message.alternatives[0][0]):
        assert "Safari on iOS" in text
        assert "Berlin, Germany" in text
        assert AWAY in text
        assert when in text
        assert "UTC" in text
        assert "/sign-in-notices/" in text
    assert message.alternatives[0][1] == "text/html"
    assert notice.emailed_at is not None
    assert notice.network == "country:DE"


def test_the_email_escapes_what_the_client_chose(alice: Any) -> None:
    notice = SignInNotice.objects.create(
        user=alice, signature="x", network="n", device_label="<script>alert(1)</script>", place="<b>Town</b>"
    )
    message = notice_email(notice=notice, link="https://sessions.example/sign-in-notices/t/")
    html = message.alternatives[0][0]
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>Town</b>" not in html
    assert "&lt;b&gt;Town&lt;/b&gt;" in html
    assert "<script>alert(1)</script>" in message.body  # plain text: shown as sent, nothing to escape


def test_no_email_without_an_address(make_user: Callable[..., Any], rpc_login: Any) -> None:
    make_user("alice")
    _phone_signs_in(rpc_login)
    assert SignInNotice.objects.count() == 1
    assert mail.outbox == []


class FailingBackend(BaseEmailBackend):
    def send_messages(self, messages: Any) -> int:
        raise OSError("mail server down")


def test_a_failing_mail_server_never_fails_the_login(
    alice: Any, rpc_login: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.EMAIL_BACKEND = f"{__name__}.FailingBackend"
    with caplog.at_level(logging.WARNING, logger="sessions_app.services.notices"):
        _phone_signs_in(rpc_login)  # asserts SUCCESS
    notice = SignInNotice.objects.get()
    assert notice.emailed_at is None
    assert f"notice {notice.pk}: the email was not sent (OSError)" in caplog.text
    assert "sign-in-notices" not in caplog.text
    assert "alice@example.com" not in caplog.text


def test_the_link_uses_the_base_url_setting(alice: Any, rpc_login: Any, settings: Any) -> None:
    settings.SESSIONS_BASE_URL = "https://sessions.example.org"
    _phone_signs_in(rpc_login)
    assert "https://sessions.example.org/sign-in-notices/" in mail.outbox[0].body


def test_without_a_trusted_host_the_email_has_no_link(alice: Any, rpc_login: Any, settings: Any) -> None:
    """A wildcard ALLOWED_HOSTS lets any Host through: the link would go where the sender said."""
    settings.ALLOWED_HOSTS = ["*"]
    _phone_signs_in(rpc_login)
    (message,) = mail.outbox
    assert "/sign-in-notices/" not in message.body
    assert "/sign-in-notices/" not in message.alternatives[0][0]
    assert "No — end it" in message.body


# --- the link ----------------------------------------------------------------------------------------


def test_the_link_ends_that_session_and_the_same_device_s_only_once(alice: Any, rpc_login: Any) -> None:
    desktop, phone = _phone_signs_in(rpc_login)
    phone_session = _session_of(phone)
    second_phone = _pk(rpc_login("alice", ua=IPHONE, address="192.0.2.9"))  # same device
    assert SignInNotice.objects.count() == 2  # ...but a new network is one
    (first, _) = mail.outbox
    link = _link(first)
    anyone = Client(enforce_csrf_checks=True, REMOTE_ADDR="192.0.2.50")

    page = anyone.get(link)
    assert page.status_code == 200
    assert b"Safari on iOS" in page.content
    assert AWAY.encode() in page.content
    assert UserSession.objects.filter(ended_at__isnull=True).count() == 3  # GET changes nothing

    token = anyone.cookies["csrftoken"].value
    done = anyone.post(link, {"confirm": "1", "csrfmiddlewaretoken": token})
    assert done.status_code == 200
    assert b"have ended" in done.content
    ended = UserSession.objects.get(pk=phone_session.pk)
    assert (ended.end_reason, ended.ended_by) == (EndReason.TERMINATED, "alice")
    assert UserSession.objects.get(pk=second_phone).ended_at is not None  # same signature
    assert desktop.call("auth.me")["pw_name"] == "alice"  # another device: untouched
    assert phone.error("auth.me")  # the phone is signed out

    record = AuditRecord.objects.get(event_data__method="sign_in_notice.deny")
    assert record.username == "alice"
    assert record.event_data["via"] == "email"
    assert record.event_data["ended"] == 2
    assert record.address.startswith("192.0.2.50")
    assert PasswordChangeDemand.objects.filter(user=alice).exists()
    notice = SignInNotice.objects.get(pk=SignInNotice.objects.order_by("pk").first().pk)  # type: ignore[union-attr]
    assert notice.answer == "denied"
    assert notice.link_used_at is not None

    again = anyone.get(link)
    assert again.status_code == 410
    assert b"already used" in again.content
    assert anyone.post(link, {"confirm": "1", "csrfmiddlewaretoken": token}).status_code == 410
    assert AuditRecord.objects.filter(event_data__method="sign_in_notice.deny").count() == 1


def _pk(client: RPC) -> int:
    return _session_of(client).pk


def test_the_link_page_shows_nothing_beyond_the_email(alice: Any, rpc_login: Any) -> None:
    _, phone = _phone_signs_in(rpc_login)
    page = Client().get(_link(mail.outbox[0])).content.decode()
    assert "alice" not in page
    assert _session_of(phone).public_id not in page
    assert IPHONE not in page  # the device in words, as the email said, not the raw header


def test_the_link_expires_after_seven_days(alice: Any, rpc_login: Any) -> None:
    _phone_signs_in(rpc_login)
    notice = SignInNotice.objects.get()
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 7 * 86400 - 60):
        old = link_token(notice)
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 7 * 86400 + 60):
        young = link_token(notice)
    response = Client().get(f"/sign-in-notices/{old}/")
    assert response.status_code == 410
    assert b"expired" in response.content
    assert Client().get(f"/sign-in-notices/{young}/").status_code == 200
    anyone = Client()
    anyone.get(f"/sign-in-notices/{young}/")
    assert anyone.post(f"/sign-in-notices/{old}/", {"confirm": "1"}).status_code == 410
    assert UserSession.objects.filter(ended_at__isnull=False).count() == 0


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature
        lambda t: "9" + t,  # another notice id under the same signature
        lambda t: signing.TimestampSigner(salt="another-salt").sign(t.split(":")[0]),  # wrong salt
        lambda t: signing.TimestampSigner(salt=LINK_SALT).sign("99999"),  # no such notice
        lambda t: "garbage",
    ],
)
def test_a_tampered_link_is_refused(alice: Any, rpc_login: Any, tamper: Callable[[str], str]) -> None:
    _phone_signs_in(rpc_login)
    token = _link(mail.outbox[0]).split("/")[2]
    bad = tamper(token)
    for response in (
        Client().get(f"/sign-in-notices/{bad}/"),
        Client().post(f"/sign-in-notices/{bad}/", {"confirm": "1"}),
    ):
        assert response.status_code == 400
        assert b"not valid" in response.content
    assert UserSession.objects.filter(ended_at__isnull=False).count() == 0
    assert not PasswordChangeDemand.objects.exists()


def test_the_link_needs_the_csrf_token_to_act(alice: Any, rpc_login: Any) -> None:
    _phone_signs_in(rpc_login)
    link = _link(mail.outbox[0])
    strict = Client(enforce_csrf_checks=True)
    strict.get(link)
    assert strict.post(link, {"confirm": "1"}).status_code == 403
    assert UserSession.objects.filter(ended_at__isnull=False).count() == 0


def test_the_password_change_is_demanded_then_cleared(alice: Any, rpc_login: Any, commit: Any) -> None:
    _phone_signs_in(rpc_login)
    link = _link(mail.outbox[0])
    anyone = Client()
    anyone.get(link)
    anyone.post(link, {"confirm": "1"})

    again = rpc_login("alice", ua=DESKTOP, address=HOME)
    assert _session_of_forced(again)
    assert "A new password must be set first" in again.error("auth.my_sessions")["data"]["reason"]
    # The browser sign-in goes to the password page, like a one-time-password session.
    page = Client(REMOTE_ADDR=HOME, HTTP_USER_AGENT=DESKTOP)
    response = commit(page.post, "/sign-in/", {"username": "alice", "password": PASSWORD, "next": "/"})
    assert response["Location"] == "/password/"
    new_password = "an entirely new passphrase 42"
    response = page.post("/password/", {"new_password1": new_password, "new_password2": new_password})
    assert response.status_code == 302, response.content[:400]
    assert not PasswordChangeDemand.objects.exists()
    fresh = rpc_login_with(new_password)
    assert not UserSession.objects.get(public_id=fresh).password_change_required


def _session_of_forced(client: RPC) -> bool:
    return bool(UserSession.objects.order_by("-pk").first().password_change_required)  # type: ignore[union-attr]


def rpc_login_with(password: str) -> str:
    client = RPC(remote_addr=HOME, HTTP_USER_AGENT=DESKTOP)
    assert client.login("alice", password)["response_type"] == "SUCCESS"
    return UserSession.objects.order_by("-pk").first().public_id  # type: ignore[union-attr]


def test_a_password_change_anywhere_meets_the_demand(alice: Any) -> None:
    PasswordChangeDemand.objects.create(user=alice, reason="test")
    alice.set_password("changed in the admin 123")
    alice.save()
    assert not PasswordChangeDemand.objects.exists()


def test_the_link_still_works_after_a_yes_in_a_banner(alice: Any, rpc_login: Any) -> None:
    """Whoever holds another session could have said "Yes": the owner's link still acts."""
    _, phone = _phone_signs_in(rpc_login)
    SignInNotice.objects.update(answered_at=AuditRecord.objects.first().timestamp, answer="confirmed")  # type: ignore[union-attr]
    link = _link(mail.outbox[0])
    anyone = Client()
    anyone.get(link)
    assert anyone.post(link, {"confirm": "1"}).status_code == 200
    assert _session_of_ended(phone)
    assert SignInNotice.objects.get().answer == "denied"


def _session_of_ended(client: RPC) -> bool:
    return UserSession.objects.filter(ended_at__isnull=False, device_label="Safari on iOS").exists()


def test_the_new_sign_in_audit_record_is_written_once(alice: Any, rpc_login: Any) -> None:
    _phone_signs_in(rpc_login)
    assert AuditRecord.objects.filter(event=AuditEvent.NEW_SIGN_IN).count() == 1
