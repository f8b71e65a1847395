"""The browser pages: sign-in (the same login policy as the API, also for the Django admin), the
sessions dashboard, My sessions, API keys, audit, two-factor, the forced password change, the admin."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.audit import audit_record
from sessions_app.auth.clients import Client as Peer
from sessions_app.auth.roles import Role
from sessions_app.models import ApiKey, AuditEvent, AuditRecord, Credentials, EndReason, UserSession
from sessions_app.services.api_keys import api_key_create
from sessions_app.services.sessions import session_create
from sessions_app.services.users import onetime_password_issue
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


# --- the dashboard and the other browser pages (issue 5) -------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_chart_cache() -> None:
    cache.clear()  # the dashboard keeps its chart aggregates for 30 s


class Browser:
    """Django's test client with CSRF enforced, signed in through the sign-in page like a browser."""

    def __init__(self, username: str, password: str = PASSWORD) -> None:
        self.http = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
        self.http.get("/sign-in/")
        response = self.post("/sign-in/", {"username": username, "password": password, "next": "/"})
        assert response.status_code == 302, response.content[:500]

    @property
    def token(self) -> str:
        return self.http.cookies["csrftoken"].value

    def get(self, path: str, data: Any = None) -> Any:
        return self.http.get(path, data)

    def post(self, path: str, data: dict[str, Any] | None = None, **extra: Any) -> Any:
        return self.http.post(path, {"csrfmiddlewaretoken": self.token, **(data or {})}, **extra)

    @property
    def session(self) -> UserSession:
        return UserSession.objects.filter(username=self.username).order_by("-pk").first()  # type: ignore[return-value]


@pytest.fixture
def signed_in(make_user: Any) -> Callable[..., Browser]:
    """``signed_in("op", roles=[...])``: a user with those roles, signed in through the page."""

    def make(username: str, *, roles: Any = (), superuser: bool = False) -> Browser:
        make_user(username, roles=roles, superuser=superuser)
        browser = Browser(username)
        browser.username = username  # type: ignore[attr-defined]
        return browser

    return make


def _api_session(username: str, credentials: str = Credentials.LOGIN_PASSWORD, **extra: Any) -> UserSession:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username=username)
    return session_create(
        credentials=credentials, client=Peer(address="10.1.2.3", port=4000), user=user, **extra
    ).session


def _rows(response: Any) -> list[str]:
    return re.findall(r'data-session-id="([^"]+)"', response.content.decode())


def test_pages_need_a_browser_session(browser: Client) -> None:
    for path in (
        "/sessions/",
        "/sessions/history/",
        "/me/sessions/",
        "/api-keys/",
        "/audit/",
        "/two-factor/",
    ):
        response = browser.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/sign-in/?next="), path


def test_home_sends_each_user_to_their_page(signed_in: Any) -> None:
    assert signed_in("op", roles=[Role.AUTH_SESSIONS_READ]).get("/")["Location"] == "/sessions/"
    assert signed_in("plain").get("/")["Location"] == "/me/sessions/"


def test_dashboard_needs_the_read_role(signed_in: Any) -> None:
    plain = signed_in("plain")
    assert plain.get("/sessions/").status_code == 403
    assert plain.get("/sessions/history/").status_code == 403
    assert plain.get("/audit/").status_code == 403


def test_dashboard_lists_api_sessions_with_charts_and_no_store(
    signed_in: Any, make_user: Any, rpc: Any
) -> None:
    make_user("alice")
    rpc().login("alice")
    op = signed_in("op", roles=[Role.AUTH_SESSIONS_READ])
    response = op.get("/sessions/")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.content.decode()
    alice = UserSession.objects.get(username="alice")
    assert alice.public_id in _rows(response)
    assert op.session.public_id in _rows(response)
    assert 'id="chart-types"' in body
    assert 'id="chart-logins"' in body
    assert "secret_hash" not in body
    assert alice.secret_hash not in body


