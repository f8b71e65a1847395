"""The sessions dashboard updates itself when sessions begin or end elsewhere (server-sent events)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from sessions_app.auth.roles import Role
from tests.browser.test_pages import public_id, row, sign_in
from tests.integration.servers import Server

pytestmark = pytest.mark.django_db(transaction=True)
expect = pytest.importorskip("playwright.sync_api").expect


def test_dashboard_rows_appear_and_disappear_live(
    page: Any, web: Server, create_user: Callable[..., Any], shot: Any
) -> None:
    create_user("op", roles=[Role.AUTH_SESSIONS_WRITE])
    create_user("alice")
    sign_in(page, "op")
    expect(page.locator("#live-status")).to_contain_text("Live updates on")
    url = page.url

    cookie = web.login("alice")  # a login through the JSON-RPC API, not this page
    alice = public_id(username="alice")
    expect(row(page, alice)).to_be_visible(timeout=5_000)
    expect(row(page, alice)).to_have_class(re.compile("live-new"))
    assert page.url == url  # updated in place, no navigation
    expect(page.locator("#live-table")).to_contain_text("2 rows on this page")
    shot(page, "dashboard-live-added")

    assert web.call("auth.logout", cookie=cookie).result is True
    expect(row(page, alice)).to_have_count(0, timeout=5_000)
    expect(page.locator("#live-status")).to_contain_text("table updated")
    shot(page, "dashboard-live-removed")


def test_the_dashboard_leaves_when_its_own_session_is_terminated(
    page: Any, web: Server, create_user: Callable[..., Any]
) -> None:
    create_user("op", roles=[Role.AUTH_SESSIONS_READ])
    create_user("admin", superuser=True)
    sign_in(page, "op")
    expect(page.locator("#live-status")).to_contain_text("Live updates on")
    admin = web.login("admin")
    assert web.call("auth.terminate_session", public_id(username="op"), cookie=admin).result is True
    expect(page).to_have_url(re.compile(r"/sign-in/"), timeout=5_000)


def test_the_event_stream_needs_a_session_and_the_read_role(
    web: Server, create_user: Callable[..., Any]
) -> None:
    create_user("alice")
    cookie = web.login("alice")
    for sent, status in ((None, 401), (cookie, 403)):
        connection = web.connect()
        headers = {"Cookie": f"__Host-sid={sent}"} if sent else {}
        connection.request("GET", "/sessions/events/", headers=headers)
        response = connection.getresponse()
        assert response.status == status
        assert response.getheader("Content-Type") == "application/json"
        connection.close()
