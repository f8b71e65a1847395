"""How management commands print results: an aligned table, JSON (ejson) or CSV.

Values printed here come from the database and ultimately from clients (usernames, key names,
filter values), so every format is terminal-safe: a control or other non-printable character
(``\\n``, ``\\x1b``, bidi overrides, ...) is printed as an escape sequence and can neither forge
lines nor drive the terminal (log injection, CVE-2025-48432). JSON stays lossless (its escapes are
JSON's own); the table and CSV show Python-style escapes such as ``\\n`` and ``\\x1b``.

JSON is the wire format of the API ("ejson"): datetimes are ``{"$date": <ms since the epoch>}`` and
keys are sorted, so the output is stable and any value in it can be pasted back into a filter.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import sys
import unicodedata
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from tqdm import tqdm

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ELLIPSIS = "…"
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Spreadsheet formula triggers (OWASP "CSV injection"): such free-text CSV cells get a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@")


# -- escaping and widths ---------------------------------------------------------------------------


def escape_control(text: str) -> str:
    """``text`` with every non-printable character replaced by a Python-style escape.

    Printable characters, the space and backslashes are kept as they are (``DOMAIN\\user`` stays
    readable), so the result is meant for display, not for parsing back.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        else:
            code = ord(ch)
            out.append(
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
    return "".join(out)


def display_width(text: str) -> int:
    """Terminal columns taken by ``text`` (wide East Asian characters count two, combining marks none)."""
    if text.isascii():
        return len(text)
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal columns, ending with "…" when something was cut."""
    if text.isascii():
        return text if len(text) <= width else text[: max(width - 1, 0)] + ELLIPSIS
    if display_width(text) <= width:
        return text
    out = []
    used = 0
    for ch in text:
        w = 0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + ELLIPSIS


# -- values ----------------------------------------------------------------------------------------


def epoch_ms(value: dt.datetime) -> int:
    """Milliseconds since the epoch (a naive datetime is taken as UTC), exact integer arithmetic."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - EPOCH) // dt.timedelta(milliseconds=1)


def iso_utc(value: dt.datetime, timespec: str = "milliseconds") -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, e.g. ``2026-05-01T12:00:00.250Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def _ejson_default(value: object) -> object:
    if isinstance(value, dt.datetime):
        return {"$date": epoch_ms(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a surrogate pair, as JSON spells characters beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as ejson: sorted keys, ``{"$date": ms}`` datetimes, non-printables ``\\u``-escaped.

    Only strings can hold non-printable characters, so escaping them after encoding keeps the
    document valid JSON with the same meaning, while readable text (``José``) is left readable.
    """
    text = json.dumps(value, default=_ejson_default, sort_keys=True, ensure_ascii=False, indent=indent)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\n " else _json_escape(ch) for ch in text)


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted keys (``{"a": {"b": 1}}`` → ``{"a.b": 1}``); an empty object stays."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def columns_of(rows: Iterable[Mapping[str, Any]], preferred: Sequence[str] = ()) -> list[str]:
    """Every key of the flattened ``rows``: the ``preferred`` ones in that order, then the rest as met."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    rank = {name: i for i, name in enumerate(preferred)}
    return sorted(seen, key=lambda name: rank.get(name, len(rank)))


def cell_text(value: Any, *, timespec: str = "milliseconds", none: str = "") -> str:
    """One value as display text: ISO UTC datetimes, ``true``/``false``, compact JSON for objects."""
    if value is None:
        return none
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return iso_utc(value, timespec)
    if isinstance(value, str):
        return escape_control(value)
    if isinstance(value, Mapping | list | tuple):
        return to_json(value, indent=None)
    return escape_control(str(value))


# -- formats ---------------------------------------------------------------------------------------


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int = 0,
    min_widths: Mapping[str, int] | None = None,
) -> tuple[Iterator[str], bool]:
    """An aligned text table, line by line, and whether any cell is shortened to fit ``width`` columns.

    Cells should be display text (see `cell_text`); they are escaped again all the same. ``width`` 0
    means unlimited. When the table is too wide, the widest columns give way first, none below its
    ``min_widths`` entry (default: the header's width, at least 6); shortened cells end with "…". A
    table that cannot fit even then is printed at the minimum widths.
    """
    headers = [escape_control(h) for h in headers]
    natural = [display_width(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            natural[i] = max(natural[i], display_width(escape_control(cell)))
    widths = list(natural)
    gap = 2
    if width > 0:
        minimum = [
            min(widths[i], (min_widths or {}).get(h, max(display_width(h), 6))) for i, h in enumerate(headers)
        ]
        excess = sum(widths) + gap * (len(widths) - 1) - width
        while excess > 0:
            candidates = [i for i in range(len(widths)) if widths[i] > minimum[i]]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1
    shortened = any(n > w for n, w in zip(natural, widths, strict=True))

    def lines() -> Iterator[str]:
        for cells in itertools.chain([headers, ["-" * w for w in widths]], rows):
            out = []
            for cell, w in zip(cells, widths, strict=True):
                text = truncate(escape_control(cell), w)
                out.append(text + " " * (w - display_width(text)))
            yield (" " * gap).join(out).rstrip() + "\n"

    return lines(), shortened


def json_list_chunks(rows: Iterable[Any], *, chunk_rows: int = 1000) -> Iterator[str]:
    """A JSON array of ``rows`` (see `to_json`), one compact row per line, in chunks of text.

    Streaming keeps a million-row listing from being held twice in memory as one string.
    """
    yield "["
    lines: list[str] = []
    first = True
    for row in rows:
        lines.append(("\n  " if first else ",\n  ") + to_json(row, indent=None))
        first = False
        if len(lines) >= chunk_rows:
            yield "".join(lines)
            lines = []
    yield "".join(lines) + ("]\n" if first else "\n]\n")


def csv_chunks(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    free_text: Collection[str] = (),
    chunk_rows: int = 1000,
) -> Iterator[str]:
    """RFC 4180 CSV (with ``\\n`` line ends) in chunks of text.

    In the ``free_text`` columns (names people choose), a cell that a spreadsheet would run as a
    formula gets a leading ``'`` (OWASP "CSV injection"). Other columns are left exact: a public id
    may legitimately begin with ``-``.
    """
    guarded = [header in free_text for header in headers]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    for count, row in enumerate(rows, 1):
        writer.writerow(
            [
                f"'{cell}" if guard and cell.startswith(_FORMULA_START) else cell
                for cell, guard in zip(row, guarded, strict=True)
            ]
        )
        if count % chunk_rows == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


# -- progress --------------------------------------------------------------------------------------


def progress_bar(*, total: int | None, unit: str, enabled: bool = True) -> tqdm[Any]:
    """A progress bar on stderr, shown only when stderr is a terminal (never in cron mail or pipes).

    ``enabled`` False (``--no-progress``) hides it everywhere. Update it with ``bar.update(n)`` and
    close it (it is a context manager).
    """
    return tqdm(
        total=total,
        unit=f" {unit}",
        unit_scale=True,
        file=sys.stderr,
        disable=None if enabled else True,  # None: tqdm disables itself when stderr is not a TTY
        delay=0.5,
        dynamic_ncols=True,
    )
