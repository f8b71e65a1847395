"""`sessions_app.devices.agents`: a User-Agent in words, parsed once and cached."""

from __future__ import annotations

import pytest

from sessions_app.devices import agents
from sessions_app.devices.agents import MAX_USER_AGENT, TRUENAS_CLIENT, UNKNOWN, clean, describe

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX_UBUNTU = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


@pytest.mark.parametrize(
    ("user_agent", "label", "kind"),
    [
        (IPHONE, "Safari on iOS", "browser"),
        (CHROME_LINUX, "Chrome on Linux", "browser"),
        (CHROME_LINUX.replace("Chrome/", "HeadlessChrome/"), "Chrome on Linux", "browser"),
        (FIREFOX_UBUNTU, "Firefox on Ubuntu", "browser"),
        ("curl/8.5.0", "curl 8.5", "program"),
        ("python-requests/2.32.3", "python-requests 2.32", "program"),
        ("Python/3.11 websockets/15.0.1", "Python websockets 15.0", "program"),
        ("Go-http-client/1.1", "Go-http-client 1.1", "program"),
        ("<script>alert(1)</script>", UNKNOWN, "unknown"),
        ("Mozilla/5.0 garbage", UNKNOWN, "unknown"),
        ("", UNKNOWN, "unknown"),
    ],
)
def test_labels(user_agent: str, label: str, kind: str) -> None:
    device = describe(clean(user_agent))
    assert (device.label, device.kind) == (label, kind)


def test_the_iphone_is_named_by_browser_system_and_device() -> None:
    device = describe(IPHONE)
    assert (device.browser, device.browser_version, device.os, device.device) == (
        "Safari",
        "17",
        "iOS",
        "iPhone",
    )
    assert device.signature == "Safari|iOS|iPhone"


def test_a_version_update_keeps_the_signature() -> None:
    assert describe(CHROME_LINUX).signature == describe(CHROME_LINUX.replace("131.0", "132.0")).signature


def test_a_websocket_without_user_agent_is_a_truenas_client_elsewhere_unknown() -> None:
    """The official TrueNAS client and midclt (websocket-client) send no User-Agent."""
    assert describe(None, websocket=True).label == TRUENAS_CLIENT
    assert describe(None).label == UNKNOWN


@pytest.mark.parametrize("value", [None, 5, b"curl/8", "   ", "\x00\x01"])
def test_clean_gives_none_for_nothing_usable(value: object) -> None:
    assert clean(value) is None


def test_a_huge_header_is_truncated_not_refused() -> None:
    kept = clean(CHROME_LINUX + "x" * 100_000)
    assert kept is not None
    assert len(kept) == MAX_USER_AGENT
    assert describe(kept).label == "Chrome on Linux"


def test_control_characters_are_dropped() -> None:
    assert clean("curl/8.5.0\r\nX-Injected: 1") == "curl/8.5.0X-Injected: 1"


def test_parsing_is_cached_per_header() -> None:
    agents._describe.cache_clear()
    describe(FIREFOX_UBUNTU)
    describe(FIREFOX_UBUNTU)
    info = agents._describe.cache_info()
    assert (info.misses, info.hits) == (1, 1)
