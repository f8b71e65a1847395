"""The browser pages in headless Chromium against a live gunicorn (issue 5's acceptance list).

Sessions are opened the way clients open them -- JSON-RPC ``auth.login_ex`` over HTTP -- and ended
in the browser; their next API call must then fail. Each test saves screenshots of what it saw.
"""

from __future__ import annotations

import base64
import http.client
import re
from collections.abc import Callable
from typing import Any

import pytest
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.auth.roles import Role
from sessions_app.models import UserSession
from tests.conftest import PASSWORD
from tests.integration.servers import COOKIE, Server

pytestmark = pytest.mark.django_db(transaction=True)

expect = pytest.importorskip("playwright.sync_api").expect
NOT_AUTHENTICATED = 207
GENERIC = "The username or password is not correct"


def sign_in(page: Any, username: str, password: str = PASSWORD) -> None:
    page.goto("/sign-in/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def row(page: Any, public_id: str) -> Any:
    return page.locator(f'tr[data-session-id="{public_id}"]')


def session_ids(page: Any) -> set[str]:
    return set(
        page.locator("tbody tr[data-session-id]").evaluate_all("rows => rows.map(r => r.dataset.sessionId)")
    )


def public_id(**filters: Any) -> str:
    return UserSession.objects.filter(ended_at__isnull=True, **filters).latest("pk").public_id


def rest_status(server: Server, path: str, cookie: str) -> int:
    connection: http.client.HTTPConnection = server.connect()
    try:
        connection.request("GET", path, headers={"Cookie": f"{COOKIE}={cookie}"})
        return connection.getresponse().status
    finally:
        connection.close()


def assert_api_refuses(server: Server, cookie: str) -> None:
    error = server.call("auth.me", cookie=cookie).error
    assert error["code"] == -32001, error
    assert error["data"]["error"] == NOT_AUTHENTICATED, error
    assert rest_status(server, "/api/v2.0/auth/me", cookie) == 401


# --- sign-in ------------------------------------------------------------------------------------------


def test_sign_in_with_password(page: Any, create_user: Callable[..., Any], shot: Any) -> None:
    create_user("alice")
    page.goto("/sign-in/")
    shot(page, "sign-in")
    sign_in(page, "alice")
    expect(page).to_have_url(re.compile(r"/me/sessions/$"))
    expect(page.get_by_text("this device")).to_be_visible()
    assert "no-store" in (page.request.get("/me/sessions/").headers.get("cache-control") or "")
    shot(page, "my-sessions")


def test_wrong_password_shows_the_generic_error(
    page: Any, create_user: Callable[..., Any], shot: Any
) -> None:
    create_user("alice")
    sign_in(page, "alice", "not the password")
    expect(page.get_by_role("alert")).to_contain_text(GENERIC)
    sign_in(page, "nobody", "not the password")
    expect(page.get_by_role("alert")).to_contain_text(GENERIC)
    shot(page, "sign-in-wrong-password")


def test_sign_in_with_password_and_totp(page: Any, create_user: Callable[..., Any], shot: Any) -> None:
    user = create_user("alice")
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    sign_in(page, "alice")
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    shot(page, "sign-in-otp")
    code = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()
    page.get_by_label("Authentication code").fill(f"{code:0{device.digits}d}")
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(re.compile(r"/me/sessions/$"))
    expect(page.locator("tr.current .badge.cred-LOGIN_TWOFACTOR")).to_be_visible()


def test_onetime_password_forces_a_new_password(
    page: Any, create_user: Callable[..., Any], shot: Any
) -> None:
    from sessions_app.services.users import onetime_password_issue

    user = create_user("alice")
    sign_in(page, "alice", onetime_password_issue(user=user, actor="admin"))
    expect(page).to_have_url(re.compile(r"/password/$"))
    page.goto("/api-keys/")
    expect(page).to_have_url(re.compile(r"/password/$"))
    page.get_by_label("New password", exact=True).fill("short")
    page.get_by_label("New password again").fill("short")
    page.get_by_role("button", name="Set password").click()
    expect(page.locator("#id_new_password1_error")).to_be_visible()
    shot(page, "password-forced-change")
    new = "a much longer passphrase 42"
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("New password again").fill(new)
    page.get_by_role("button", name="Set password").click()
    expect(page.get_by_text("Your password was changed")).to_be_visible()
    page.goto("/api-keys/")  # the cookie was re-set with the session's new secret
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()


# --- the dashboard ------------------------------------------------------------------------------------


def test_dashboard_lists_api_sessions_and_filters_them(
    page: Any, web: Server, create_user: Callable[..., Any], shot: Any
) -> None:
    from sessions_app.services.api_keys import api_key_create

    create_user("op", roles=[Role.AUTH_SESSIONS_READ])
    create_user("alice")
    bob = create_user("bob")
    alice_cookie = web.login("alice")
    web.login("bob")
    _, key = api_key_create(user=bob, name="bob-ci")
    login = web.call("auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "bob", "api_key": key})
    assert login.result["response_type"] == "SUCCESS"
    token = web.call("auth.generate_token", cookie=alice_cookie).result
    assert (
        web.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token}).result["response_type"]
        == "SUCCESS"
    )
    for _ in range(3):
        web.call("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "bob", "password": "x"})

    sign_in(page, "op")
    expect(page).to_have_url(re.compile(r"/sessions/$"))
    api_sessions = set(
        UserSession.objects.filter(username__in=["alice", "bob"]).values_list("public_id", flat=True)
    )
    assert len(api_sessions) == 4
    assert session_ids(page) >= api_sessions
    expect(row(page, public_id(credentials="TOKEN"))).to_contain_text("via LOGIN_PASSWORD alice")
    expect(page.locator("#chart-types")).to_contain_text("API_KEY")
    expect(page.get_by_role("link", name="Terminate")).to_have_count(0)  # READ only
    shot(page, "dashboard")

    page.get_by_label("User").fill("alice")
    page.get_by_role("button", name="Apply filters").click()
    assert session_ids(page) == set(
        UserSession.objects.filter(username="alice").values_list("public_id", flat=True)
    )
    shot(page, "dashboard-filter-user")

    page.get_by_role("link", name="Reset").click()
    page.get_by_label("Credential type", exact=True).select_option("API_KEY")
    page.get_by_role("button", name="Apply filters").click()
    assert session_ids(page) == {public_id(credentials="API_KEY")}
    expect(page.locator("tbody")).to_contain_text("bob-ci")

    page.get_by_role("link", name="Reset").click()
    page.get_by_text("Advanced: raw query-filters").click()
    page.get_by_label("Query-filters (JSON)").fill('[["credentials_data.password", "=", "x"]]')
    page.get_by_role("button", name="Apply filters").click()
    error = page.locator("#id_query_error")
    expect(error).to_contain_text("filters[0]")
    expect(error).to_contain_text("unknown field")
    shot(page, "dashboard-raw-json-error")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/sessions/")
    shot(page, "dashboard-mobile")


def test_terminate_a_session_then_its_api_calls_fail_and_history_shows_it(
    page: Any, web: Server, create_user: Callable[..., Any], shot: Any
) -> None:
    create_user("op", roles=[Role.AUTH_SESSIONS_WRITE])
    create_user("alice")
    alice_cookie = web.login("alice")
    assert web.call("auth.me", cookie=alice_cookie).result["pw_name"] == "alice"
    target = public_id(username="alice")

    sign_in(page, "op")
    row(page, target).get_by_role("link", name=re.compile("Terminate")).click()
    expect(page.get_by_role("heading", name="Terminate this session?")).to_be_visible()
    shot(page, "session-terminate-confirm")
    page.get_by_role("button", name="Terminate session").click()
    expect(page).to_have_url(re.compile(r"/sessions/"))
    expect(page.get_by_role("status")).to_contain_text("was terminated")
    expect(row(page, target)).to_have_count(0)

    assert_api_refuses(web, alice_cookie)

    page.get_by_role("link", name="History").click()
    ended = row(page, target)
    expect(ended).to_contain_text("TERMINATED")
    expect(ended).to_contain_text("op")
    shot(page, "history")


def test_terminate_other_sessions_keeps_the_current_one(
    page: Any, web: Server, create_user: Callable[..., Any], shot: Any
) -> None:
    create_user("op", roles=[Role.AUTH_SESSIONS_WRITE])
    create_user("alice")
    cookies = [web.login("alice"), web.login("alice")]
    sign_in(page, "op")
    current = public_id(username="op")
    page.get_by_role("link", name="Terminate other sessions…").click()
    shot(page, "session-terminate-others-confirm")
    page.get_by_role("button", name="Terminate other sessions").click()
    expect(page.get_by_role("status")).to_contain_text("2 other sessions terminated")
    assert session_ids(page) == {current}
    expect(row(page, current)).to_contain_text("this device")
    for cookie in cookies:
        assert_api_refuses(web, cookie)
    page.reload()
    expect(page.get_by_role("heading", name="Sessions", exact=True)).to_be_visible()


def test_read_only_operator_cannot_post_a_termination(
    page: Any, web: Server, create_user: Callable[..., Any]
) -> None:
    create_user("reader", roles=[Role.AUTH_SESSIONS_READ])
    create_user("alice")
    cookie = web.login("alice")
    sign_in(page, "reader")
    expect(page.get_by_role("link", name="Terminate")).to_have_count(0)
    target = public_id(username="alice")
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(
        f"/sessions/{target}/terminate/",
        form={"csrfmiddlewaretoken": token, "confirm": "1"},
        headers={"Referer": page.url},
    )
    assert response.status == 403
    assert web.call("auth.me", cookie=cookie).result["pw_name"] == "alice"


# --- API keys, two-factor, audit ------------------------------------------------------------------------


def test_create_an_api_key_see_it_once_and_log_in_with_it(
    page: Any, web: Server, create_user: Callable[..., Any], shot: Any
) -> None:
    create_user("alice")
    sign_in(page, "alice")
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#id_name_error")).to_be_visible()
    page.get_by_label("Name").fill("laptop-backup")
    page.get_by_role("button", name="Create key").click()
    field = page.locator("#new-key")
    expect(field).to_be_visible()
    key = field.input_value()
    assert re.fullmatch(r"\d+-[A-Za-z0-9]{64}", key)
    copy = page.locator("button[data-copy]")
    expect(copy).to_be_visible()  # shown by the script only
    copy.click()
    expect(copy).to_have_text(re.compile("Copied|Press Ctrl\\+C"))
    shot(page, "api-key-created")

    login = web.call("auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": key})
    assert login.result["response_type"] == "SUCCESS"

    page.get_by_role("link", name="Done").click()
    expect(page.locator("#api-keys")).to_contain_text("laptop-backup")
    assert key not in page.content()
    assert key.split("-", 1)[1] not in page.content()
    shot(page, "api-keys")


