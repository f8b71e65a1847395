"""Which logins are new sign-ins (issue 16, item 4): a device signature or a network the user has not
used within SESSIONS_NOTICE_DAYS; never the first login, never a confirmed pair."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.models import (
    AuditEvent,
    AuditRecord,
    Credentials,
    KnownDevice,
    SessionEvent,
    SignInNotice,
    UserSession,
)
from tests.conftest import PASSWORD, RPC
from tests.notices.conftest import AWAY, DESKTOP, HOME, IPHONE

pytestmark = pytest.mark.django_db


def _notices() -> list[SignInNotice]:
    return list(SignInNotice.objects.order_by("pk"))


def test_the_first_login_is_remembered_not_noticed(make_user: Callable[..., Any], rpc_login: Any) -> None:
    user = make_user("alice")
    user.email = "alice@example.com"
    user.save(update_fields=["email"])
    rpc_login("alice", ua=DESKTOP, address=HOME)
    assert _notices() == []
    assert not AuditRecord.objects.filter(event=AuditEvent.NEW_SIGN_IN).exists()
    assert mail.outbox == []
    device = KnownDevice.objects.get()
    assert (device.signature, device.network, device.label) == (
        "Chrome|Linux|",
        "203.0.113.0/24",
        "Chrome on Linux",
    )
    assert not device.confirmed


def test_the_same_device_and_network_again_is_not_a_notice(
    make_user: Callable[..., Any], rpc_login: Any
) -> None:
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    before = KnownDevice.objects.get().last_seen_at
    rpc_login("alice", ua=DESKTOP, address="203.0.113.77")  # the same /24
    assert _notices() == []
    device = KnownDevice.objects.get()
    assert device.last_seen_at > before


def test_a_new_device_is_a_notice_with_its_audit_record_and_event(
    make_user: Callable[..., Any], rpc_login: Any
) -> None:
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    rpc_login("alice", ua=IPHONE, address=HOME)
    (notice,) = _notices()
    session = UserSession.objects.order_by("-pk").first()
    assert session is not None
    assert notice.session_id == session.pk
    assert (notice.device_label, notice.address, notice.signature) == (
        "Safari on iOS",
        HOME,
        "Safari|iOS|iPhone",
    )
    record = AuditRecord.objects.get(event=AuditEvent.NEW_SIGN_IN)
    assert record.username == "alice"
    assert record.success
    assert record.session == session.public_id
    assert record.event_data["device"] == "Safari on iOS"
    assert record.event_data["address"] == HOME
    assert record.event_data["place"] == ""
    assert record.event_data["network"] == "203.0.113.0/24"
    assert (
        SessionEvent.objects.filter(kind=SessionEvent.Kind.NOTICE, fields={"user": notice.user_id}).count()
        == 1
    )
    assert KnownDevice.objects.count() == 2


def test_a_new_network_is_a_notice(make_user: Callable[..., Any], rpc_login: Any) -> None:
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    rpc_login("alice", ua=DESKTOP, address=AWAY)
    (notice,) = _notices()
    assert (notice.device_label, notice.network) == ("Chrome on Linux", "198.51.100.0/24")


def test_known_signature_and_known_network_in_other_pairs_is_not_a_notice(
    make_user: Callable[..., Any], rpc_login: Any
) -> None:
    """Signature and network are compared separately, as the issue says ("the signature or the
    network not used"): a phone used at home and the desktop used away make the phone away known."""
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    rpc_login("alice", ua=IPHONE, address=HOME)
    rpc_login("alice", ua=DESKTOP, address=AWAY)
    assert len(_notices()) == 2
    rpc_login("alice", ua=IPHONE, address=AWAY)
    assert len(_notices()) == 2


@pytest.mark.parametrize(("days_ago", "noticed"), [(89, False), (91, True)])
def test_the_notice_days_window(
    make_user: Callable[..., Any], rpc_login: Any, days_ago: int, noticed: bool
) -> None:
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    KnownDevice.objects.update(last_seen_at=timezone.now() - dt.timedelta(days=days_ago))
    rpc_login("alice", ua=DESKTOP, address=HOME)
    assert len(_notices()) == int(noticed)


def test_the_window_is_the_setting(make_user: Callable[..., Any], rpc_login: Any, settings: Any) -> None:
    settings.SESSIONS_NOTICE_DAYS = 10
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    KnownDevice.objects.update(last_seen_at=timezone.now() - dt.timedelta(days=11))
    rpc_login("alice", ua=DESKTOP, address=HOME)
    assert len(_notices()) == 1


def test_a_confirmed_device_is_never_a_notice_even_unused_for_long(
    make_user: Callable[..., Any], rpc_login: Any
) -> None:
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    KnownDevice.objects.update(confirmed=True, last_seen_at=timezone.now() - dt.timedelta(days=400))
    rpc_login("alice", ua=DESKTOP, address=HOME)
    assert _notices() == []


def test_a_confirmed_device_from_a_new_network_is_still_a_notice(
    make_user: Callable[..., Any], rpc_login: Any
) -> None:
    """Confirmation is per (device, network): a signature is only a browser and system family."""
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    KnownDevice.objects.update(confirmed=True)
    rpc_login("alice", ua=DESKTOP, address=AWAY)
    assert len(_notices()) == 1


def test_sessions_from_before_devices_were_kept_do_not_make_the_first_login_a_notice(
    make_user: Callable[..., Any], rpc_login: Any
) -> None:
    """Upgrading must not report every user's next sign-in: earlier sessions without a recorded
    device (before migration 0013) do not count as an earlier login."""
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    KnownDevice.objects.all().delete()
    UserSession.objects.update(device_label=None, device_browser=None, device_os=None, device_family=None)
    rpc_login("alice", ua=IPHONE, address=AWAY)
    assert _notices() == []


def test_forgetting_every_device_makes_the_next_login_a_notice(
    make_user: Callable[..., Any], rpc_login: Any
) -> None:
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    KnownDevice.objects.all().delete()
    rpc_login("alice", ua=DESKTOP, address=HOME)
    assert len(_notices()) == 1


def test_a_second_factor_login_from_a_new_device_is_a_notice(
    make_user: Callable[..., Any], rpc_login: Any, commit: Callable[..., Any]
) -> None:
    user = make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    device = TOTPDevice.objects.create(user=user, confirmed=True)
    phone = RPC(remote_addr=HOME, HTTP_USER_AGENT=IPHONE)
    assert phone.login()["response_type"] == "OTP_REQUIRED"
    code = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()
    answer = commit(
        phone.call, "auth.login_ex_continue", {"mechanism": "OTP_TOKEN", "otp_token": f"{code:06d}"}
    )
    assert answer["response_type"] == "SUCCESS"
    (notice,) = _notices()
    assert UserSession.objects.get(pk=notice.session_id).credentials == Credentials.LOGIN_TWOFACTOR


def test_token_logins_are_not_notices(make_user: Callable[..., Any], rpc_login: Any, commit: Any) -> None:
    make_user("alice")
    desktop = rpc_login("alice", ua=DESKTOP, address=HOME)
    token = desktop.call("auth.generate_token", 600, {}, False)
    other = RPC(remote_addr=AWAY, HTTP_USER_AGENT=IPHONE)
    assert commit(other.call, "auth.login_with_token", token) is True
    assert _notices() == []
    assert KnownDevice.objects.count() == 1


def test_a_failed_login_remembers_nothing(make_user: Callable[..., Any], rpc_login: Any) -> None:
    make_user("alice")
    rpc_login("alice", ua=DESKTOP, address=HOME)
    phone = RPC(remote_addr=AWAY, HTTP_USER_AGENT=IPHONE)
    assert phone.login("alice", PASSWORD + "x")["response_type"] == "AUTH_ERR"
    assert _notices() == []
    assert KnownDevice.objects.count() == 1
