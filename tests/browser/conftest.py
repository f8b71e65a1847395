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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import PASSWORD
from tests.integration.servers import PASSWORD_HASH, Server, free_port, running_servers

# The sync Playwright API keeps an asyncio loop on this thread; the ORM calls the tests make between
# browser steps are ordinary blocking calls, so Django's async-safety guard is lifted here only.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"

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
    from sessions_app.auth.roles import grant

    def create(username: str, *, roles: Any = (), superuser: bool = False) -> Any:
        user = django_user_model(username=username, is_superuser=superuser, is_staff=superuser)
        user.password = PASSWORD_HASH
        user.save()
        for role in roles:
            grant(user, role)
        return user

    return create


# --- every page at a desk and on a phone (issue 17: test_layout.py, test_axe.py) ---------------------

#: The two screens of issue 17's acceptance: a desk and a phone (CSS pixels).
VIEWPORTS: dict[str, dict[str, Any]] = {
    "desk": {"viewport": {"width": 1440, "height": 900}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
LONG_USER = "svc_replication.offsite-backup.eu-west-1.operator"
LONG_KEY = "nightly-offsite-replication-of-tank/datasets-to-rsync.net-zfs-send-receive-with-raw-encryption"
LONG_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.6778.33 "
    "Safari/537.36 ReplicationDashboard/4.2.0-rc.1+build.20260501.abcdef0123456789 (compatible; +https://"
    "backup.example.com/about/the/very/long/agent/string)"
)
REVOKE_REASON = (
    "Leaked in a public CI log of the nightly-offsite-replication pipeline on 2026-04-30; replaced by "
    "the key of the new runner, ticket OPS-4711 (ask the storage team before restoring it)"
)


#: The mark of a module that browses `site`: the test database is set up (it is, only for tests with
#: a django_db mark), the tests run outside any transaction of their own (a test's open transaction
#: would hold SQLite's write lock -- transaction_mode IMMEDIATE -- against the server), and with no
#: app available to them nothing is flushed after each one: the site is seeded once per module.
SITE_DB = pytest.mark.django_db(transaction=True, available_apps=[])


@dataclass(frozen=True)
class SitePage:
    """One page of the site as the layout and accessibility tests open it.

    ``who``: ``anon`` (no cookie), ``op`` (the operator: every role, staff) or ``viewer`` (signed
    in, no role). ``path`` may name ``{session}`` (an active session of another user), ``{mine}``
    (another session of the operator's) and ``{key}`` (one of the operator's API keys). ``actions``:
    the controls of a table row (the first row that has any must show them inside the viewport).
    ``reach``: how the page is reached when it is not a plain GET (a form submitted on ``path``:
    ``otp``, ``api-key-create``, ``totp-enrol``)."""

    name: str
    who: str
    path: str
    status: int = 200
    actions: str | None = None
    reach: str | None = None


SITE_PAGES: list[SitePage] = [
    SitePage("sign-in", "anon", "/sign-in/"),
    SitePage("sign-in-otp", "anon", "/sign-in/", reach="otp"),
    SitePage("sessions", "op", "/sessions/", actions="td.row-actions .button"),
    SitePage("sessions-history", "op", "/sessions/history/"),
    SitePage("my-sessions", "op", "/me/sessions/", actions="td.row-actions .button"),
    SitePage("my-devices", "op", "/me/devices/", actions="td.row-actions button"),
    SitePage("api-keys", "op", "/api-keys/", actions="td.row-actions .button"),
    SitePage("api-keys-all", "op", "/api-keys/?all=1", actions="td.row-actions .button"),
    SitePage("api-key-created", "op", "/api-keys/", reach="api-key-create"),
    SitePage("api-key-edit", "op", "/api-keys/{key}/"),
    SitePage("api-key-revoke", "op", "/api-keys/{key}/revoke/"),
    SitePage("api-key-delete", "op", "/api-keys/{key}/delete/"),
    SitePage("audit", "op", "/audit/"),
    SitePage("two-factor", "op", "/two-factor/"),
    SitePage("two-factor-enrol", "op", "/two-factor/", reach="totp-enrol"),
    SitePage("password", "op", "/password/"),
    SitePage("terminate", "op", "/sessions/{session}/terminate/"),
    SitePage("terminate-others", "op", "/sessions/terminate-others/"),
    SitePage("my-terminate", "op", "/me/sessions/{mine}/terminate/"),
    SitePage("my-terminate-others", "op", "/me/sessions/terminate-others/"),
    SitePage("not-found", "op", "/no-such-page/", status=404),
    SitePage("forbidden", "viewer", "/sessions/", status=403),
]


@dataclass
class Site:
    """The seeded site of a module: its server, who is signed in (browser storage states) and the
    ids its pages' paths name."""

    base_url: str
    states: dict[str, Any]
    ids: dict[str, Any]
    chromium: Any

    def open(self, target: SitePage, screen: str, *, color_scheme: str = "light") -> tuple[Any, list[str]]:
        """A new page showing ``target`` on ``screen`` (``desk`` or ``phone``); the console errors and
        uncaught exceptions it reports go to the list returned with it. The caller closes
        ``page.context``."""
        context = self.chromium.new_context(
            base_url=self.base_url,
            storage_state=self.states.get(target.who),
            color_scheme=color_scheme,
            **VIEWPORTS[screen],
        )
        context.set_default_timeout(10_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
        response = page.goto(target.path.format(**self.ids))
        assert response is not None
        assert response.status == target.status, (target.path, response.status)
        if target.reach == "otp":  # the password of a two-factor user: answered with the code's form
            with page.expect_navigation():
                page.get_by_label("Username").fill("tfa")
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
            page.get_by_label("Authentication code").wait_for()
        elif target.reach == "api-key-create":
            page.get_by_label("Name").fill(f"created on the {screen} in {color_scheme}")
            password = page.locator("form input[type=password]")
            if password.count():
                password.fill(PASSWORD)
            page.get_by_role("button", name="Create key").click()
            page.locator("#new-key").wait_for()
        elif target.reach == "totp-enrol":
            password = page.locator("form input[type=password]")
            if password.count():
                password.fill(PASSWORD)
            page.get_by_role("button", name="Set up an authenticator app").click()
            page.wait_for_url("**/two-factor/enrol/")
        page.wait_for_load_state("load")
        if target.status >= 400:  # the document itself is reported as a failed load: expected here
            errors[:] = [e for e in errors if f"status of {target.status}" not in e]
        return page, errors


@pytest.fixture(scope="module")
def site(web: Server, chromium: Any, django_db_blocker: Any) -> Iterator[Site]:
    """The site of issue 17's layout tests, seeded once per module (the tests only browse it, under
    `SITE_DB`): 90 demo sessions of every type (a third ended) with their audit history, plus rows
    that stress widths -- a long user name, an API key with a long name used by a session and a
    TOKEN session under it, a long User-Agent, internal sessions, a revoked key with a long reason,
    an expired key, remembered devices. The operator and a user without roles are signed in first
    (so that neither sign-in is a "new device" notice); the database is emptied afterwards, as a
    transactional test leaves it."""
    from django.core.management import call_command

    base_url = f"http://{web.bind}"
    with django_db_blocker.unblock():
        try:
            users = _seed_users()
            states = {
                who: _signed_in_state(chromium, base_url, username)
                for who, username in (("op", "ops-admin"), ("viewer", "viewer"))
            }
            ids = _seed_rows(users)
            yield Site(base_url=base_url, states=states, ids=ids, chromium=chromium)
        finally:
            call_command("flush", interactive=False, verbosity=0)


def _signed_in_state(chromium: Any, base_url: str, username: str) -> Any:
    """The cookies of a browser signed in as ``username``; it lands on My sessions, so that the
    dashboard's charts (cached 30 s by the server) are first drawn once the site is seeded."""
    context = chromium.new_context(base_url=base_url)
    try:
        page = context.new_page()
        page.goto("/sign-in/?next=/me/sessions/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/sign-in/" not in url)
        return context.storage_state()
    finally:
        context.close()


def _seed_users() -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django_otp.plugins.otp_totp.models import TOTPDevice

    model = get_user_model()
    users = {}
    for username, staff in (("ops-admin", True), ("viewer", False), ("tfa", False), (LONG_USER, False)):
        user = model(username=username, is_superuser=staff, is_staff=staff)
        user.password = PASSWORD_HASH
        user.save()
        users[username] = user
    TOTPDevice.objects.create(user=users["tfa"], name="phone", confirmed=True)
    return users


def _seed_rows(users: dict[str, Any]) -> dict[str, Any]:
    import datetime as dt
    import hashlib

    from django.utils import timezone

    from sessions_app.management.demo.seed import demo_seed
    from sessions_app.models import ApiKey, AuditEvent, AuditRecord, Credentials, EndReason, KnownDevice
    from tests.factories import session

    now = timezone.now()
    demo_seed(sessions=90, ended_fraction=0.3, seed=17, now=now)
    op, long_user = users["ops-admin"], users[LONG_USER]

    def key(user: Any, name: str, **fields: Any) -> ApiKey:
        digest = hashlib.sha256(name.encode()).hexdigest()
        return ApiKey.objects.create(user=user, name=name, key_hash=digest, **fields)

    long_key = key(long_user, LONG_KEY, last_used_at=now - dt.timedelta(minutes=3))
    key(op, "laptop", last_used_at=now - dt.timedelta(hours=2))
    revoked = key(op, "old-ci-runner-for-the-nightly-replication", revoked=True, revoked_reason=REVOKE_REASON)
    key(op, "expired-monitoring", expires_at=now - dt.timedelta(days=3))
    op_key = key(op, "backup-script-on-the-storage-controller", expires_at=now + dt.timedelta(days=60))

    def add(user: Any, **fields: Any) -> Any:
        fields.setdefault("created_at", now - dt.timedelta(minutes=40))
        fields.setdefault("last_seen_at", now - dt.timedelta(minutes=1))
        row = session(user=user, username=user.username, **fields)
        row.save()
        return row

    agent = {"user_agent": LONG_AGENT, "device_label": "ReplicationDashboard 4.2.0-rc.1 on Linux"}
    api = add(
        long_user,
        credentials=Credentials.API_KEY,
        api_key=long_key,
        api_key_name=long_key.name,
        origin="[2001:db8:85a3:8d3:1319:8a2e:370:7348]:51234",
        secure_transport=True,
        **agent,
    )
    add(
        long_user,
        credentials=Credentials.TOKEN,
        parent=api,
        root_credentials=Credentials.API_KEY,
        root_username=long_user.username,
        root_api_key_id=long_key.pk,
        root_api_key_name=long_key.name,
        origin="[2001:db8:85a3:8d3:1319:8a2e:370:7348]:51240",
        secure_transport=True,
    )
    add(long_user, credentials=Credentials.LOGIN_PASSWORD, origin="10.20.30.40:40000", **agent)
    add(
        long_user,
        credentials=Credentials.UNIX_SOCKET,
        origin="UNIX socket (pid=4194301 uid=3999 gid=3999)",
        internal=True,
        peer_pid=4194301,
        peer_uid=3999,
        peer_gid=3999,
    )
    ended = add(long_user, credentials=Credentials.LOGIN_TWOFACTOR, origin="192.168.1.77:50000", **agent)
    type(ended).objects.filter(pk=ended.pk).update(
        ended_at=now - dt.timedelta(minutes=5), end_reason=EndReason.CREDENTIAL_REVOKED, ended_by="ops-admin"
    )
    phone = add(
        op,
        credentials=Credentials.LOGIN_PASSWORD,
        origin="192.168.10.23:51000",
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        device_label="Safari on iOS",
    )
    op_api = add(
        op,
        credentials=Credentials.API_KEY,
        api_key=op_key,
        api_key_name=op_key.name,
        origin="10.0.0.5:40100",
        secure_transport=True,
    )
    add(
        op,
        credentials=Credentials.TOKEN,
        parent=op_api,
        root_credentials=Credentials.API_KEY,
        root_username=op.username,
        root_api_key_id=op_key.pk,
        root_api_key_name=op_key.name,
        origin="10.0.0.5:40101",
    )
    for label, place, network, confirmed in (
        ("Safari on iOS", "Berlin, Germany", "country:DE", True),
        ("ReplicationDashboard 4.2.0-rc.1 on Linux", "", "2001:db8:85a3::/48", False),
        ("Firefox on Windows", "São Paulo, Brazil", "country:BR", False),
        ("Chrome on Android", "Local network", "192.168.10.0/24", True),
    ):
        KnownDevice.objects.create(
            user=op,
            signature=f"{label}|x|y",
            network=network,
            label=label,
            place=place,
            first_seen_at=now - dt.timedelta(days=40),
            last_seen_at=now - dt.timedelta(days=1),
            confirmed=confirmed,
        )
    AuditRecord.objects.create(
        event=AuditEvent.METHOD_CALL,
        username="ops-admin",
        address="[2001:db8:85a3:8d3:1319:8a2e:370:7348]:51234",
        success=True,
        event_data={
            "method": "api_key.revoke",
            "api_key": {"id": revoked.pk, "name": revoked.name},
            "reason": REVOKE_REASON,
        },
    )
    AuditRecord.objects.create(
        event=AuditEvent.AUTHENTICATION,
        username=LONG_USER,
        address="203.0.113.200:61000",
        success=False,
        event_data={"mechanism": "API_KEY_PLAIN", "error": "invalid key", "api_key": LONG_KEY},
    )
    return {"session": api.public_id, "mine": phone.public_id, "key": op_key.pk}
