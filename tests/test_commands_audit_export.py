"""``manage.py audit_export``: the window, JSON Lines and CSV, --output files, streaming, bad input."""

from __future__ import annotations

import csv
import datetime as dt
import json
import stat
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from sessions_app.management.output import to_json
from sessions_app.models import AuditEvent, AuditRecord
from sessions_app.reports import audit_rows_between
from sessions_app.selectors import audit_query

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def export(*args: str) -> str:
    out = StringIO()
    call_command("audit_export", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def record(at: dt.datetime, **fields: Any) -> AuditRecord:
    fields.setdefault("event", AuditEvent.AUTHENTICATION)
    fields.setdefault("success", True)
    fields.setdefault("username", "alice")
    fields.setdefault("address", "10.0.0.1:5000")
    fields.setdefault("event_data", {"credentials": "LOGIN_PASSWORD"})
    return AuditRecord.objects.create(timestamp=at, **fields)


@pytest.fixture
def records(db: None) -> list[AuditRecord]:
    return [
        record(T0 - dt.timedelta(seconds=1), username="before"),
        record(T0, username="first"),
        record(
            T0 + dt.timedelta(minutes=5, microseconds=250_000), username="evil\n\x1b[31m\u202e", success=False
        ),
        record(T0 + dt.timedelta(hours=1), username="=HYPERLINK(1)", event=AuditEvent.LOGOUT),
        record(T0 + dt.timedelta(hours=2), username="at-until"),
    ]


WINDOW = ("--since", "2026-05-01T12:00", "--until", "2026-05-01T14:00:00Z")


def test_jsonl_is_the_window_oldest_first_as_ejson_rows(records: list[AuditRecord]) -> None:
    lines = export(*WINDOW).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["username"] for r in rows] == ["first", "evil\n\x1b[31m\u202e", "=HYPERLINK(1)"]
    first = rows[0]
    assert sorted(first) == [
        "address",
        "audit_id",
        "event",
        "event_data",
        "session",
        "success",
        "timestamp",
        "username",
    ]
    assert first["timestamp"] == {"$date": int(T0.timestamp() * 1000)}
    assert lines[0] == json.dumps(first, sort_keys=True, ensure_ascii=False)
    # Terminal-safe: control characters are JSON escapes, never raw.
    assert "\x1b" not in lines[1]
    assert "\u202e" not in lines[1]
    assert "\\u001b" in lines[1]
    # Every line is an audit.query row, and its values filter back into audit.query.
    for row in rows:
        (match,) = audit_query(filters=[["audit_id", "=", row["audit_id"]]])
        assert json.loads(to_json(match, indent=None)) == row
    assert len(audit_query(filters=[["timestamp", ">=", rows[1]["timestamp"]]])) == 3


def test_csv_is_escaped_and_guarded(records: list[AuditRecord]) -> None:
    text = export(*WINDOW, "--format", "csv")
    assert "\x1b" not in text
    rows = list(csv.DictReader(StringIO(text)))
    assert [r["username"] for r in rows] == ["first", "evil\\n\\x1b[31m\\u202e", "'=HYPERLINK(1)"]
    assert rows[0]["timestamp"] == "2026-05-01T12:00:00.000Z"
    assert rows[1]["timestamp"] == "2026-05-01T12:05:00.250Z"
    assert rows[1]["success"] == "false"
    assert json.loads(rows[0]["event_data"]) == {"credentials": "LOGIN_PASSWORD"}
    assert text.splitlines()[0] == "audit_id,timestamp,event,username,session,address,success,event_data"


def test_until_defaults_to_now_and_durations_count_back(records: list[AuditRecord]) -> None:
    assert export("--since", "2026-05-01").count("\n") == 5
    recent = record(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    lines = export("--since", "1h").splitlines()
    assert [json.loads(line)["audit_id"] for line in lines] == [recent.audit_id]
    assert export("--since", "1h", "--until", "15m") == ""


def test_output_file_is_private_complete_and_renamed(records: list[AuditRecord], tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    err = StringIO()
    call_command("audit_export", *WINDOW, "--output", str(target), stdout=StringIO(), stderr=err)
    assert target.read_text() == export(*WINDOW)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]
    assert "Exported 3 audit records" in err.getvalue()
    call_command("audit_export", *WINDOW, "--format", "csv", "--output", str(target), stdout=StringIO())
    assert target.read_text() == export(*WINDOW, "--format", "csv")


def test_a_failed_export_leaves_no_file(records: list[AuditRecord], tmp_path: Path, monkeypatch: Any) -> None:
    target = tmp_path / "audit.jsonl"

    def broken(**kwargs: Any) -> Any:
        yield {"audit_id": "x", "timestamp": T0}
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sessions_app.management.commands.audit_export.audit_rows_between", broken)
    with pytest.raises(CommandError, match="writing .* failed: No space left on device"):
        export(*WINDOW, "--output", str(target))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.django_db
def test_many_rows_stream_in_chunks() -> None:
    AuditRecord.objects.bulk_create(
        AuditRecord(
            event=AuditEvent.METHOD_CALL,
            success=True,
            timestamp=T0 + dt.timedelta(seconds=i),
            event_data={"i": i},
        )
        for i in range(2500)
    )
    lines = export("--since", "2026-05-01", "--until", "2026-05-02").splitlines()
    assert [json.loads(line)["event_data"]["i"] for line in lines] == list(range(2500))
    rows = list(export("--since", "2026-05-01", "--until", "2026-05-02", "--format", "csv").splitlines())
    assert len(rows) == 2501
    stream = audit_rows_between(since=T0, until=T0 + dt.timedelta(days=1), chunk_size=100)
    assert next(stream)["event_data"] == {"i": 0}
    stream.close()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: --since"),
        (["--since", "soon"], "--since: 'soon' is neither a duration"),
        (["--since", "2026-02-30"], "--since: '2026-02-30' is neither"),
        (["--since", "1h", "--until", "2h"], "--since must be before --until"),
        (["--since", "1h", "--format", "xml"], "invalid choice: 'xml'"),
        (["--since", "1h", "--output", "/nonexistent/dir/x"], "--output: cannot write '/nonexistent/dir/x'"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message) as info:
        export(*args)
    assert info.value.returncode == 1
    assert "\n" not in str(info.value)


@pytest.mark.django_db(transaction=True)
def test_streams_outside_a_transaction_too() -> None:
    """The command's real situation: autocommit (on PostgreSQL, its own read-only transaction)."""
    for i in range(5):
        record(T0 + dt.timedelta(seconds=i), username=f"u{i}")
    lines = export("--since", "2026-05-01", "--until", "2026-05-02").splitlines()
    assert [json.loads(line)["username"] for line in lines] == [f"u{i}" for i in range(5)]
    stream = audit_rows_between(since=T0, until=T0 + dt.timedelta(days=1), chunk_size=2)
    assert next(stream)["username"] == "u0"
    stream.close()  # closing mid-way ends the export's transaction (PostgreSQL) / restores mmap (SQLite)
    assert AuditRecord.objects.count() == 5
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA mmap_size")
            assert cursor.fetchone()[0] == 268435456
