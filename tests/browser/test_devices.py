"""Devices and places in the browser (issue 16's first acceptance bullet), in Debian's Chromium.

An iPhone and a desktop sign in as the same user: My sessions names both devices in words and marks
"this device"; the desktop ends the iPhone's session with the new-sign-in banner's "No — end it" (or
My sessions' End button), and the iPhone's next page is the sign-in page saying why. The server has a GeoIP database (written here with ``mmdb-writer``, nothing downloaded)
and believes ``X-Forwarded-For`` from loopback, so each browser can come "from" a public address.
A browser whose User-Agent and place are markup sees them as text on every page, and nothing runs.

Screenshots (1440×900 desktop, 390×844 phone) go to ``$DEVICE_SHOTS`` (default ``/tmp/shots``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sessions_app.auth.roles import Role
from sessions_app.models import UserSession
from tests.conftest import PASSWORD
from tests.devices.geoip import PLACES, write_geoip
from tests.devices.test_agents import CHROME_LINUX, IPHONE
from tests.integration.servers import Server, free_port, running_servers

pytestmark = pytest.mark.django_db(transaction=True)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

SHOTS = Path(os.environ.get("DEVICE_SHOTS", "/tmp/shots"))
DESKTOP = {"viewport": {"width": 1440, "height": 900}, "user_agent": CHROME_LINUX}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "user_agent": IPHONE,
    "is_mobile": True,
    "has_touch": True,
}
LONDON, BERLIN, HOSTILE = "81.2.69.10", "2a01:4f8:100::7", "5.6.7.8"
SCRIPT_AGENT = "<script>alert(1)</script>"
SCRIPT_CITY = "<script>alert(2)</script>"
IMG_COUNTRY = '<img src=x onerror="alert(3)">'
ENDED = "Your session was ended (terminated from another session)."
#: Reports every Content-Security-Policy violation of the page (an inline script that got through).
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
"""


