"""The operations commands' shared argument types (`sessions_app.management.cli`); no database."""

from __future__ import annotations

import datetime as dt
import getpass

import pytest
from django.core.management import CommandError
from django.db import OperationalError

from sessions_app.management.cli import (
    database_error,
    operator_name,
    parse_duration,
    parse_instant,
    parse_json,
    parse_text,
)
from sessions_app.management.output import progress_bar

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", dt.timedelta(days=90)),
        ("24h", dt.timedelta(hours=24)),
        ("15m", dt.timedelta(minutes=15)),
        ("3600s", dt.timedelta(hours=1)),
        ("2w", dt.timedelta(weeks=2)),
        (" 7d ", dt.timedelta(days=7)),
    ],
)
def test_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_duration("--x", text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("90", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("-1d", "is not a duration"),
        ("5y", "is not a duration"),
        ("90D", "is not a duration"),
        ("0s", "greater than zero"),
        ("5300w", "longer than a century"),
        ("9" * 50 + "s", "is not a duration"),
        ("", "is not a duration"),
    ],
)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message) as info:
        parse_duration("--x", text)
    assert str(info.value).startswith("--x: ")
    assert info.value.returncode == 1


@pytest.mark.parametrize(
    ("text", "direction", "expected"),
    [
        ("24h", "past", NOW - dt.timedelta(hours=24)),
        ("30d", "future", NOW + dt.timedelta(days=30)),
        ("2026-04-01", "past", dt.datetime(2026, 4, 1, tzinfo=dt.UTC)),
        ("2026-04-01T10:30", "past", dt.datetime(2026, 4, 1, 10, 30, tzinfo=dt.UTC)),
        ("2026-04-01T10:30:00Z", "past", dt.datetime(2026, 4, 1, 10, 30, tzinfo=dt.UTC)),
        ("2026-04-01T12:30:00+02:00", "past", dt.datetime(2026, 4, 1, 10, 30, tzinfo=dt.UTC)),
    ],
)
def test_instants(text: str, direction: str, expected: dt.datetime) -> None:
    assert parse_instant("--since", text, now=NOW, direction=direction) == expected  # type: ignore[arg-type]


def test_bad_instants_are_escaped_and_shortened() -> None:
    with pytest.raises(CommandError) as info:
        parse_instant("--since", "2026-13-01\n\x1b[31m" + "x" * 200, now=NOW)
    message = str(info.value)
    assert "\n" not in message
    assert "\x1b" not in message
    assert message.startswith("--since: '2026-13-01\\n\\x1b[31m")
    assert "…' is neither a duration" in message
    assert len(message) < 250


def test_json_and_text_options() -> None:
    assert parse_json("--filters", '[["a", "=", 1]]') == [["a", "=", 1]]
    assert parse_json("--filters", None) is None
    for bad, message in (
        ("[", "invalid JSON"),
        ("[NaN]", "NaN is not valid JSON"),
        ("[" * 100_000, "--filters"),
    ):
        with pytest.raises(CommandError, match=message):
            parse_json("--filters", bad)
    assert parse_text("--reason", "ok", max_length=5) == "ok"
    assert parse_text("--reason", None, max_length=5) is None
    with pytest.raises(CommandError, match="at most 5 characters"):
        parse_text("--reason", "toolong", max_length=5)


def test_operator_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "ops")
    assert operator_name() == "manage.py:ops"

    def nobody() -> str:
        raise OSError("no passwd entry")

    monkeypatch.setattr(getpass, "getuser", nobody)
    assert operator_name().startswith("manage.py:uid")


def test_database_errors_are_one_line() -> None:
    error = database_error(OperationalError("database is locked\nmore detail"))
    assert str(error) == "database error: database is locked"
    assert str(database_error(OperationalError(""))) == "database error: OperationalError"


def test_progress_bar_is_silent_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(total=10, unit="rows") as bar:
        bar.update(10)
    with progress_bar(total=10, unit="rows", enabled=False) as bar:
        bar.update(10)
    assert capsys.readouterr().err == ""
