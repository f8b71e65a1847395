"""Small charts drawn as inline SVG on the server: no JavaScript, no external library, no request.

Each function takes the numbers a selector returned and gives safe markup: every label is escaped,
every number is formatted by Python. Colours come from the stylesheet (CSS classes), so the charts
follow its light and dark themes; each chart has a ``<title>``/``<desc>`` for screen readers and a
``<title>`` per bar as a tooltip.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

_LABEL_WIDTH = 190
_BAR_ROW = 26
_PLOT_WIDTH = 300


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


def bar_chart(items: Sequence[tuple[str, int]], *, title: str, chart_id: str) -> SafeString:
    """Horizontal bars, one per ``(label, count)``; the count is printed after each bar."""
    total = sum(count for _, count in items)
    peak = max((count for _, count in items), default=0) or 1
    height = max(1, len(items)) * _BAR_ROW + 8
    width = _LABEL_WIDTH + _PLOT_WIDTH + 90
    parts: list[str] = []
    for i, (label, count) in enumerate(items):
        y = 4 + i * _BAR_ROW
        length = max(2.0, _PLOT_WIDTH * count / peak) if count else 0.0
        parts.append(
            format_html(
                '<g class="bar-row"><title>{}: {} ({}%)</title>'
                '<text class="chart-label" x="{}" y="{}" text-anchor="end">{}</text>'
                '<rect class="bar bar-{}" x="{}" y="{}" width="{}" height="{}" rx="3"></rect>'
                '<text class="chart-value" x="{}" y="{}">{}</text></g>',
                label,
                f"{count:,}",
                f"{100 * count / total:.1f}" if total else "0",
                _LABEL_WIDTH - 10,
                y + 16,
                label,
                i % 6,
                _LABEL_WIDTH,
                y + 3,
                _n(length),
                _BAR_ROW - 8,
                _n(_LABEL_WIDTH + length + 8),
                y + 16,
                f"{count:,}",
            )
        )
    if not items:
        parts.append(
            format_html(
                '<text class="chart-empty" x="{}" y="18" text-anchor="middle">No active sessions</text>',
                width // 2,
            )
        )
    summary = ", ".join(f"{label}: {count:,}" for label, count in items) or "none"
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
        f"Total {total:,}. {summary}.",
        mark_safe("".join(parts)),  # noqa: S308 - every part was built with format_html
    )


def hourly_chart(hours: Sequence[tuple[dt.datetime, int, int]], *, title: str, chart_id: str) -> SafeString:
    """Stacked columns per hour: successful logins below, failed ones on top (UTC hour labels)."""
    left, top, plot_w, plot_h = 44, 12, 600, 150
    width, height = left + plot_w + 10, top + plot_h + 44
    peak = _nice_max(max((ok + failed for _, ok, failed in hours), default=0))
    slot = plot_w / max(1, len(hours))
    bar_w = max(2.0, slot * 0.7)
    parts: list[str] = []
    for fraction in (0, 0.5, 1):
        y = top + plot_h - plot_h * fraction
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
                f"{round(peak * fraction):,}",
            )
        )
    for i, (hour, ok, failed) in enumerate(hours):
        x = left + i * slot + (slot - bar_w) / 2
        ok_h = plot_h * ok / peak
        failed_h = plot_h * failed / peak
        base = top + plot_h
        parts.append(
            format_html(
                '<g class="hour"><title>{}–{} UTC: {} successful, {} failed</title>'
                '<rect class="slot" x="{}" y="{}" width="{}" height="{}"></rect>'
                '<rect class="bar-ok" x="{}" y="{}" width="{}" height="{}"></rect>'
                '<rect class="bar-failed" x="{}" y="{}" width="{}" height="{}"></rect></g>',
                hour.strftime("%H:00"),
                (hour + dt.timedelta(hours=1)).strftime("%H:00"),
                f"{ok:,}",
                f"{failed:,}",
                _n(left + i * slot),
                top,
                _n(slot),
                plot_h,
                _n(x),
                _n(base - ok_h),
                _n(bar_w),
                _n(ok_h),
                _n(x),
                _n(base - ok_h - failed_h),
                _n(bar_w),
                _n(failed_h),
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
    legend_y = height - 8
    parts.append(
        format_html(
            '<rect class="bar-ok" x="{}" y="{}" width="10" height="10" rx="2"></rect>'
            '<text class="chart-label" x="{}" y="{}">successful</text>'
            '<rect class="bar-failed" x="{}" y="{}" width="10" height="10" rx="2"></rect>'
            '<text class="chart-label" x="{}" y="{}">failed</text>',
            left,
            legend_y - 9,
            left + 14,
            legend_y,
            left + 110,
            legend_y - 9,
            left + 124,
            legend_y,
        )
    )
    total_ok = sum(ok for _, ok, _ in hours)
    total_failed = sum(failed for _, _, failed in hours)
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
        f"{total_ok:,} successful and {total_failed:,} failed logins in the last {len(hours)} hours.",
        mark_safe("".join(parts)),  # noqa: S308 - every part was built with format_html
    )


def qr_code(data: str, *, title: str) -> SafeString:
    """``data`` as a QR code (segno), inline SVG that scales with its container."""
    import segno

    svg = segno.make(data, error="m").svg_inline(
        scale=5, border=2, dark="#111", light="#fff", title=title, omitsize=True, svgclass="qr"
    )
    return mark_safe(svg)  # noqa: S308 - segno escapes the title; the rest is its own markup
