"""Playwright in Debian's headless Chromium against the served configuration (`tests.integration.servers`).

The server runs the production settings (DEBUG off): the session cookie is ``__Host-sid`` with
``Secure``, which Chromium keeps on ``http://127.0.0.1`` (loopback is a secure context), so no
cookie setting is relaxed. Static files are collected first and served by WhiteNoise. Tests commit
what the server must see (``transaction=True``); users get an Argon2 hash the server accepts.

Playwright's bundled browsers are never downloaded: Chromium comes from Debian (``.ci/run``
installs it); without ``/usr/bin/chromium`` (or ``$CHROMIUM``) these tests are skipped. Every test
saves screenshots under ``tests/artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.servers import PASSWORD_HASH, Server, free_port, running_servers

# The sync Playwright API keeps an asyncio loop on this thread; the ORM calls the tests make between
# browser steps are ordinary blocking calls, so Django's async-safety guard is lifted here only.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def web(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)
    tmp = tmp_path_factory.mktemp("browser-server")
    # The served configuration (bin/serve): the ASGI app on uvicorn workers, as the pages are served.
    with running_servers([[f"127.0.0.1:{free_port()}"]], tmp, asgi=True, SESSIONS_LOGIN_RATE="0") as (
        server,
    ):
        yield server


@pytest.fixture
def base_url(web: Server) -> str:
    return f"http://{web.bind}"


@pytest.fixture
def page(chromium: Any, base_url: str) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; the default timeout is short: pages are local."""
    context = chromium.new_context(base_url=base_url, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(10_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """``shot(page, "dashboard")`` saves ``tests/artifacts/screenshots/<name>.png`` (full page)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str, full_page: bool = True) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


@pytest.fixture
def create_user(django_user_model: Any) -> Callable[..., Any]:
    """``create_user("alice", roles=[...], superuser=False)``: a user the live server can sign in."""
    from sessions_app.roles import grant

    def create(username: str, *, roles: Any = (), superuser: bool = False) -> Any:
        user = django_user_model(username=username, is_superuser=superuser, is_staff=superuser)
        user.password = PASSWORD_HASH
        user.save()
        for role in roles:
            grant(user, role)
        return user

    return create
