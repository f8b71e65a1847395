"""Template helpers of the browser pages: query-string links, sortable headers, times, credentials,
devices. Everything a client chose (User-Agent, the device words parsed from it, place names) goes
through `format_html` or autoescaping: never marked safe as it is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django import template
from django.http import QueryDict
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from sessions_app import charts
from sessions_app.devices.places import Place

register = template.Library()


@register.simple_tag(takes_context=True)
def query_url(
    context: template.Context, path: str = "", keep: str = "", sorts: str = "", **changes: Any
) -> str:
    """The current query string with ``changes`` applied (None or "" removes a parameter).

    Changing anything but the page drops the cursor, so a link never carries a stale one.

    For a link to another page that shares some filters (the Active and History tabs): ``keep``
    names the only parameters carried over (space-separated; empty values dropped), ``sorts`` the
    sort keys that page has (``sort`` and ``dir`` are carried only when the current sort is one of
    them), and ``path`` is that page's path, put before the query string (without a bare "?").
    """
    params: QueryDict = context["request"].GET.copy()
    if keep:
        kept = set(keep.split())
        if params.get("sort") in sorts.split():
            kept |= {"sort", "dir"}
        for name in list(params):
            if name not in kept or not params.get(name):
                params.pop(name)
    if not {"cursor", "back"} & changes.keys():
        params.pop("cursor", None)
        params.pop("back", None)
    for name, value in changes.items():
        if value is None or value == "":
            params.pop(name, None)
        else:
            params[name] = str(value)
    encoded = params.urlencode()
    if path:
        return f"{path}?{encoded}" if encoded else path
    return f"?{encoded}" if encoded else "?"


@register.inclusion_tag("sessions_app/partials/sort_header.html", takes_context=True)
def sort_header(context: template.Context, name: str, label: str) -> dict[str, Any]:
    """A ``<th>`` whose link sorts by ``name``, with ``aria-sort`` on the sorted column.

    A first click sorts in the column's natural direction (`QueryFilterForm.first_descending`:
    times newest first, names A to Z); a second click on the sorted column reverses it.
    """
    form = context["form"]
    data = form.cleaned_data if form.is_bound and hasattr(form, "cleaned_data") else {}
    current = data.get("sort") or form.default_sort
    active = current == name
    # Unbound, or the sort itself was refused: the default column in its natural order.
    descending = form.descending() if "sort" in data else form.first_descending(current)
    if active:
        next_dir = "asc" if descending else "desc"
    else:
        next_dir = "desc" if form.first_descending(name) else "asc"
    return {
        "request": context["request"],
        "name": name,
        "label": label,
        "active": active,
        "descending": descending,
        "aria": ("descending" if descending else "ascending") if active else None,
        "next_dir": next_dir,
    }


_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def _relative(delta: dt.timedelta) -> str:
    """``delta`` (now minus the moment) in words: "just now", "2 minutes ago", "in 3 days".

    One unit, rounded down (a session seen 119 s ago was seen "1 minute ago"); days do not grow into
    months, the exact time is always beside it (the ``title`` of `ago`, the text of `when`).
    """
    seconds = int(abs(delta.total_seconds()))
    if seconds < 10:
        return "just now"
    count, unit = next((seconds // size, unit) for size, unit in _UNITS if seconds >= size)
    text = f"{count} {unit}{'' if count == 1 else 's'}"
    return f"in {text}" if delta.total_seconds() < 0 else f"{text} ago"


@register.filter
def when(value: Any) -> SafeString | str:
    """``<time>`` with the UTC date and time, and how long ago (or until) in the tooltip."""
    if not isinstance(value, dt.datetime):
        return "—"
    utc = value.astimezone(dt.UTC)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        utc.isoformat(timespec="seconds"),
        _relative(timezone.now() - value),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
    )


@register.filter
def ago(value: Any) -> SafeString | str:
    """``<time>`` showing how long ago (or until), with the UTC date and time in the tooltip."""
    if not isinstance(value, dt.datetime):
        return "—"
    utc = value.astimezone(dt.UTC)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        utc.isoformat(timespec="seconds"),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
        _relative(timezone.now() - value),
    )


@register.filter
def short_id(value: Any) -> str:
    text = str(value or "")
    return f"{text[:10]}…" if len(text) > 12 else text


@register.filter
def credential_badge(credentials: Any) -> SafeString:
    """A credential type as a badge in its colour (`charts.credential_class`, the colour of its bar in
    the dashboard chart), always with its name: the colour is never the only cue."""
    return format_html('<span class="badge {}">{}</span>', charts.credential_class(credentials), credentials)


#: The two marks of a yes/no cell: a tick and a dash (shape, not only colour, tells them apart).
_FLAG_PATHS = {True: "M3 8.5 6.5 12 13 4.5", False: "M4 8h8"}


@register.filter
def flag(value: Any, meaning: str = "") -> SafeString:
    """A yes/no cell as an icon: a tick or a dash, with "Yes" / "No" for screen readers (and in the
    tooltip, after ``meaning``: "Secure transport: yes"). Keeps narrow columns narrow."""
    yes = bool(value)
    word = "Yes" if yes else "No"
    return format_html(
        '<span class="flag flag-{}" title="{}"><svg viewBox="0 0 16 16" width="16" height="16" '
        'aria-hidden="true" focusable="false"><path d="{}"></path></svg>'
        '<span class="visually-hidden">{}</span></span>',
        word.lower(),
        f"{meaning}: {word.lower()}" if meaning else word,
        _FLAG_PATHS[yes],
        word,
    )


@register.filter
def parent_label(row: dict[str, Any]) -> str:
    """For a TOKEN session: the root credential of its chain and its user (or key), e.g.
    ``LOGIN_PASSWORD alice``; empty for other sessions."""
    if row.get("credentials") != "TOKEN":
        return ""
    parent = row.get("credentials_data", {}).get("parent", {})
    data = parent.get("credentials_data", {})
    who = data.get("username") or ""
    key = data.get("api_key")
    if key:
        who = f"{who} · key {key.get('name')}"
    return f"{parent.get('credentials') or '?'} {who}".strip()


@register.filter
def api_key_label(row: dict[str, Any]) -> str:
    key = row.get("credentials_data", {}).get("api_key")
    return f"{key.get('name')} (#{key.get('id')})" if key else ""


@register.filter
def json_compact(value: Any) -> str:
    import json

    text = json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= 240 else text[:237] + "…"


@register.filter
def place(row: Mapping[str, Any]) -> str:
    """The place of a row with a ``location`` object: "Berlin, Germany", "Local network", or ""."""
    location = row.get("location") or {}
    return Place(country=location.get("country"), city=location.get("city")).label


@register.simple_tag
def session_device(row: Mapping[str, Any]) -> SafeString:
    """The device cell of a session row: the device in words ("Safari on iOS", the User-Agent in the
    tooltip) and "this device" on the caller's own session, then a muted line with the place (when
    known) and the origin. A session without a device (opened before devices were kept, or over the
    unix socket) shows its origin, as before."""
    device = row.get("device") or {}
    origin = format_html('<span class="mono">{}</span>', row.get("origin") or "—")
    mine = format_html(' <span class="badge current">{}</span>', "this device") if row.get("current") else ""
    label = device.get("label")
    if not label:
        return format_html("{}{}", origin, mine)
    where = place(row)
    agent = device.get("user_agent")
    return format_html(
        '<span class="device"{}>{}</span>{}<span class="sub">{}</span>',
        format_html(' title="{}"', agent) if agent else "",
        label,
        mine,
        format_html("{} · {}", where, origin) if where else origin,
    )