def test_enrol_totp_by_reading_the_shown_secret(
    page: Any, create_user: Callable[..., Any], shot: Any
) -> None:
    create_user("alice")
    sign_in(page, "alice")
    page.get_by_role("link", name="Two-factor").click()
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.locator("svg.qr")).to_be_visible()
    shot(page, "totp-enrol")
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    page.get_by_label("Code from the app").fill(f"{TOTP(key).token():06d}")
    page.get_by_role("button", name="Confirm and turn on").click()
    expect(page.get_by_role("status")).to_contain_text("Two-factor sign-in is on")
    shot(page, "totp-enabled")
    assert TOTPDevice.objects.get(user__username="alice").confirmed

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "alice")
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()


def test_audit_and_admin_pages(page: Any, web: Server, create_user: Callable[..., Any], shot: Any) -> None:
    create_user("root", superuser=True)
    create_user("alice")
    web.login("alice")
    web.call("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": "x"})
    sign_in(page, "root")
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Succeeded").select_option("no")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#audit tbody")).to_contain_text("wrong password")
    shot(page, "audit")
    page.goto("/admin/sessions_app/usersession/")
    expect(page.locator("#result_list")).to_contain_text("alice")
    assert "secret_hash" not in page.content()
    shot(page, "admin-sessions")
