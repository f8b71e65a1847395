"""Fixtures of the new-sign-in notice tests: two devices, browsers and JSON-RPC clients that send a
User-Agent, logins whose after-commit work (the email) runs, and GeoIP replaced by a known place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from sessions_app.devices.places import Place
from sessions_app.models import UserSession
from tests.conftest import PASSWORD, RPC

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
DESKTOP = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
#: Two documentation networks (RFC 5737): different /24s.
HOME, AWAY = "203.0.113.5", "198.51.100.7"


@pytest.fixture(autouse=True)
def _notices_on(settings: Any) -> None:
    settings.SESSIONS_NOTICE_DAYS = 90
    settings.SESSIONS_NOTICE_API_KEYS = True
    settings.SESSIONS_BASE_URL = ""
    settings.SESSIONS_GEOIP_PATH = ""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def commit(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """``commit(fn, *args)``: call ``fn`` and run what it left for after the commit (the emails)."""

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run


@pytest.fixture
def rpc_login(commit: Callable[..., Any]) -> Callable[..., RPC]:
    """``rpc_login("alice", ua=IPHONE, address=AWAY)``: a JSON-RPC client signed in by password."""

    def login(username: str = "alice", *, ua: str | None = DESKTOP, address: str = HOME, **extra: Any) -> RPC:
        headers = {"HTTP_USER_AGENT": ua} if ua is not None else {}
        client = RPC(remote_addr=address, **headers, **extra)
        answer = commit(client.login, username)
        assert answer["response_type"] == "SUCCESS", answer
        return client

    return login


class Browser:
    """Django's test client with CSRF enforced and a User-Agent, signed in through the sign-in page."""

    def __init__(self, username: str, *, ua: str, address: str, password: str = PASSWORD) -> None:
        self.username = username
        self.http = Client(enforce_csrf_checks=True, REMOTE_ADDR=address, HTTP_USER_AGENT=ua)
        self.http.get("/sign-in/")
        self.response = self.post(
            "/sign-in/", {"username": username, "password": password, "next": "/me/sessions/"}
        )
        self.session = UserSession.objects.order_by("-pk").first()

    @property
    def token(self) -> str:
        return str(self.http.cookies["csrftoken"].value)

    def get(self, path: str, **extra: Any) -> Any:
        return self.http.get(path, **extra)

    def post(self, path: str, data: dict[str, Any] | None = None, **extra: Any) -> Any:
        return self.http.post(path, {"csrfmiddlewaretoken": self.token, **(data or {})}, **extra)


@pytest.fixture
def browser(commit: Callable[..., Any]) -> Callable[..., Browser]:
    """``browser("alice", ua=IPHONE, address=AWAY)``: signed in through the page (emails sent)."""

    def make(username: str = "alice", *, ua: str = DESKTOP, address: str = HOME) -> Browser:
        return commit(Browser, username, ua=ua, address=address)

    return make


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Place:
    """GeoIP as if configured: every address is in Berlin (the network is then the country)."""
    place = Place(country="Germany", city="Berlin", country_code="DE")
    monkeypatch.setattr("sessions_app.services.notices.locate", lambda address: place)
    return place
