"""Issue 17's accessibility acceptance: axe-core (``axe-playwright-python``, which bundles it: nothing
is fetched) on every page of the site, in the light and the dark theme, finds no violation of
impact "serious" or "critical".

The pages are those of the layout tests (`conftest.SITE_PAGES`) on the module's seeded site, at a
desk; the phone's layout is the same markup. axe is injected through Playwright's evaluate, which
the page's Content-Security-Policy does not govern. Each page in each theme is saved to
``tests/artifacts/screenshots/axe/<page>-<light|dark>.png`` (the first screen).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import SCREENSHOTS, SITE_DB, SITE_PAGES, Site, SitePage

axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")

pytestmark = SITE_DB

AXE_SHOTS = SCREENSHOTS / "axe"
BLOCKING = {"serious", "critical"}
#: WCAG 2.x A and AA and the best practices (landmarks, headings, one main, unique names).
OPTIONS = {
    "resultTypes": ["violations"],
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"],
    },
}


@pytest.fixture(scope="module")
def axe() -> Any:
    return axe_playwright.Axe()


def _described(violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}")
        for node in violation["nodes"][:5]:
            lines.append(
                f"    {' '.join(node['target'])}: {node.get('failureSummary', '').splitlines()[-1:]}"
            )
    return "\n".join(lines)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("target", SITE_PAGES, ids=[p.name for p in SITE_PAGES])
def test_no_serious_accessibility_violation(site: Site, axe: Any, target: SitePage, scheme: str) -> None:
    page, errors = site.open(target, "desk", color_scheme=scheme)
    try:
        assert page.evaluate("() => matchMedia('(prefers-color-scheme: dark)').matches") == (scheme == "dark")
        AXE_SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(AXE_SHOTS / f"{target.name}-{scheme}.png"))
        results = axe.run(page, options=OPTIONS)
        blocking = [v for v in results.response["violations"] if v["impact"] in BLOCKING]
        assert blocking == [], f"{target.name} ({scheme}):\n{_described(blocking)}"
        assert errors == [], f"{target.name}: {errors}"
    finally:
        page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_menu_open_has_no_serious_violation(site: Site, axe: Any, scheme: str) -> None:
    """The folded navigation, opened on a phone: its panel passes too (contrast on the dark bar)."""
    page, errors = site.open(
        next(p for p in SITE_PAGES if p.name == "sessions"), "phone", color_scheme=scheme
    )
    try:
        page.locator(".topbar summary").click()
        page.get_by_role("navigation", name="Main").wait_for()
        results = axe.run(page, options=OPTIONS)
        blocking = [v for v in results.response["violations"] if v["impact"] in BLOCKING]
        assert blocking == [], _described(blocking)
        assert errors == []
    finally:
        page.context.close()
