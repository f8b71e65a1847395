"""F13 in the browser: every page under the served Content-Security-Policy, in Chromium.

Each page is loaded with a listener for ``securitypolicyviolation`` events (added before any of the
page's own scripts) and the console is watched for Chromium's "Refused to …" messages; neither may
report anything, and each page must still do its job: the dashboard's script runs and goes live, the
Swagger UI renders the API's operations and runs one. A first test proves that the watch sees a
violation when one happens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from sessions_app.auth.roles import Role
from tests.conftest import PASSWORD
from tests.security.test_f_headers import PAGES

DOCS = "/api/v2.0/docs/"

pytestmark = pytest.mark.django_db(transaction=True)

expect = pytest.importorskip("playwright.sync_api").expect

WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.effectiveDirective} ${event.blockedURI || "inline"}`);
});
"""
REFUSED = re.compile(r"Refused to|Content Security Policy", re.IGNORECASE)


class CspWatch:
    """Violations seen on ``page``: the events of its current document and every console message."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.context.add_init_script(WATCH)
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))

    def violations(self) -> list[str]:
        events = self.page.evaluate("() => window.__cspViolations || []")
        return [*events, *(line for line in self.console if REFUSED.search(line))]

    def visit(self, url: str, status: int = 200) -> None:
        response = self.page.goto(url)
        assert response is not None, url
        assert response.status == status, (url, response.status)
        csp = response.headers.get("content-security-policy", "")
        assert "'nonce-" in csp or "script-src 'self'" in csp, (url, csp)
        self.page.wait_for_load_state("load")
        self.assert_clean(url)

    def assert_clean(self, label: str) -> None:
        found = self.violations()
        assert found == [], f"{label}: {found}"


@pytest.fixture
def watch(page: Any) -> CspWatch:
    return CspWatch(page)


def sign_in(page: Any, username: str) -> None:
    page.goto("/sign-in/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/(sessions|me/sessions)/$"))


def test_f13_the_watch_sees_a_blocked_inline_script(watch: CspWatch) -> None:
    watch.visit("/sign-in/")
    watch.page.evaluate(
        """() => {
          const script = document.createElement("script");
          script.textContent = "window.__inlineRan = true";
          document.body.append(script);
        }"""
    )
    watch.page.wait_for_function("() => window.__cspViolations.length > 0")
    assert watch.page.evaluate("() => window.__inlineRan") is None  # blocked, not run
    assert any("script-src" in v for v in watch.violations()), watch.violations()
    for _ in range(40):  # Chromium's console message too (delivered as an event, maybe a moment later)
        if any(REFUSED.search(line) for line in watch.console):
            break
        watch.page.wait_for_timeout(50)
    assert any(REFUSED.search(line) for line in watch.console), watch.console


def test_f13_pages_run_under_the_policy_without_violations(
    watch: CspWatch, create_user: Callable[..., Any], shot: Any
) -> None:
    root = create_user("root", superuser=True, roles=[Role.AUTH_SESSIONS_READ, Role.AUDIT_READ])
    page = watch.page
    watch.visit("/sign-in/")
    sign_in(page, "root")
    watch.assert_clean("sign-in")

    watch.visit("/sessions/")
    # The dashboard's script ran: it opened the event stream and says so.
    expect(page.locator("#live-status")).to_contain_text("Live updates on")
    shot(page, "csp-dashboard")
    # The pages the header test checks (tests/security/test_f_headers.py), now run in a browser.
    for url in [*(p for p in PAGES if p not in ("/sessions/", DOCS)), f"/admin/auth/user/{root.pk}/change/"]:
        watch.visit(url)
    # The admin's own scripts ran: the user form's group picker is the two-list widget of SelectFilter2.
    page.goto(f"/admin/auth/user/{root.pk}/change/")
    expect(page.locator("#id_groups_from")).to_be_attached()
    watch.assert_clean("admin user form")
    watch.visit("/no-such-page/", status=404)
    watch.assert_clean("404 page")


def test_f13_error_page_and_two_factor_enrolment(watch: CspWatch, create_user: Callable[..., Any]) -> None:
    create_user("plain")
    watch.visit("/sign-in/")
    sign_in(watch.page, "plain")
    watch.visit("/sessions/", status=403)
    response = watch.page.goto("/two-factor/enrol/")
    assert response is not None
    assert response.status < 500
    watch.page.wait_for_load_state("load")
    watch.assert_clean("two-factor enrolment")


def test_f13_swagger_ui_renders_and_runs_under_the_policy(
    watch: CspWatch, create_user: Callable[..., Any], shot: Any
) -> None:
    create_user("root", superuser=True)
    page = watch.page
    sign_in(page, "root")
    watch.visit(DOCS)
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    assert operations.count() > 10
    me = page.locator(".opblock-get", has=page.locator('[data-path="/api/v2.0/auth/me"]'))
    me.locator(".opblock-summary").click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    expect(page.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
    shot(page, "csp-swagger-ui")
    watch.assert_clean("Swagger UI")
