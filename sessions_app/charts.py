"""Small charts drawn as inline SVG on the server: no JavaScript, no external library, no request.

Each function takes the numbers a selector returned and gives safe markup: every label is escaped,
every number is formatted by Python. Colours come from the stylesheet (CSS classes), so the charts
follow its light and dark themes; each chart has a ``<title>``/``<desc>`` for screen readers and a
``<title>`` per bar as a tooltip.

A credential type has one colour wherever it appears: `credential_class` names its CSS class, which
the badges in the tables (`registry.credential_badge`) and the bars of `bar_chart` both carry, and
``registry.css`` gives each class its colour once (light and dark). The colour never stands alone:
a badge shows the type's name, a bar has it as its label.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from sessions_app.models import Credentials

#: The CSS class of each credential type; registry.css defines ``--cred`` for each (light and dark).
CREDENTIAL_CLASSES: dict[str, str] = {value: f"cred-{value}" for value in Credentials.values}
OTHER_CREDENTIAL_CLASS = "cred-other"


def credential_class(credentials: object) -> str:
    """The colour class of a credential type (``cred-API_KEY``); ``cred-other`` for anything else."""
    return CREDENTIAL_CLASSES.get(str(credentials), OTHER_CREDENTIAL_CLASS)


_LABEL_WIDTH = 196
_BAR_ROW = 26
_PLOT_WIDTH = 150
_VALUE_WIDTH = 56


def _n(value: float) -> str:
    """A coordinate for an SVG attribute: one decimal, no trailing ``.0``."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _nice_max(value: int) -> int:
    """A round axis maximum >= ``value`` (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _svg(chart_id: str, width: int, height: int, title: str, desc: str, parts: list[str]) -> SafeString:
    return format_html(
        '<svg class="chart" id="{}" viewBox="0 0 {} {}" role="img" aria-labelledby="{}-t {}-d" '
        'preserveAspectRatio="xMinYMin meet"><title id="{}-t">{}</title><desc id="{}-d">{}</desc>{}</svg>',
        chart_id,
        width,
        height,
        chart_id,
        chart_id,
        chart_id,
        title,
        chart_id,
        desc,
        mark_safe("".join(parts)),  # noqa: S308 - every part was built with format_html
    )


def bar_chart(
    items: Sequence[tuple[str, int]],
    *,
    title: str,
    chart_id: str,
    bar_class: Callable[[str], str] = credential_class,
    empty: str = "No active sessions",
) -> SafeString:
    """Horizontal bars, one per ``(label, count)``, labelled; the count is printed after each bar.

    A bar's colour is ``bar_class(label)``: by default the credential type's, the colour of its badge.
    """
    total = sum(count for _, count in items)
    peak = max((count for _, count in items), default=0) or 1
    height = max(1, len(items)) * _BAR_ROW + 8
    width = _LABEL_WIDTH + _PLOT_WIDTH + _VALUE_WIDTH
    parts: list[str] = []
    for i, (label, count) in enumerate(items):
        y = 4 + i * _BAR_ROW
        length = max(2.0, _PLOT_WIDTH * count / peak) if count else 0.0
        parts.append(
            format_html(
                '<g class="bar-row"><title>{}: {} ({}%)</title>'
                '<text class="chart-label" x="{}" y="{}" text-anchor="end">{}</text>'
                '<rect class="bar {}" x="{}" y="{}" width="{}" height="{}" rx="3"></rect>'
                '<text class="chart-value" x="{}" y="{}">{}</text></g>',
                label,
                f"{count:,}",
                f"{100 * count / total:.1f}" if total else "0",
                _LABEL_WIDTH - 8,
                y + 16,
                label,
                bar_class(label),
                _LABEL_WIDTH,
                y + 3,
                _n(length),
                _BAR_ROW - 8,
                _n(_LABEL_WIDTH + length + 6),
                y + 16,
                f"{count:,}",
            )
        )
    if not items:
        parts.append(
            format_html(
                '<text class="chart-empty" x="{}" y="18" text-anchor="middle">{}</text>', width // 2, empty
            )
        )
    summary = ", ".join(f"{label}: {count:,}" for label, count in items) or "none"
    return _svg(chart_id, width, height, title, f"Total {total:,}. {summary}.", parts)


def _hour_columns(
    values: Sequence[tuple[dt.datetime, int]],
    *,
    title: str,
    chart_id: str,
    series: str,
    tooltip: Callable[[int, int], str],
    desc: str,
    empty: str,
) -> SafeString:
    """One column per UTC hour (oldest first) on its own scale, hours labelled every three."""
    left, top, plot_w, plot_h = 40, 10, 366, 110
    width, height = left + plot_w + 6, top + plot_h + 24
    peak = _nice_max(max((n for _, n in values), default=0))
    slot = plot_w / max(1, len(values))
    bar_w = max(2.0, slot * 0.72)
    base = top + plot_h
    parts: list[str] = []
    for fraction in (0, 0.5, 1):
        y = base - plot_h * fraction
        parts.append(
            format_html(
                '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"></line>'
                '<text class="chart-axis" x="{}" y="{}" text-anchor="end">{}</text>',
                left,
                left + plot_w,
                _n(y),
                _n(y),
                left - 6,
                _n(y + 4),
                f"{peak * fraction:,.0f}"
                if peak * fraction == int(peak * fraction)
                else f"{peak * fraction:,.1f}",
            )
        )
    for i, (hour, count) in enumerate(values):
        x = left + i * slot + (slot - bar_w) / 2
        bar_h = plot_h * count / peak
        parts.append(
            format_html(
                '<g class="hour"><title>{}–{} UTC: {}</title>'
                '<rect class="slot" x="{}" y="{}" width="{}" height="{}"></rect>'
                '<rect class="{}" x="{}" y="{}" width="{}" height="{}"></rect></g>',
                hour.strftime("%H:00"),
                (hour + dt.timedelta(hours=1)).strftime("%H:00"),
                tooltip(i, count),
                _n(left + i * slot),
                top,
                _n(slot),
                plot_h,
                series,
                _n(x),
                _n(base - bar_h),
                _n(bar_w),
                _n(bar_h),
            )
        )
        if i % 3 == 0:
            parts.append(
                format_html(
                    '<text class="chart-axis" x="{}" y="{}" text-anchor="middle">{}</text>',
                    _n(x + bar_w / 2),
                    base + 16,
                    hour.strftime("%H:%M"),
                )
            )
    if not any(n for _, n in values):
        parts.append(
            format_html(
                '<text class="chart-empty" x="{}" y="{}" text-anchor="middle">{}</text>',
                _n(left + plot_w / 2),
                _n(top + plot_h / 2),
                empty,
            )
        )
    return _svg(chart_id, width, height, title, desc, parts)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _busiest(values: Sequence[tuple[dt.datetime, int]]) -> str:
    hour, count = max(values, key=lambda v: v[1], default=(None, 0))
    return f" The most, {count:,}, from {hour:%H:00} UTC." if hour is not None and count else ""


def logins_chart(hours: Sequence[tuple[dt.datetime, int, int]], *, title: str, chart_id: str) -> SafeString:
    """Successful logins per hour: ``hours`` is ``(hour, successful, failed)``, oldest first."""
    values = [(hour, ok) for hour, ok, _ in hours]
    total = sum(n for _, n in values)

    def tooltip(i: int, ok: int) -> str:
        return _count(ok, "successful login")

    return _hour_columns(
        values,
        title=title,
        chart_id=chart_id,
        series="bar-ok",
        tooltip=tooltip,
        desc=f"{_count(total, 'successful login')} in the last {len(values)} hours.{_busiest(values)}",
        empty="No logins recorded",
    )


def failures_chart(hours: Sequence[tuple[dt.datetime, int, int]], *, title: str, chart_id: str) -> SafeString:
    """Failed logins per hour on a scale of their own (a few failures stay visible beside thousands of
    logins); the tooltip gives their share of the hour's attempts."""
    values = [(hour, failed) for hour, _, failed in hours]
    attempts = [ok + failed for _, ok, failed in hours]
    total = sum(n for _, n in values)

    def tooltip(i: int, failed: int) -> str:
        share = f" ({100 * failed / attempts[i]:.1f}% of {attempts[i]:,} attempts)" if attempts[i] else ""
        return f"{_count(failed, 'failed login')}{share}"

    return _hour_columns(
        values,
        title=title,
        chart_id=chart_id,
        series="bar-failed",
        tooltip=tooltip,
        desc=f"{_count(total, 'failed login')} in the last {len(values)} hours.{_busiest(values)}",
        empty="No failed logins",
    )


def qr_code(data: str, *, title: str) -> SafeString:
    """``data`` as a QR code (segno), inline SVG that scales with its container."""
    import segno

    svg = segno.make(data, error="m").svg_inline(
        scale=5, border=2, dark="#111", light="#fff", title=title, omitsize=True, svgclass="qr"
    )
    return mark_safe(svg)  # noqa: S308 - segno escapes the title; the rest is its own markup