def test_dashboard_colours_a_type_alike_in_table_and_chart_and_charts_failures(
    signed_in: Any, make_user: Any
) -> None:
    make_user("alice")
    _api_session("alice", Credentials.TOKEN)
    with transaction.atomic():
        audit_record(
            event=AuditEvent.AUTHENTICATION, success=False, username="<b>bob</b>", address="10.0.0.9:5"
        )
    op = signed_in("op", roles=[Role.AUTH_SESSIONS_READ])
    body = op.get("/sessions/").content.decode()
    assert '<span class="badge cred-TOKEN">TOKEN</span>' in body
    chart = body[body.index('id="chart-types"') : body.index("</svg>", body.index('id="chart-types"'))]
    assert '<rect class="bar cred-TOKEN"' in chart
    assert '<rect class="bar cred-LOGIN_PASSWORD"' in chart  # op's own session
    failures = body[body.index('id="chart-failures"') :]
    assert "1 failed login in the last 24 hours" in failures[: failures.index("</svg>")]
    assert "<b>bob</b>" not in body


def test_read_only_operator_sees_no_terminate_and_gets_403(signed_in: Any, make_user: Any) -> None:
    make_user("alice")
    target = _api_session("alice")
    reader = signed_in("reader", roles=[Role.AUTH_SESSIONS_READ])
    body = reader.get("/sessions/").content.decode()
    assert "Terminate" not in body
    assert reader.get(f"/sessions/{target.public_id}/terminate/").status_code == 403
    assert reader.post(f"/sessions/{target.public_id}/terminate/", {"confirm": "1"}).status_code == 403
    assert reader.post("/sessions/terminate-others/", {"confirm": "1"}).status_code == 403
    target.refresh_from_db()
    assert target.ended_at is None


def test_terminate_asks_first_then_ends_the_session(signed_in: Any, make_user: Any) -> None:
    make_user("alice")
    target = _api_session("alice")
    writer = signed_in("writer", roles=[Role.AUTH_SESSIONS_WRITE])
    assert "Terminate" in writer.get("/sessions/").content.decode()
    url = f"/sessions/{target.public_id}/terminate/"
    assert writer.get(url).status_code == 200  # the confirmation page; GET never terminates
    assert writer.post(url).status_code == 200  # no confirmation: asked again
    target.refresh_from_db()
    assert target.ended_at is None
    response = writer.post(url, {"confirm": "1", "next": "/sessions/?type=LOGIN_PASSWORD"})
    assert response.status_code == 302
    assert response["Location"] == "/sessions/?type=LOGIN_PASSWORD"
    target.refresh_from_db()
    assert (target.end_reason, target.ended_by) == (EndReason.TERMINATED, "writer")
    again = writer.get(url)  # ended: nothing to terminate any more, and the page says so
    assert again.status_code == 302
    assert again["Location"] == "/sessions/"
    assert "That session had already ended (terminated" in writer.get("/sessions/").content.decode()
    assert writer.get("/sessions/no-such-session/terminate/").status_code == 404  # never existed
    history = writer.get("/sessions/history/")
    assert target.public_id in _rows(history)
    assert "TERMINATED" in history.content.decode()


