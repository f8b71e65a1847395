"""Devices and places on the browser pages (issue 16, "Where it shows"), and the sign-in page after a
session was ended elsewhere.

Every page that shows sessions shows the device and place in words, "this device" on the caller's
own session and times relative with the exact time on hover; whatever the client chose (its
User-Agent, the place names a database gives for its address) is text, never markup.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions_app.auth.clients import Client as Peer
from sessions_app.auth.roles import Role
from sessions_app.devices.agents import MAX_USER_AGENT, UNKNOWN
from sessions_app.devices.places import Place
from sessions_app.middleware import session_cookie_name
from sessions_app.models import AuditEvent, AuditRecord, Credentials, UserSession
from sessions_app.services.session_ending import session_end
from sessions_app.services.sessions import session_create
from sessions_app.templatetags.registry import ago
from tests.conftest import PASSWORD
from tests.devices.test_agents import CHROME_LINUX, IPHONE

SCRIPT_AGENT = "<script>alert(1)</script>"
SCRIPT_CITY = "<script>alert(2)</script>"
IMG_COUNTRY = '<img src=x onerror="alert(3)">'
SCRIPT_LABEL = "<script>alert(4)</script> on <b>OS</b>"
#: Everything the hostile values could become if they were not escaped.
RAW = (SCRIPT_AGENT, SCRIPT_CITY, IMG_COUNTRY, "<script>alert(4)</script>", "<b>OS</b>")
ENDED = "Your session was ended"


@pytest.fixture(autouse=True)
def _fresh_chart_cache() -> None:
    cache.clear()  # the dashboard keeps its chart aggregates for 30 s


@pytest.fixture
def places(monkeypatch: pytest.MonkeyPatch) -> dict[str, Place]:
    """A stand-in for the GeoIP lookup of a login: ``places["10.1.2.3"] = Place(...)``."""
    known: dict[str, Place] = {}
    monkeypatch.setattr("sessions_app.services.sessions.locate", lambda address: known.get(address or ""))
    return known


class Browser:
    """Django's test client with CSRF enforced and a User-Agent, signed in through the sign-in page."""

    def __init__(
        self, username: str, *, user_agent: str | None = None, remote_addr: str = "127.0.0.1"
    ) -> None:
        headers = {"HTTP_USER_AGENT": user_agent} if user_agent is not None else {}
        self.username = username
        self.http = Client(enforce_csrf_checks=True, REMOTE_ADDR=remote_addr, **headers)
        self.http.get("/sign-in/")
        response = self.post("/sign-in/", {"username": username, "password": PASSWORD, "next": "/"})
        assert response.status_code == 302, response.content[:500]
        self.session = UserSession.objects.filter(username=username).latest("pk")

    def get(self, path: str, **extra: Any) -> Any:
        return self.http.get(path, **extra)

    def post(self, path: str, data: dict[str, Any] | None = None) -> Any:
        token = self.http.cookies["csrftoken"].value
        return self.http.post(path, {"csrfmiddlewaretoken": token, **(data or {})})

    def page(self, path: str) -> str:
        response = self.get(path)
        assert response.status_code == 200, (path, response.status_code)
        return str(response.content.decode())


@pytest.fixture
def operator(make_user: Any) -> Callable[..., Browser]:
    """``operator(user_agent=...)``: "op", who may read and end every session and read the audit."""

    def make(**kwargs: Any) -> Browser:
        make_user("op", roles=[Role.AUTH_SESSIONS_READ, Role.AUTH_SESSIONS_WRITE, Role.AUDIT_READ])
        return Browser("op", **kwargs)

    return make


