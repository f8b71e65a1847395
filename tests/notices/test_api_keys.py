"""API keys: the first use from a new network is a notice to the key's owner (SESSIONS_NOTICE_API_KEYS),
by login (API_KEY_PLAIN) and per request (Bearer, checked only when the use is recorded)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions_app.models import (
    ApiKey,
    AuditEvent,
    AuditRecord,
    KnownDevice,
    PasswordChangeDemand,
    SignInNotice,
    UserSession,
)
from sessions_app.services.api_keys import api_key_create
from tests.conftest import RPC
from tests.notices.conftest import AWAY, DESKTOP, HOME, Browser

pytestmark = pytest.mark.django_db

CURL = "curl/8.5.0"


@pytest.fixture
def key(make_user: Callable[..., Any]) -> tuple[ApiKey, str]:
    user = make_user("alice")
    user.email = "alice@example.com"
    user.save(update_fields=["email"])
    return api_key_create(user=user, name="backup")


def _key_login(text: str, address: str, commit: Callable[..., Any]) -> None:
    client = RPC(remote_addr=address, HTTP_USER_AGENT=CURL)
    params = {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": text}
    assert commit(client.call, "auth.login_ex", params, secure=True)["response_type"] == "SUCCESS"


def _bearer(text: str, address: str, commit: Callable[..., Any]) -> None:
    client = Client(REMOTE_ADDR=address, HTTP_USER_AGENT=CURL)
    response = commit(client.get, "/api/v2.0/auth/me", HTTP_AUTHORIZATION=f"Bearer {text}", secure=True)
    assert response.status_code == 200, response.content


def test_a_key_login_from_a_new_network_is_a_notice(key: tuple[ApiKey, str], commit: Any) -> None:
    api_key, text = key
    _key_login(text, HOME, commit)  # the key's first use: where it is used from
    assert not SignInNotice.objects.exists()
    _key_login(text, "203.0.113.99", commit)  # the same /24
    assert not SignInNotice.objects.exists()
    _key_login(text, AWAY, commit)
    notice = SignInNotice.objects.get()
    assert notice.signature == f"api_key:{api_key.pk}"
    assert notice.device_label == "API key “backup”"
    assert notice.session is not None
    assert notice.session.api_key_id == api_key.pk
    record = AuditRecord.objects.get(event=AuditEvent.NEW_SIGN_IN)
    assert record.event_data["api_key_ref"] == f"{api_key.pk}:backup"
    assert record.event_data["address"] == AWAY
    (message,) = mail.outbox
    assert message.subject == "New use of your API key"
    assert "API key “backup”" in message.body
    assert "It revokes the key" in message.body


def test_a_key_does_not_share_networks_with_interactive_logins(
    key: tuple[ApiKey, str], commit: Any, rpc_login: Any
) -> None:
    _, text = key
    rpc_login("alice", ua=DESKTOP, address=HOME)
    _key_login(text, AWAY, commit)  # first use of the key: not a notice, and no interactive pair
    assert not SignInNotice.objects.exists()
    rpc_login("alice", ua=DESKTOP, address=HOME)
    assert not SignInNotice.objects.exists()


def test_key_notices_can_be_turned_off(key: tuple[ApiKey, str], commit: Any, settings: Any) -> None:
    settings.SESSIONS_NOTICE_API_KEYS = False
    _, text = key
    _key_login(text, HOME, commit)
    _key_login(text, AWAY, commit)
    assert not SignInNotice.objects.exists()
    assert not KnownDevice.objects.exists()


def test_a_bearer_use_from_a_new_network_is_a_notice_when_the_use_is_recorded(
    key: tuple[ApiKey, str], commit: Any
) -> None:
    api_key, text = key
    _bearer(text, HOME, commit)
    assert KnownDevice.objects.get().network == "203.0.113.0/24"
    _bearer(text, AWAY, commit)  # within the minute: not recorded, not looked at
    assert not SignInNotice.objects.exists()
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now() - dt.timedelta(minutes=2))
    _bearer(text, AWAY, commit)
    notice = SignInNotice.objects.get()
    assert notice.session is None
    assert notice.address == AWAY
    assert len(mail.outbox) == 1


def test_a_bearer_request_within_the_minute_costs_no_known_device_query(
    key: tuple[ApiKey, str], commit: Any
) -> None:
    _, text = key
    _bearer(text, HOME, commit)
    with CaptureQueriesContext(connection) as queries:
        _bearer(text, AWAY, commit)
    assert not [q for q in queries.captured_queries if "knowndevice" in q["sql"].lower()]
    assert not [q for q in queries.captured_queries if "signinnotice" in q["sql"].lower()]


def test_no_on_a_key_notice_revokes_the_key_and_demands_no_password(
    key: tuple[ApiKey, str], commit: Any, browser: Callable[..., Browser]
) -> None:
    api_key, text = key
    desktop = browser("alice", ua=DESKTOP, address=HOME)
    _key_login(text, HOME, commit)
    _key_login(text, AWAY, commit)
    notice = SignInNotice.objects.get()
    page = desktop.get("/me/sessions/").content.decode()
    assert "API key “backup” used from a new network" in page
    assert "No — revoke the key" in page
    response = desktop.post(f"/me/notices/{notice.pk}/deny/", {"next": "/api-keys/"})
    assert response["Location"] == "/api-keys/"
    api_key.refresh_from_db()
    assert api_key.revoked
    assert not UserSession.objects.filter(api_key=api_key, ended_at__isnull=True).exists()
    assert not PasswordChangeDemand.objects.exists()
    assert UserSession.objects.get(pk=desktop.session.pk).ended_at is None  # type: ignore[union-attr]
