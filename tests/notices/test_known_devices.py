"""Self-service of remembered devices (/me/devices/) and their admin (issue 16, item 5)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission

from sessions_app.auth.roles import Role, grant
from sessions_app.models import AuditRecord, KnownDevice, SignInNotice
from tests.notices.conftest import AWAY, DESKTOP, HOME, IPHONE, Browser

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_and_bob(make_user: Callable[..., Any], browser: Callable[..., Browser]) -> tuple[Browser, Browser]:
    make_user("alice")
    make_user("bob")
    alice = browser("alice", ua=DESKTOP, address=HOME)
    browser("alice", ua=IPHONE, address=AWAY)
    bob = browser("bob", ua=IPHONE, address="192.0.2.1")
    return alice, bob


def test_the_page_lists_only_the_caller_s_devices(alice_and_bob: tuple[Browser, Browser]) -> None:
    alice, bob = alice_and_bob
    page = alice.get("/me/devices/")
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    text = page.content.decode()
    assert "Chrome on Linux" in text
    assert "Safari on iOS" in text
    assert "203.0.113.0/24" in text
    assert "198.51.100.0/24" in text
    assert "192.0.2.0/24" not in text  # bob's
    assert text.count("data-device-id=") == 2
    assert bob.get("/me/devices/").content.decode().count("data-device-id=") == 1


def test_forget_removes_one_device_audited_and_its_next_sign_in_is_a_notice(
    alice_and_bob: tuple[Browser, Browser], browser: Callable[..., Browser]
) -> None:
    alice, _ = alice_and_bob
    phone = KnownDevice.objects.get(user__username="alice", signature="Safari|iOS|iPhone")
    response = alice.post(f"/me/devices/{phone.pk}/forget/")
    assert response.status_code == 302
    assert response["Location"] == "/me/devices/"
    assert not KnownDevice.objects.filter(pk=phone.pk).exists()
    record = AuditRecord.objects.get(event_data__method="known_device.forget")
    assert record.username == "alice"
    assert record.event_data["device"] == "Safari on iOS"
    assert "was forgotten" in alice.get("/me/devices/").content.decode()
    before = SignInNotice.objects.count()
    browser("alice", ua=IPHONE, address=AWAY)
    assert SignInNotice.objects.count() == before + 1


def test_another_user_s_device_cannot_be_forgotten(alice_and_bob: tuple[Browser, Browser]) -> None:
    alice, _ = alice_and_bob
    bobs = KnownDevice.objects.get(user__username="bob")
    assert alice.post(f"/me/devices/{bobs.pk}/forget/").status_code == 404
    assert KnownDevice.objects.filter(pk=bobs.pk).exists()
    assert alice.get(f"/me/devices/{bobs.pk}/forget/").status_code == 405
    assert alice.http.post(f"/me/devices/{bobs.pk}/forget/").status_code == 403  # no CSRF token


def test_the_page_needs_a_session(client: Any) -> None:
    response = client.get("/me/devices/")
    assert response.status_code == 302
    assert response["Location"].startswith("/sign-in/")


def test_the_nav_links_the_devices_page(alice_and_bob: tuple[Browser, Browser]) -> None:
    alice, _ = alice_and_bob
    assert 'href="/me/devices/"' in alice.get("/me/sessions/").content.decode()


# --- admin ----------------------------------------------------------------------------------------


def test_the_admin_lists_devices_per_user_and_forgets_them(
    alice_and_bob: tuple[Browser, Browser], make_user: Callable[..., Any], browser: Callable[..., Browser]
) -> None:
    make_user("root", superuser=True)
    admin = browser("root", ua=DESKTOP, address=HOME)
    bob = KnownDevice.objects.get(user__username="bob").user
    listing = admin.get(f"/admin/sessions_app/knowndevice/?user__id__exact={bob.pk}")
    assert listing.status_code == 200
    text = listing.content.decode()
    assert "Safari on iOS" in text
    assert "192.0.2.0/24" in text
    assert "Chrome on Linux" not in text
    assert "forget_devices" in text
    assert admin.get("/admin/sessions_app/knowndevice/?user__password__startswith=x").status_code == 400
    device = KnownDevice.objects.get(user=bob)
    assert admin.get(f"/admin/sessions_app/knowndevice/{device.pk}/change/").status_code == 200
    assert admin.get("/admin/sessions_app/knowndevice/add/").status_code == 403
    response = admin.post(
        "/admin/sessions_app/knowndevice/", {"action": "forget_devices", "_selected_action": [device.pk]}
    )
    assert response.status_code == 302
    assert not KnownDevice.objects.filter(pk=device.pk).exists()
    record = AuditRecord.objects.get(event_data__method="known_device.forget")
    assert record.username == "root"
    assert record.event_data["target_username"] == "bob"


def test_forgetting_in_the_admin_needs_auth_sessions_write(
    alice_and_bob: tuple[Browser, Browser], make_user: Callable[..., Any], browser: Callable[..., Browser]
) -> None:
    reader = make_user("reader", roles=[Role.AUTH_SESSIONS_READ])
    reader.is_staff = True
    reader.save(update_fields=["is_staff"])
    reader.user_permissions.add(Permission.objects.get(codename="view_knowndevice"))
    page = browser("reader", ua=DESKTOP, address=HOME)
    assert page.get("/admin/sessions_app/knowndevice/").status_code == 200
    device = KnownDevice.objects.get(user__username="bob")
    page.post(
        "/admin/sessions_app/knowndevice/", {"action": "forget_devices", "_selected_action": [device.pk]}
    )
    assert KnownDevice.objects.filter(pk=device.pk).exists()
    grant(reader, Role.AUTH_SESSIONS_WRITE)
    page.post(
        "/admin/sessions_app/knowndevice/", {"action": "forget_devices", "_selected_action": [device.pk]}
    )
    assert not KnownDevice.objects.filter(pk=device.pk).exists()
