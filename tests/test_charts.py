"""`sessions_app.charts`: one colour per credential type (badge and chart), the hourly charts."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.template.loader import render_to_string

from sessions_app import charts
from sessions_app.models import Credentials
from sessions_app.templatetags.registry import credential_badge

CSS = (Path(charts.__file__).parent / "static" / "sessions_app" / "registry.css").read_text()
HOUR0 = dt.datetime(2026, 5, 1, 0, 0, tzinfo=dt.UTC)


def _css_blocks() -> tuple[str, str]:
    """The stylesheet outside and inside its dark-theme media queries."""
    dark = "".join(re.findall(r"@media \(prefers-color-scheme: dark\) \{(.*?)\n\}", CSS, flags=re.S))
    light = re.sub(r"@media \(prefers-color-scheme: dark\) \{.*?\n\}", "", CSS, flags=re.S)
    return light, dark


def _colour(block: str, selector: str, prop: str) -> str:
    match = re.search(re.escape(selector) + r"\s*\{[^}]*?" + re.escape(prop) + r":\s*(#[0-9a-f]{6})", block)
    assert match, f"{selector} sets no {prop}"
    return match.group(1)


def _contrast(a: str, b: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _tint(colour: str, surface: str, share: float) -> str:
    mixed = (
        round(int(colour[i : i + 2], 16) * share + int(surface[i : i + 2], 16) * (1 - share))
        for i in (1, 3, 5)
    )
    return "#" + "".join(f"{c:02x}" for c in mixed)


@pytest.mark.django_db
def test_every_credential_type_has_one_colour_class_used_by_badge_and_chart() -> None:
    light, dark = _css_blocks()
    chart = str(charts.bar_chart([(c, 1) for c in Credentials.values], title="t", chart_id="c"))
    for credentials in Credentials.values:
        css_class = charts.credential_class(credentials)
        assert css_class == charts.CREDENTIAL_CLASSES[credentials] == f"cred-{credentials}"
        assert f'<span class="badge {css_class}">{credentials}</span>' == credential_badge(credentials)
        row = {"credentials": credentials, "credentials_data": {}}
        partial = render_to_string("sessions_app/partials/session_credential.html", {"row": row})
        assert f'class="badge {css_class}"' in partial
        assert f'<rect class="bar {css_class}"' in chart
        # Defined once per theme, and only as the --cred variable that badge and bar both read.
        assert len(re.findall(rf"\.{css_class} \{{ --cred: #[0-9a-f]{{6}}; \}}", light)) == 1
        assert len(re.findall(rf"\.{css_class} \{{ --cred: #[0-9a-f]{{6}}; \}}", dark)) == 1
    assert len(re.findall(r"\.cred-[A-Z_]+ \{ --cred:", light)) == len(Credentials.values)
    assert '.badge[class*="cred-"]' in CSS
    assert "color: var(--cred)" in CSS
    assert '.chart .bar[class*="cred-"] { fill: var(--cred); }' in CSS
    assert not re.search(r"\.badge\.cred-|\.bar-[0-9]", CSS)  # no second palette, no colour by position
    colours = {_colour(light, f".cred-{c}", "--cred") for c in Credentials.values}
    assert len(colours) == len(Credentials.values)  # one colour each


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_credential_colours_are_readable(theme: str) -> None:
    """Bars: >= 3:1 on the card (WCAG 1.4.11); badge text: >= 4.5:1 on its tint (12% over the card)."""
    light, dark = _css_blocks()
    block = light if theme == "light" else dark
    surface = _colour(block, ":root" if theme == "light" else "  :root", "--surface")
    for credentials in [*Credentials.values, "other"]:
        colour = _colour(block, f".cred-{credentials}", "--cred")
        assert _contrast(colour, surface) >= 4.5, credentials
        assert _contrast(colour, _tint(colour, surface, 0.12)) >= 4.5, credentials


def test_unknown_types_and_hostile_labels_are_escaped() -> None:
    chart = str(charts.bar_chart([("<script>x</script>", 2)], title="<b>t</b>", chart_id="c"))
    assert "<script>" not in chart
    assert "<b>" not in chart
    assert "&lt;script&gt;x&lt;/script&gt;" in chart
    assert 'class="bar cred-other"' in chart
    assert str(credential_badge("<i>X</i>")) == '<span class="badge cred-other">&lt;i&gt;X&lt;/i&gt;</span>'


def _hours(failed_at: int = 5) -> list[tuple[dt.datetime, int, int]]:
    return [(HOUR0 + dt.timedelta(hours=i), 1000, 3 if i == failed_at else 0) for i in range(24)]


def test_failed_logins_have_their_own_chart_and_scale() -> None:
    hours = _hours()
    logins = str(charts.logins_chart(hours, title="Logins", chart_id="chart-logins"))
    failures = str(charts.failures_chart(hours, title="Failed <logins>", chart_id="chart-failures"))
    assert "bar-failed" not in logins  # no stacked sliver on the logins chart
    assert "24,000 successful logins in the last 24 hours" in logins
    assert 'id="chart-failures"' in failures
    assert "Failed &lt;logins&gt;" in failures
    assert "<logins>" not in failures
    assert "3 failed logins in the last 24 hours. The most, 3, from 05:00 UTC." in failures
    assert "05:00–06:00 UTC: 3 failed logins (0.3% of 1,003 attempts)" in failures
    heights = [float(h) for h in re.findall(r'<rect class="bar-failed" [^>]*height="([\d.]+)"', failures)]
    assert len(heights) == 24
    assert max(heights) > 50  # 3 of a 5 axis: well visible, not a sliver of a 1,000 scale
    assert "No failed logins" not in failures


def test_empty_hourly_charts_say_so() -> None:
    hours = [(HOUR0 + dt.timedelta(hours=i), 0, 0) for i in range(24)]
    assert "No logins recorded" in str(charts.logins_chart(hours, title="t", chart_id="a"))
    assert "No failed logins" in str(charts.failures_chart(hours, title="t", chart_id="b"))
