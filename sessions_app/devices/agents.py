"""A session's device, from its ``User-Agent``: parsed once, at login, with ``ua-parser`` (its
prebuilt rules, package ``ua-parser-builtins``).

`describe` gives browser, system and device families and a label in words: "Chrome on Linux",
"Safari on iOS", "Firefox on Ubuntu". Programmatic clients are named as such: "curl 8.5",
"python-requests 2.32", "Python websockets 15.0" (pytruenas, aiotruenas), and a WebSocket login that
sends no ``User-Agent`` at all -- the official TrueNAS client and ``midclt`` send none -- is a
"TrueNAS API client". A missing ``User-Agent`` elsewhere, or one nothing recognises, is "Unknown
device". The header is capped at `MAX_USER_AGENT` characters before anything reads it (a 100 KB
header is truncated, never refused); results are cached per distinct header, so a fleet of the same
browser costs one parse.

The *signature* (browser family | system family | device family) is what known devices and new
sign-in notices compare: versions change with every update and must not make a device "new".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ua_parser import parse

#: Longest ``User-Agent`` kept and parsed, in characters.
MAX_USER_AGENT = 512
UNKNOWN = "Unknown device"
TRUENAS_CLIENT = "TrueNAS API client"

#: Mobile and embedded variants named as their desktop family (the system says where they run).
_BROWSER_NAMES = {
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Chrome",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
    "HeadlessChrome": "Chrome",
    "Chromium": "Chromium",
    "Python Requests": "python-requests",
}
#: Command-line and library clients: named with their version, "on" no system.
_PROGRAMS = {"curl", "Wget", "python-requests", "Python-urllib", "Go-http-client", "okhttp", "HTTPie"}
_WEBSOCKETS = re.compile(r"^Python/(?P<python>[\d.]+) websockets/(?P<version>[\d.]+)")
_GENERIC_PROGRAM = re.compile(r"^(?P<name>[A-Za-z][\w.-]{0,40})/(?P<version>\d+(?:\.\d+)?)")


@dataclass(frozen=True, slots=True)
class Device:
    """A parsed ``User-Agent``. ``kind``: ``browser``, ``program`` or ``unknown``."""

    browser: str | None = None
    browser_version: str | None = None
    os: str | None = None
    device: str | None = None
    kind: str = "unknown"
    label: str = UNKNOWN

    @property
    def signature(self) -> str:
        """Browser, system and device families: what "the same device" means for notices."""
        return "|".join((self.browser or "", self.os or "", self.device or ""))


def clean(user_agent: object) -> str | None:
    """The header as kept: a string, capped, control characters dropped; None when empty."""
    if not isinstance(user_agent, str):
        return None
    text = "".join(c for c in user_agent[:MAX_USER_AGENT] if c.isprintable()).strip()
    return text or None


def describe(user_agent: str | None, *, websocket: bool = False) -> Device:
    """The device of a login that sent ``user_agent`` (already `clean`ed, or None)."""
    if user_agent is None:
        if websocket:
            return Device(browser=TRUENAS_CLIENT, kind="program", label=TRUENAS_CLIENT)
        return Device()
    return _describe(user_agent)


@lru_cache(maxsize=1024)
def _describe(user_agent: str) -> Device:
    found = _WEBSOCKETS.match(user_agent)
    if found:
        version = _short(found["version"])
        return Device("Python websockets", version, kind="program", label=f"Python websockets {version}")
    parsed = parse(user_agent)
    agent, system, hardware = parsed.user_agent, parsed.os, parsed.device
    if agent is None or agent.family == "Other":
        generic = _GENERIC_PROGRAM.match(user_agent)
        if generic and not user_agent.startswith("Mozilla/"):
            version = _short(generic["version"])
            return Device(generic["name"], version, kind="program", label=f"{generic['name']} {version}")
        return Device()
    browser = _BROWSER_NAMES.get(agent.family, agent.family)
    browser_version = ".".join(part for part in (agent.major, agent.minor) if part) or None
    if browser in _PROGRAMS:
        label = f"{browser} {browser_version}" if browser_version else browser
        return Device(browser, browser_version, kind="program", label=label)
    os_name = system.family if system is not None and system.family != "Other" else None
    device = hardware.family if hardware is not None and hardware.family not in ("Other", "Spider") else None
    label = f"{browser} on {os_name}" if os_name else browser
    return Device(browser, agent.major, os_name, device, kind="browser", label=label)


def _short(version: str) -> str:
    """``8.5.0`` -> ``8.5``."""
    return ".".join(version.split(".")[:2])