@pytest.fixture(scope="module")
def web(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The served configuration, with places: GeoIP on, and loopback a trusted proxy."""
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)
    tmp = tmp_path_factory.mktemp("devices-server")
    geoip = write_geoip(tmp / "city.mmdb", places={**PLACES, "5.6.7.0/24": ("XX", IMG_COUNTRY, SCRIPT_CITY)})
    with running_servers(
        [[f"127.0.0.1:{free_port()}"]],
        tmp,
        asgi=True,
        SESSIONS_LOGIN_RATE="0",
        SESSIONS_GEOIP_PATH=str(geoip),
        SESSIONS_TRUSTED_PROXIES="127.0.0.1",
    ) as (server,):
        yield server


@pytest.fixture
def browser(chromium: Any, base_url: str) -> Iterator[Callable[..., Any]]:
    """``browser(address, **context_options)``: a page in a new context (its own cookies) whose
    requests come from ``address``; every dialog is recorded in ``page.dialogs`` and dismissed."""
    contexts: list[Any] = []

    def open_page(address: str, **options: Any) -> Any:
        context = chromium.new_context(
            base_url=base_url, extra_http_headers={"X-Forwarded-For": address}, **options
        )
        context.set_default_timeout(10_000)
        context.add_init_script(WATCH)
        contexts.append(context)
        page = context.new_page()
        page.dialogs = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        return page

    yield open_page
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, username: str) -> None:
    page.goto("/sign-in/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/(sessions|me/sessions)/$"))


def session_row(page: Any, device: str) -> Any:
    return page.locator("tbody tr[data-session-id]").filter(has_text=device)


def nothing_ran(page: Any) -> None:
    assert page.dialogs == []
    assert page.evaluate("() => window.__violations") == []


def end_from_banner(desktop: Any) -> None:
    """The desktop answers the new-sign-in banner about the iPhone: "No — end it"."""
    desktop.goto("/me/sessions/")
    banner = desktop.locator("#sign-in-notices")
    expect(banner).to_contain_text("New sign-in from Safari on iOS in Berlin, Germany")
    banner.get_by_role("button", name="No — end it").click()
    expect(desktop).to_have_url(re.compile(r"/password/$"))  # whoever it was knew the password
    expect(desktop.get_by_role("status")).to_contain_text("The sign-in from Safari on iOS was ended")


def end_from_my_sessions(desktop: Any) -> None:
    """The desktop ends the iPhone's session: My sessions' End button, then the confirmation."""
    desktop.goto("/me/sessions/")
    session_row(desktop, "Safari on iOS").get_by_role("link", name="End").click()
    desktop.get_by_role("button", name="Terminate session").click()
    expect(desktop.get_by_role("status")).to_contain_text("was terminated")


def test_iphone_and_desktop_are_named_and_the_ended_one_is_told_at_sign_in(
    browser: Callable[..., Any], create_user: Callable[..., Any]
) -> None:
    create_user("alice", roles=[Role.AUTH_SESSIONS_READ])
    desktop = browser(LONDON, **DESKTOP)
    phone = browser(BERLIN, **PHONE)
    sign_in(desktop, "alice")
    sign_in(phone, "alice")

    for page, mine, other in (
        (desktop, "Chrome on Linux", "Safari on iOS"),
        (phone, "Safari on iOS", "Chrome on Linux"),
    ):
        page.goto("/me/sessions/")
        current = page.locator("tr.current")
        expect(current).to_have_count(1)
        expect(current).to_contain_text(mine)
        expect(current).to_contain_text("this device")
        expect(session_row(page, other)).to_have_count(1)
        expect(session_row(page, other)).not_to_contain_text("this device")
    expect(session_row(desktop, "Safari on iOS")).to_contain_text("Berlin, Germany")
    expect(session_row(desktop, "Chrome on Linux")).to_contain_text("London, United Kingdom")
    expect(session_row(desktop, "Safari on iOS").locator("time").first).to_have_attribute(
        "title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
    )
    expect(session_row(desktop, "Safari on iOS").locator("time").first).to_contain_text(
        re.compile(r"just now|seconds? ago")
    )
    shot(desktop, "my-sessions-desktop-1440x900")
    shot(phone, "my-sessions-phone-390x844")
    for page, name in ((desktop, "dashboard-desktop-1440x900"), (phone, "dashboard-phone-390x844")):
        page.goto("/sessions/")
        expect(page.locator("tr.current")).to_contain_text("this device")
        expect(page.locator("tbody tr[data-session-id]")).to_have_count(2)
        shot(page, name)

    phone.goto("/me/sessions/")
    end_from_banner(desktop)
    assert UserSession.objects.get(device_label="Safari on iOS").end_reason == "TERMINATED"
    # The user's next click; or the page's own live reload (the notice stream's "end") got there
    # first and the click was interrupted by it: either way the phone lands on the sign-in page.
    open_or_follow(phone, "/me/sessions/")
    expect(phone).to_have_url(re.compile(r"/sign-in/\?next=%2Fme%2Fsessions%2F$"))
    expect(phone.get_by_role("status")).to_have_text(ENDED)
    shot(phone, "sign-in-after-ended-phone-390x844")
    phone.reload()  # the sign-in page itself says nothing: the message came with the redirect
    expect(phone.get_by_role("status")).to_have_count(0)
    nothing_ran(desktop)
    nothing_ran(phone)


def test_a_user_agent_and_place_made_of_markup_are_text_on_every_page(
    browser: Callable[..., Any], create_user: Callable[..., Any]
) -> None:
    create_user("root", superuser=True)
    ended = browser(HOSTILE, user_agent=SCRIPT_AGENT)
    sign_in(ended, "root")
    ended.get_by_role("button", name="Sign out").click()
    page = browser(HOSTILE, user_agent=SCRIPT_AGENT, viewport={"width": 1440, "height": 900})
    sign_in(page, "root")
    place = f"{SCRIPT_CITY}, {IMG_COUNTRY}"
    for path in ("/sessions/", "/me/sessions/"):
        page.goto(path)
        current = page.locator("tr.current")
        expect(current).to_contain_text(f"Unknown device this device{place} · ")
        expect(current.locator(".device")).to_have_attribute("title", SCRIPT_AGENT)
        nothing_ran(page)
    page.goto("/sessions/history/")
    expect(page.locator("tbody tr[data-session-id]").first).to_contain_text(place)
    nothing_ran(page)
    page.goto("/audit/")
    expect(page.locator("#audit").get_by_text(f"Unknown device · {place}").first).to_be_visible()
    nothing_ran(page)
    shot(page, "hostile-audit")
    page.goto("/admin/sessions_app/usersession/")
    expect(page.locator("#result_list").get_by_text(place).first).to_be_visible()
    nothing_ran(page)
    shot(page, "hostile-admin-list")
    session = UserSession.objects.filter(ended_at__isnull=True, username="root").latest("pk")
    page.goto(f"/admin/sessions_app/usersession/{session.pk}/change/")
    expect(page.get_by_text(SCRIPT_AGENT, exact=True)).to_be_visible()
    expect(page.get_by_text(SCRIPT_CITY, exact=True)).to_be_visible()
    nothing_ran(page)
    shot(page, "hostile-admin-change")


def open_or_follow(page: Any, path: str) -> None:
    """``page.goto(path)``, unless a navigation the page started itself interrupts it."""
    try:
        page.goto(path)
    except sync_api.Error as exc:
        if "interrupted by another navigation" not in str(exc):
            raise
        page.wait_for_load_state()


def test_a_live_dashboard_whose_session_ends_reloads_into_the_message(
    browser: Callable[..., Any], create_user: Callable[..., Any]
) -> None:
    create_user("alice", roles=[Role.AUTH_SESSIONS_READ])
    desktop = browser(LONDON, **DESKTOP)
    phone = browser(BERLIN, **PHONE)
    sign_in(desktop, "alice")
    sign_in(phone, "alice")
    phone.goto("/sessions/")
    expect(phone.locator("#live-status")).to_contain_text("Live updates on")
    end_from_my_sessions(desktop)
    # The table refresh (a fetch) and the reload that follows the "end" event: the message survives
    # the first and is shown by the second.
    expect(phone).to_have_url(re.compile(r"/sign-in/\?next=%2Fsessions%2F$"))
    expect(phone.get_by_role("status")).to_have_text(ENDED)
    nothing_ran(phone)