def api_login(username: str, *, user_agent: str | None, address: str = "10.1.2.3") -> UserSession:
    """A session opened the way an API client opens one (its headers, its address)."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username=username)
    client = Peer(address=address, port=4000, user_agent=user_agent)
    return session_create(credentials=Credentials.LOGIN_PASSWORD, client=client, user=user).session


def row_of(html: str, public_id: str) -> str:
    found = re.search(rf'<tr data-session-id="{re.escape(public_id)}"[^>]*>(.*?)</tr>', html, re.S)
    assert found is not None, public_id
    return found.group(1)


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


# --- device, place, "this device", relative times ------------------------------------------------------


def test_every_session_page_shows_device_and_place_in_words(operator: Any, places: dict[str, Place]) -> None:
    places["10.1.2.3"] = Place(country="Germany", city="Berlin", country_code="DE")
    op = operator(user_agent=CHROME_LINUX)
    phone = api_login("op", user_agent=IPHONE)
    dashboard = op.page("/sessions/")
    assert "Safari on iOS" in text(row_of(dashboard, phone.public_id))
    assert "Berlin, Germany · 10.1.2.3:4000" in text(row_of(dashboard, phone.public_id))
    mine = row_of(dashboard, op.session.public_id)
    assert "Chrome on Linux" in text(mine)
    assert "127.0.0.1" in text(mine)  # no place known: the address, as before
    assert "this device" in text(mine)
    assert "this device" not in text(row_of(dashboard, phone.public_id))
    my_sessions = op.page("/me/sessions/")
    assert "this device" in text(row_of(my_sessions, op.session.public_id))
    assert "Safari on iOS" in text(row_of(my_sessions, phone.public_id))
    session_end(session=phone, reason="TERMINATED", actor="op")
    history = op.page("/sessions/history/")
    assert "Safari on iOS" in text(row_of(history, phone.public_id))
    assert "Berlin, Germany" in text(row_of(history, phone.public_id))


def test_the_user_agent_is_the_tooltip_of_the_device(operator: Any) -> None:
    op = operator(user_agent=IPHONE)
    cell = row_of(op.page("/me/sessions/"), op.session.public_id)
    assert f'<span class="device" title="{IPHONE}">Safari on iOS</span>' in cell


def test_sessions_from_before_devices_were_kept_show_their_origin(operator: Any) -> None:
    op = operator()
    old = api_login("op", user_agent=IPHONE)
    UserSession.objects.filter(pk=old.pk).update(
        user_agent=None, client_address=None, device_label=None, device_browser=None, device_os=None
    )
    cell = text(row_of(op.page("/sessions/"), old.public_id))
    assert "10.1.2.3:4000" in cell
    assert "Safari" not in cell
    assert UNKNOWN not in cell


def test_times_are_relative_with_the_exact_time_on_hover(operator: Any) -> None:
    op = operator(user_agent=IPHONE)
    two_minutes_ago = timezone.now() - dt.timedelta(minutes=2, seconds=5)
    UserSession.objects.filter(pk=op.session.pk).update(created_at=two_minutes_ago)
    cell = row_of(op.page("/me/sessions/"), op.session.public_id)
    exact = two_minutes_ago.astimezone(dt.UTC)
    assert (
        f'<time datetime="{exact.isoformat(timespec="seconds")}" '
        f'title="{exact:%Y-%m-%d %H:%M:%S} UTC">2 minutes ago</time>'
    ) in cell


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (dt.timedelta(seconds=3), "just now"),
        (dt.timedelta(seconds=45), "45 seconds ago"),
        (dt.timedelta(seconds=61), "1 minute ago"),
        (dt.timedelta(minutes=59, seconds=59), "59 minutes ago"),
        (dt.timedelta(hours=5, minutes=1), "5 hours ago"),
        (dt.timedelta(days=1, hours=2), "1 day ago"),
        (dt.timedelta(days=40), "40 days ago"),
        (-dt.timedelta(minutes=5, seconds=30), "in 5 minutes"),
    ],
)
def test_relative_times_in_words(delta: dt.timedelta, words: str) -> None:
    assert f">{words}</time>" in ago(timezone.now() - delta)


def test_the_audit_shows_the_device_and_place_of_a_sign_in(operator: Any, places: dict[str, Place]) -> None:
    places["10.1.2.3"] = Place(country="Germany", city="Berlin", country_code="DE")
    op = operator(user_agent=CHROME_LINUX)
    api_login("op", user_agent=IPHONE)
    audit = text(op.page("/audit/"))
    assert "Safari on iOS · Berlin, Germany" in audit
    assert "Chrome on Linux" in audit


def test_device_columns_cost_one_query_per_page_not_one_per_row(operator: Any) -> None:
    op = operator(user_agent=CHROME_LINUX)

    def queries(path: str) -> int:
        cache.clear()  # the charts' aggregates: computed on both sides
        with CaptureQueriesContext(connection) as captured:
            op.page(path)
        return len(captured)

    api_login("op", user_agent=IPHONE)
    before = {path: queries(path) for path in ("/sessions/", "/me/sessions/", "/audit/")}
    for _ in range(8):
        api_login("op", user_agent=IPHONE)
    after = {path: queries(path) for path in ("/sessions/", "/me/sessions/", "/audit/")}
    assert after == before


def test_the_admin_shows_device_and_place(make_user: Any, places: dict[str, Place], operator: Any) -> None:
    make_user("root", superuser=True)
    admin = Browser("root", user_agent=CHROME_LINUX)
    places["10.1.2.3"] = Place(country="Germany", city="Berlin", country_code="DE")
    make_user("alice")
    phone = api_login("alice", user_agent=IPHONE)
    listing = text(admin.page("/admin/sessions_app/usersession/"))
    assert "Safari on iOS" in listing
    assert "Berlin, Germany · 10.1.2.3" in listing
    assert "Chrome on Linux" in listing
    change = text(admin.page(f"/admin/sessions_app/usersession/{phone.pk}/change/"))
    assert IPHONE in change
    assert "iPhone" in change


# --- hostile, huge, missing and garbage User-Agents --------------------------------------------------------


def test_user_agent_and_place_are_escaped_on_every_page(make_user: Any, places: dict[str, Place]) -> None:
    places["127.0.0.1"] = Place(country=IMG_COUNTRY, city=SCRIPT_CITY)
    places["10.1.2.3"] = Place(country=IMG_COUNTRY, city=SCRIPT_CITY)
    make_user("root", superuser=True)
    hostile = Browser("root", user_agent=SCRIPT_AGENT)  # signs in with it: the page pathway
    other = api_login("root", user_agent=SCRIPT_AGENT)
    UserSession.objects.filter(pk=other.pk).update(device_label=SCRIPT_LABEL)  # a parser's odd family
    ended = api_login("root", user_agent=SCRIPT_AGENT)
    UserSession.objects.filter(pk=ended.pk).update(device_label=SCRIPT_LABEL)
    session_end(session=ended, reason="TERMINATED", actor="root")
    pages = {
        "/sessions/": True,
        "/sessions/history/": True,
        "/me/sessions/": True,
        "/audit/": True,
        "/admin/sessions_app/usersession/": True,
        f"/admin/sessions_app/usersession/{other.pk}/change/": True,
        f"/me/sessions/{other.public_id}/terminate/": False,  # shows the session, not its device
        f"/sessions/{other.public_id}/terminate/": False,
    }
    for path, shows_device in pages.items():
        html = hostile.page(path)
        for raw in RAW:
            assert raw not in html, (path, raw)
        if shows_device:
            assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html, path  # the place, as text
            assert "&lt;script&gt;alert(4)&lt;/script&gt; on &lt;b&gt;OS&lt;/b&gt;" in html, path
    for path in ("/sessions/", "/me/sessions/"):
        cell = row_of(hostile.page(path), hostile.session.public_id)
        assert 'title="&lt;script&gt;alert(1)&lt;/script&gt;"' in cell, path
        assert UNKNOWN in text(cell), path


def test_a_100_kb_user_agent_signs_in_and_is_kept_truncated(make_user: Any) -> None:
    make_user("alice")
    huge = CHROME_LINUX + " " + "x" * 100_000
    alice = Browser("alice", user_agent=huge)
    assert alice.session.user_agent == huge[:MAX_USER_AGENT]
    assert alice.session.device_label == "Chrome on Linux"
    cell = row_of(alice.page("/me/sessions/"), alice.session.public_id)
    assert "Chrome on Linux" in text(cell)
    assert len(cell) < 2000


@pytest.mark.parametrize("user_agent", [None, "", "garbage", "!!!###", "\x00\x01\x02", "Mozilla/5.0 ("])
def test_a_missing_or_garbage_user_agent_is_an_unknown_device(make_user: Any, user_agent: str | None) -> None:
    make_user("alice")
    alice = Browser("alice", user_agent=user_agent)
    assert alice.session.device_label == UNKNOWN
    assert UNKNOWN in text(row_of(alice.page("/me/sessions/"), alice.session.public_id))


# --- the sign-in page after a session was ended elsewhere ---------------------------------------------------


def sign_in_page_after(browser: Browser, path: str = "/me/sessions/") -> tuple[Any, str]:
    """The answer to ``path`` (a redirect to sign in) and the sign-in page it leads to."""
    response = browser.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/sign-in/?next=")
    return response, text(browser.page(response["Location"]))


def test_a_session_ended_from_another_one_is_told_why_at_sign_in(make_user: Any) -> None:
    make_user("alice")
    phone = Browser("alice", user_agent=IPHONE)
    desktop = Browser("alice", user_agent=CHROME_LINUX)
    assert (
        desktop.post(f"/me/sessions/{phone.session.public_id}/terminate/", {"confirm": "1"}).status_code
        == 302
    )
    response, page = sign_in_page_after(phone)
    assert "Your session was ended (terminated from another session)." in page
    assert session_cookie_name() not in response.cookies  # kept: every page says it until sign-in
    _, again = sign_in_page_after(phone)  # e.g. a live page reloaded first, then the user clicked
    assert "Your session was ended (terminated from another session)." in again


@pytest.mark.parametrize(
    ("end", "words"),
    [
        (lambda s: session_end(session=s, reason="TERMINATED", actor="op"), "terminated by an administrator"),
        (lambda s: session_end(session=s, reason="TERMINATED"), "terminated"),
        (
            lambda s: UserSession.objects.filter(pk=s.pk).update(expires_at=timezone.now()),
            "it reached its time limit",
        ),
        (lambda s: session_end(session=s, reason="PASSWORD_CHANGED"), "the password was changed"),
        (lambda s: session_end(session=s, reason="PARENT_ENDED"), "the session it came from ended"),
    ],
)
def test_the_sign_in_page_says_why_in_words(make_user: Any, end: Any, words: str) -> None:
    make_user("alice")
    alice = Browser("alice", user_agent=IPHONE)
    end(alice.session)
    _, page = sign_in_page_after(alice, "/")
    assert f"Your session was ended ({words})." in page
    assert "op" not in page.split(ENDED)[1].split(".")[0]  # never who


def test_a_cookie_that_names_no_session_is_told_nothing(make_user: Any) -> None:
    make_user("alice")
    alice = Browser("alice", user_agent=IPHONE)
    stranger = Client(REMOTE_ADDR="127.0.0.1")
    stranger.cookies[session_cookie_name()] = "x" * 43  # forged, or guessed
    response = stranger.get("/me/sessions/")
    assert response.status_code == 302
    assert ENDED not in text(stranger.get(response["Location"]).content.decode())
    session_end(session=alice.session, reason="TERMINATED", actor="alice")
    stranger.cookies[session_cookie_name()] = alice.session.public_id  # the public id is no credential
    assert ENDED not in text(stranger.get(stranger.get("/")["Location"]).content.decode())


def test_the_dashboard_background_refresh_leaves_the_message_to_the_reload(make_user: Any) -> None:
    make_user("alice")
    alice = Browser("alice", user_agent=IPHONE)
    session_end(session=alice.session, reason="TERMINATED", actor="alice")
    fetched = alice.get("/me/sessions/", HTTP_SEC_FETCH_MODE="cors")
    assert fetched.status_code == 302
    assert session_cookie_name() not in fetched.cookies  # kept for the navigation that follows
    assert ENDED not in text(alice.page(fetched["Location"]))
    _, page = sign_in_page_after(alice)
    assert "Your session was ended (terminated from another session)." in page


def test_signing_in_again_after_the_message_works(make_user: Any) -> None:
    make_user("alice")
    alice = Browser("alice", user_agent=IPHONE)
    first = alice.session
    session_end(session=first, reason="TERMINATED", actor="alice")
    sign_in_page_after(alice)
    again = Browser("alice", user_agent=IPHONE)
    assert again.session.pk != first.pk
    assert AuditRecord.objects.filter(event=AuditEvent.AUTHENTICATION, success=True).count() == 2