def test_terminate_refuses_foreign_origin_and_missing_token(signed_in: Any, make_user: Any) -> None:
    make_user("alice")
    target = _api_session("alice")
    writer = signed_in("writer", roles=[Role.AUTH_SESSIONS_WRITE])
    url = f"/sessions/{target.public_id}/terminate/"
    assert writer.http.post(url, {"confirm": "1"}).status_code == 403
    response = writer.post(url, {"confirm": "1"}, HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403
    target.refresh_from_db()
    assert target.ended_at is None


def test_terminate_method_matrix(signed_in: Any, make_user: Any) -> None:
    make_user("alice")
    target = _api_session("alice")
    writer = signed_in("writer", roles=[Role.AUTH_SESSIONS_WRITE])
    url = f"/sessions/{target.public_id}/terminate/"
    for method in ("put", "delete", "patch", "options"):
        response = getattr(writer.http, method)(url)
        assert response.status_code == 405, method
        assert "GET" in response["Allow"]
        assert "POST" in response["Allow"]
    assert writer.http.head(url).status_code == 405
    target.refresh_from_db()
    assert target.ended_at is None


def test_terminate_others_keeps_the_current_and_internal_sessions(signed_in: Any, make_user: Any) -> None:
    make_user("alice")
    other = _api_session("alice")
    internal = _api_session("alice", internal=True)
    writer = signed_in("writer", roles=[Role.AUTH_SESSIONS_WRITE])
    assert writer.get("/sessions/terminate-others/").status_code == 200
    response = writer.post("/sessions/terminate-others/", {"confirm": "1"})
    assert response.status_code == 302
    other.refresh_from_db()
    internal.refresh_from_db()
    assert other.end_reason == EndReason.TERMINATED
    assert internal.ended_at is None
    assert writer.get("/sessions/").status_code == 200  # still signed in


def test_filters_by_user_type_and_raw_json(signed_in: Any, make_user: Any) -> None:
    make_user("alice")
    make_user("bob")
    alice_pw = _api_session("alice")
    bob_pw = _api_session("bob")
    op = signed_in("op", roles=[Role.AUTH_SESSIONS_READ])
    assert _rows(op.get("/sessions/", {"user": "alice"})) == [alice_pw.public_id]
    assert set(_rows(op.get("/sessions/", {"type": "LOGIN_PASSWORD"}))) >= {
        alice_pw.public_id,
        bob_pw.public_id,
    }
    assert _rows(op.get("/sessions/", {"type": "API_KEY"})) == []
    assert _rows(op.get("/sessions/", {"origin": "10.1."})) == [bob_pw.public_id, alice_pw.public_id]
    raw = json.dumps([["credentials_data.username", "in", ["bob"]]])
    assert _rows(op.get("/sessions/", {"query": raw})) == [bob_pw.public_id]
    since = (timezone.now() + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert _rows(op.get("/sessions/", {"since": since})) == []


def _field_errors(response: Any, field: str) -> str:
    match = re.search(rf'id="id_{field}_error">(.*?)</ul>', response.content.decode(), re.S)
    return match.group(1) if match else ""


def test_bad_filters_are_reported_next_to_their_field(signed_in: Any) -> None:
    op = signed_in("op", roles=[Role.AUTH_SESSIONS_READ])
    response = op.get("/sessions/", {"query": '[["nope", "=", 1]]'})
    assert response.status_code == 400
    assert "filters[0]: &#x27;nope&#x27;: unknown field" in _field_errors(response, "query")
    response = op.get("/sessions/", {"user": "alice", "query": '[["created_at", "^", "x"]]'})
    assert "filters[0]" in _field_errors(response, "query")  # numbered within the box
    assert "Not valid JSON" in _field_errors(op.get("/sessions/", {"query": "[["}), "query")
    assert "JSON array" in _field_errors(op.get("/sessions/", {"query": "{}"}), "query")
    assert _field_errors(op.get("/sessions/", {"type": "BOGUS"}), "type")
    assert _field_errors(op.get("/sessions/", {"since": "yesterday"}), "since")
    assert _field_errors(op.get("/sessions/", {"origin": "a\x00b"}), "origin")
    response = op.get("/sessions/", {"cursor": "garbage"})
    assert response.status_code == 400
    assert "page link is not valid" in response.content.decode()
    assert op.get("/sessions/", {"sort": "secret_hash"}).status_code == 400


def test_keyset_pages_walk_forwards_and_back(signed_in: Any, make_user: Any) -> None:
    make_user("alice")
    base = timezone.now() - dt.timedelta(hours=2)
    made = [_api_session("alice", now=base + dt.timedelta(seconds=i)) for i in range(55)]
    op = signed_in("op", roles=[Role.AUTH_SESSIONS_READ])
    first = op.get("/sessions/", {"user": "alice"})
    rows = _rows(first)
    assert rows == [s.public_id for s in reversed(made)][:50]
    next_link = re.search(r'rel="next" href="\?([^"]+)"', first.content.decode())
    assert next_link is not None
    second = op.get("/sessions/?" + next_link.group(1).replace("&amp;", "&"))
    assert _rows(second) == [s.public_id for s in reversed(made)][50:]
    assert 'rel="next"' not in second.content.decode()
    prev_link = re.search(r'rel="prev" href="\?([^"]+)"', second.content.decode())
    assert prev_link is not None
    back = op.get("/sessions/?" + prev_link.group(1).replace("&amp;", "&"))
    assert _rows(back) == rows
    ascending = op.get("/sessions/", {"user": "alice", "sort": "created", "dir": "asc"})
    assert _rows(ascending)[:3] == [s.public_id for s in made[:3]]


def test_sorting_by_a_nullable_column_pages_through_every_row(signed_in: Any, make_user: Any) -> None:
    from sessions_app import tables

    for name in ("ann", "bob", "cy"):
        make_user(name)
        for _ in range(3):
            _api_session(name)
    session_create(credentials=Credentials.TRUENAS_NODE, client=Peer(address="192.0.2.1", port=1))
    for descending in (False, True):
        seen: list[str] = []
        page = tables.session_page(sort="user", descending=descending, limit=2)
        while True:
            seen += [row["id"] for row in page.rows]
            if page.next_cursor is None:
                break
            page = tables.session_page(sort="user", descending=descending, limit=2, cursor=page.next_cursor)
        assert len(seen) == len(set(seen)) == 10


def test_my_sessions_marks_the_current_one_and_ends_only_own(signed_in: Any, make_user: Any) -> None:
    make_user("bob")
    bobs = _api_session("bob")
    alice = signed_in("alice")
    current = alice.session
    mine = _api_session("alice")
    response = alice.get("/me/sessions/")
    assert _rows(response) == [mine.public_id, current.public_id]
    assert "this device" in response.content.decode()
    assert alice.get(f"/me/sessions/{bobs.public_id}/terminate/").status_code == 404
    assert alice.post(f"/me/sessions/{bobs.public_id}/terminate/", {"confirm": "1"}).status_code == 404
    assert alice.post(f"/me/sessions/{mine.public_id}/terminate/", {"confirm": "1"}).status_code == 302
    mine.refresh_from_db()
    bobs.refresh_from_db()
    assert mine.end_reason == EndReason.TERMINATED
    assert bobs.ended_at is None
    other = _api_session("alice")
    assert alice.post("/me/sessions/terminate-others/", {"confirm": "1"}).status_code == 302
    other.refresh_from_db()
    bobs.refresh_from_db()
    assert other.ended_at is not None
    assert bobs.ended_at is None
    assert alice.get("/me/sessions/").status_code == 200


def test_api_key_is_shown_once_and_works(signed_in: Any, rpc: Any) -> None:
    alice = signed_in("alice")
    response = alice.post("/api-keys/", {"name": "backup"})
    assert response.status_code == 200
    plaintext = re.search(r'id="new-key"[^>]*value="([^"]+)"', response.content.decode()).group(1)  # type: ignore[union-attr]
    assert "no-store" in response["Cache-Control"]
    listing = alice.get("/api-keys/").content.decode()
    assert "backup" in listing
    assert plaintext not in listing
    key = ApiKey.objects.get(name="backup")
    assert key.key_hash not in listing
    login = rpc().call(
        "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": plaintext}
    )
    assert login["response_type"] == "SUCCESS"


def test_api_key_forms_reject_bad_input_next_to_the_field(signed_in: Any, make_user: Any) -> None:
    alice = signed_in("alice")
    assert _field_errors(alice.post("/api-keys/", {"name": ""}), "name")
    assert _field_errors(alice.post("/api-keys/", {"name": "k", "expires_at": "soon"}), "expires_at")
    alice.post("/api-keys/", {"name": "dup"})
    response = alice.post("/api-keys/", {"name": "dup"})
    assert response.status_code == 400
    assert "already exists" in _field_errors(response, "name")
    assert "username" not in alice.get("/api-keys/").content.decode().split("<table")[0]


def test_api_key_reset_revoke_delete_and_scope(signed_in: Any, make_user: Any) -> None:
    bob = make_user("bob")
    bobs_key, _ = api_key_create(user=bob, name="bobs")
    alice = signed_in("alice")
    alice.post("/api-keys/", {"name": "mine"})
    key = ApiKey.objects.get(name="mine")
    for action in ("", "reset/", "revoke/", "delete/"):
        assert alice.get(f"/api-keys/{bobs_key.pk}/{action}").status_code == 404
    old_hash = key.key_hash
    assert alice.post(f"/api-keys/{key.pk}/reset/").status_code == 200  # asks first
    response = alice.post(f"/api-keys/{key.pk}/reset/", {"confirm": "1"})
    assert 'id="new-key"' in response.content.decode()
    key.refresh_from_db()
    assert key.key_hash != old_hash
    future = (timezone.now() + dt.timedelta(days=3)).replace(microsecond=0)
    response = alice.post(
        f"/api-keys/{key.pk}/", {"name": "renamed", "expires_at": future.strftime("%Y-%m-%dT%H:%M:%S")}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.expires_at) == ("renamed", future)
    assert _field_errors(alice.post(f"/api-keys/{key.pk}/revoke/", {"confirm": "1", "reason": ""}), "reason")
    assert alice.post(f"/api-keys/{key.pk}/revoke/", {"confirm": "1", "reason": "lost"}).status_code == 302
    key.refresh_from_db()
    assert key.revoked
    assert key.revoked_reason == "lost"
    assert alice.post(f"/api-keys/{key.pk}/delete/", {"confirm": "1"}).status_code == 302
    assert not ApiKey.objects.filter(pk=key.pk).exists()


def test_audit_page_filters_and_needs_its_role(signed_in: Any, make_user: Any, browser: Client) -> None:
    make_user("alice")
    token = _csrf(browser)
    browser.post("/sign-in/", {"username": "alice", "password": "wrong", "csrfmiddlewaretoken": token})
    auditor = signed_in("auditor", roles=[Role.AUDIT_READ])
    response = auditor.get("/audit/", {"user": "alice", "success": "no"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "failed" in body
    assert "wrong password" in body
    assert "auditor" not in body.split("<table")[1]
    assert _field_errors(auditor.get("/audit/", {"query": '[["password", "=", "x"]]'}), "query")
    assert "no-store" in response["Cache-Control"]


def test_totp_enrolment_by_the_shown_secret_then_disable(signed_in: Any) -> None:
    alice = signed_in("alice")
    assert alice.get("/two-factor/").status_code == 200
    assert alice.post("/two-factor/")["Location"] == "/two-factor/enrol/"
    page = alice.get("/two-factor/enrol/").content.decode()
    assert "<svg" in page
    assert 'class="qr"' in page
    secret = re.search(r'data-secret="([A-Z2-7]+)"', page).group(1)  # type: ignore[union-attr]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    assert _field_errors(alice.post("/two-factor/enrol/", {"otp_token": "12"}), "otp_token")
    code = TOTP(key).token()
    response = alice.post("/two-factor/enrol/", {"otp_token": f"{code:06d}"})
    assert response.status_code == 302
    assert TOTPDevice.objects.get(user__username="alice").confirmed
    # Turning it off needs the password and a current code (step-up, security.md F2).
    assert _field_errors(alice.post("/two-factor/disable/", {"password": PASSWORD}), "otp_token")
    next_code = TOTP(key)
    next_code.time = next_code.time + 30  # the enrolment used this step's code; one step on is valid
    wrong = alice.post("/two-factor/disable/", {"password": "nope", "otp_token": f"{next_code.token():06d}"})
    assert wrong.status_code == 400
    assert TOTPDevice.objects.filter(user__username="alice").exists()
    response = alice.post(
        "/two-factor/disable/", {"password": PASSWORD, "otp_token": f"{next_code.token():06d}"}
    )
    assert response["Location"] == "/sign-in/"
    assert not TOTPDevice.objects.filter(user__username="alice").exists()
    assert alice.get("/me/sessions/").status_code == 302  # every session ended


def test_onetime_password_sign_in_forces_a_new_password(browser: Client, make_user: Any) -> None:
    user = make_user("alice")
    otpw = onetime_password_issue(user=user, actor="admin")
    token = _csrf(browser)
    response = browser.post(
        "/sign-in/", {"username": "alice", "password": otpw, "csrfmiddlewaretoken": token}
    )
    assert response["Location"] == "/password/"
    for path in ("/", "/me/sessions/", "/api-keys/"):
        assert browser.get(path)["Location"] == "/password/"
    response = browser.post(
        "/password/", {"new_password1": "short", "new_password2": "short", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 400
    assert _field_errors(response, "new_password1")
    old_cookie = browser.cookies["__Host-sid"].value
    new = "a much longer passphrase 42"
    response = browser.post(
        "/password/", {"new_password1": new, "new_password2": new, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert browser.cookies["__Host-sid"].value != old_cookie
    assert browser.get("/me/sessions/").status_code == 200
    session = UserSession.objects.get(username="alice", ended_at__isnull=True)
    assert not session.password_change_required
    user.refresh_from_db()
    assert user.check_password(new)


def test_locked_account_shows_the_wait(browser: Client, make_user: Any, settings: Any) -> None:
    settings.SESSIONS_LOCKOUT_THRESHOLD = 2
    make_user("alice")
    token = _csrf(browser)
    for _ in range(2):
        browser.post("/sign-in/", {"username": "alice", "password": "nope", "csrfmiddlewaretoken": token})
    response = browser.post(
        "/sign-in/", {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 401
    assert "Try again in about 5 minutes" in response.content.decode()


def test_rate_limited_sign_in_shows_the_wait(browser: Client, make_user: Any, settings: Any) -> None:
    settings.SESSIONS_LOGIN_RATE = 1
    make_user("alice")
    token = _csrf(browser)
    browser.post("/sign-in/", {"username": "alice", "password": "nope", "csrfmiddlewaretoken": token})
    response = browser.post(
        "/sign-in/", {"username": "alice", "password": "nope", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 429
    assert "Try again in" in response.content.decode()
    assert int(response["Retry-After"]) >= 1


def test_admin_lists_without_secrets_and_actions_call_the_services(signed_in: Any, make_user: Any) -> None:
    alice = make_user("alice")
    target = _api_session("alice")
    key, _ = api_key_create(user=alice, name="alices")
    admin = signed_in("root", superuser=True)
    admin.http.defaults["HTTP_HOST"] = "127.0.0.1"
    for path in (
        "/admin/sessions_app/usersession/",
        "/admin/sessions_app/apikey/",
        "/admin/sessions_app/auditrecord/",
    ):
        response = admin.get(path)
        assert response.status_code == 200, path
        body = response.content.decode()
        assert target.secret_hash not in body
        assert key.key_hash not in body
    detail = admin.get(f"/admin/sessions_app/usersession/{target.pk}/change/").content.decode()
    assert target.secret_hash not in detail
    assert "user_auth_hash" not in detail
    action = {"action": "terminate_sessions", "_selected_action": [target.pk], "index": 0}
    response = admin.post("/admin/sessions_app/usersession/", action)
    assert response.status_code == 200  # the confirmation page first (issue 17)
    target.refresh_from_db()
    assert target.ended_at is None
    response = admin.post("/admin/sessions_app/usersession/", {**action, "post": "yes", "confirm": "1"})
    assert response.status_code == 302
    target.refresh_from_db()
    assert (target.end_reason, target.ended_by) == (EndReason.TERMINATED, "root")
    admin.post(
        "/admin/sessions_app/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk], "index": 0}
    )
    key.refresh_from_db()
    assert key.revoked


def test_admin_actions_need_the_write_roles(signed_in: Any, make_user: Any) -> None:
    from django.contrib.auth.models import Permission

    make_user("alice")
    target = _api_session("alice")
    staff = signed_in("staff", roles=[Role.AUTH_SESSIONS_READ])
    user = staff.session.user
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.user_permissions.add(Permission.objects.get(codename="view_usersession"))
    response = staff.get("/admin/sessions_app/usersession/")
    assert response.status_code == 200
    assert "terminate_sessions" not in response.content.decode()
    staff.post(
        "/admin/sessions_app/usersession/",
        {"action": "terminate_sessions", "_selected_action": [target.pk], "index": 0},
    )
    target.refresh_from_db()
    assert target.ended_at is None


def test_sign_in_forms_report_missing_fields_next_to_them(browser: Client, make_user: Any) -> None:
    make_user("alice", roles=[])
    token = _csrf(browser)
    response = browser.post("/sign-in/", {"username": "", "password": "", "csrfmiddlewaretoken": token})
    assert _field_errors(response, "username")
    assert _field_errors(response, "password")
    device = TOTPDevice.objects.create(user=make_user("bob"), confirmed=True)
    browser.post("/sign-in/", {"username": "bob", "password": PASSWORD, "csrfmiddlewaretoken": token})
    response = browser.post("/sign-in/otp/", {"otp_token": "12ab", "csrfmiddlewaretoken": token})
    assert "6-digit code" in _field_errors(response, "otp_token")
    assert device.user.auth_sessions.count() == 0


def test_error_pages_use_the_layout(signed_in: Any) -> None:
    plain = signed_in("plain")
    response = plain.get("/sessions/")
    assert response.status_code == 403
    assert "no-store" in response["Cache-Control"]
    assert b"AUTH_SESSIONS_READ" in response.content
    assert b"registry.css" in response.content
    response = plain.get("/me/sessions/nope/terminate/")
    assert response.status_code == 404
    assert "no-store" in response["Cache-Control"]
    assert b"registry.css" in response.content


def test_api_key_write_role_creates_keys_for_other_users(signed_in: Any, make_user: Any) -> None:
    make_user("bob")
    manager = signed_in("keys", roles=[Role.API_KEY_WRITE])
    assert 'name="username"' in manager.get("/api-keys/").content.decode()
    assert _field_errors(manager.post("/api-keys/", {"name": "x", "username": "nobody"}), "username")
    response = manager.post("/api-keys/", {"name": "for-bob", "username": "bob"})
    assert response.status_code == 200
    assert ApiKey.objects.get(name="for-bob").user.username == "bob"
    everyone = manager.get("/api-keys/", {"all": "1"}).content.decode()
    assert "for-bob" in everyone
    plain = signed_in("plain")
    plain.post("/api-keys/", {"name": "sneaky", "username": "bob"})
    assert ApiKey.objects.get(name="sneaky").user.username == "plain"  # the field is ignored
    assert "for-bob" not in plain.get("/api-keys/", {"all": "1"}).content.decode()


def test_csrf_failure_page(signed_in: Any, make_user: Any) -> None:
    make_user("alice")
    target = _api_session("alice")
    writer = signed_in("writer", roles=[Role.AUTH_SESSIONS_WRITE])
    response = writer.http.post(f"/sessions/{target.public_id}/terminate/", {"confirm": "1"})
    assert response.status_code == 403
    assert b"Nothing was changed" in response.content


def test_admin_needs_a_browser_session_without_a_pending_password_change(
    browser: Client, make_user: Any
) -> None:
    user = make_user("root", superuser=True)
    _, key = api_key_create(user=user, name="root-key")
    assert browser.get("/admin/", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 302
    otpw = onetime_password_issue(user=user, actor="admin")
    token = _csrf(browser)
    browser.post("/sign-in/", {"username": "root", "password": otpw, "csrfmiddlewaretoken": token})
    response = browser.get("/admin/", follow=True)
    assert response.redirect_chain[-1][0] == "/password/"


def test_favicon_is_served(client: Any) -> None:
    """Every browser asks for /favicon.ico (issue 17: it was a 404 in every log)."""
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("sessions_app/favicon.svg")
