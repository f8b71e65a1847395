"""In Chromium, against the served configuration (ASGI): the banner of a new sign-in appears on an
open page without reload, "No — end it" ends the other device's session, and that device's open
page goes to the sign-in page by itself. Skipped without Chromium (see conftest.py)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sessions_app.models import EndReason, SignInNotice, UserSession
from tests.browser.test_pages import sign_in
from tests.notices.conftest import DESKTOP, IPHONE

pytestmark = pytest.mark.django_db(transaction=True)
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def device(chromium: Any, base_url: str) -> Iterator[Callable[[str], Any]]:
    """``device(ua)``: a page in a fresh browser context that sends that User-Agent."""
    contexts: list[Any] = []

    def make(user_agent: str) -> Any:
        context = chromium.new_context(base_url=base_url, user_agent=user_agent)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def test_the_banner_appears_live_and_no_ends_the_other_device(
    device: Callable[[str], Any],
    create_user: Callable[..., Any],
    shot: Any,  # noqa: F811
) -> None:
    create_user("alice")
    desktop = device(DESKTOP)
    refused: list[str] = []
    desktop.on("console", lambda message: refused.append(message.text) if "Refused" in message.text else None)
    sign_in(desktop, "alice")
    expect(desktop).to_have_url(re.compile(r"/me/sessions/"))
    url = desktop.url

    phone = device(IPHONE)
    sign_in(phone, "alice")
    expect(phone).to_have_url(re.compile(r"/me/sessions/"))
    assert SignInNotice.objects.count() == 1
    expect(phone.locator("#sign-in-notices [data-notice-id]")).to_have_count(0)  # not about itself

    banner = desktop.locator("#sign-in-notices")
    expect(banner).to_contain_text("New sign-in from Safari on iOS", timeout=5_000)
    expect(banner).to_contain_text("was this you?")
    assert desktop.url == url  # shown in place, without navigation
    shot(desktop, "notice-banner")

    desktop.get_by_role("button", name="No — end it").click()
    expect(desktop).to_have_url(re.compile(r"/password/"))
    ended = UserSession.objects.get(device_label="Safari on iOS")
    assert ended.end_reason == EndReason.TERMINATED
    # The phone's open page hears its session end and goes to the sign-in page by itself.
    expect(phone).to_have_url(re.compile(r"/sign-in/"), timeout=5_000)
    assert refused == []
