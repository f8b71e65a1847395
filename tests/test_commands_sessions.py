"""``manage.py sessions list``: the three formats, JSON round trips, one-line errors and exit codes."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from sessions_app.management.commands.sessions import ROW_ORDER
from sessions_app.management.demo.seed import demo_seed
from sessions_app.management.output import (
    csv_chunks,
    escape_control,
    json_list_chunks,
    render_table,
    to_json,
)
from sessions_app.models import Credentials, EndReason
from tests.factories import session

ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
EVIL = "evil\nname\x1b[31m\u202e"


def run(*args: str) -> str:
    out = StringIO()
    call_command("sessions", "list", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def run_json(*args: str) -> Any:
    return json.loads(run("--format", "json", *args))


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")


@pytest.fixture
def seeded(db: None) -> None:
    demo_seed(sessions=60, seed=4, now=dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.mark.django_db
def test_table_lists_active_sessions_with_full_ids(seeded: None, wide: None) -> None:
    rows = run_json()
    lines = run().splitlines()
    assert lines[0].split() == [
        "id",
        "credentials",
        "username",
        "origin",
        "internal",
        "secure_transport",
        "created_at",
    ]
    assert len(lines) == 2 + len(rows)
    for line, row in zip(lines[2:], rows, strict=True):
        assert line.startswith(row["id"])
        assert row["credentials"] in line
        assert line.rstrip().endswith("Z")


@pytest.mark.django_db
def test_table_shrinks_to_the_terminal_and_says_so(seeded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    out, err = StringIO(), StringIO()
    call_command("sessions", "list", stdout=out, stderr=err)
    assert all(len(line) <= 100 for line in out.getvalue().splitlines())
    assert "…" in out.getvalue()
    assert "--format json" in err.getvalue()


@pytest.mark.django_db
def test_control_characters_are_escaped(wide: None) -> None:
    session(username=EVIL, origin="10.0.0.1:5000").save()
    table = run()
    assert "\x1b" not in table
    assert "\u202e" not in table
    assert "evil\\nname\\x1b[31m\\u202e" in table
    assert len(table.splitlines()) == 3
    text = run("--format", "json")
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert json.loads(text)[0]["credentials_data"]["username"] == EVIL
    rows = list(csv.reader(StringIO(run("--format", "csv"))))
    assert rows[1][rows[0].index("credentials_data.username")] == escape_control(EVIL)


@pytest.mark.django_db
def test_json_round_trips_into_filters(seeded: None) -> None:
    rows = run_json("--options", '{"order_by": ["-created_at"]}')
    assert rows
    assert all(isinstance(row["created_at"]["$date"], int) for row in rows)
    token = next(row for row in rows if row["credentials"] == Credentials.TOKEN)
    parent = token["credentials_data"]["parent"]
    filters = [
        ["id", "=", token["id"]],
        ["created_at", "=", token["created_at"]],
        ["credentials_data.username", "=", token["credentials_data"]["username"]],
        ["credentials_data.parent.credentials", "=", parent["credentials"]],
        ["origin", "=", token["origin"]],
    ]
    assert run_json("--filters", json.dumps(filters)) == [token]
    by_time = run_json("--filters", json.dumps([["created_at", ">=", rows[2]["created_at"]]]))
    assert [r["id"] for r in by_time] == [r["id"] for r in reversed(rows[:3])]


@pytest.mark.django_db
def test_csv_has_every_field_flattened(seeded: None) -> None:
    reader = list(csv.DictReader(StringIO(run("--format", "csv"))))
    rows = run_json()
    assert [r["id"] for r in reader] == [r["id"] for r in rows]
    assert {"credentials_data.username", "created_at", "credentials_data.parent.credentials"} <= set(
        reader[0]
    )
    assert list(reader[0]) == list(ROW_ORDER[:-3])  # a fixed header, whatever the rows hold
    empty = run("--format", "csv", "--history", "--filters", '[["id", "=", "none"]]')
    assert empty == ",".join(ROW_ORDER) + "\n"
    node = next(r for r in reader if r["credentials"] == Credentials.TRUENAS_NODE)
    assert node["credentials_data.username"] == ""
    assert node["internal"] == "true"
    assert node["created_at"].endswith("Z")


@pytest.mark.django_db
def test_count_and_get(seeded: None, wide: None) -> None:
    count = run("--options", '{"count": true}')
    assert count.strip().isdigit()
    assert int(count) == len(run_json())
    filters = '[["credentials", "=", "API_KEY"]]'
    row = run_json("--filters", filters, "--options", '{"get": true}')
    assert isinstance(row, dict)
    assert row["credentials"] == "API_KEY"
    table = run("--filters", filters, "--options", '{"get": true}')
    assert len(table.splitlines()) == 3
    assert row["id"] in table


@pytest.mark.django_db
def test_select_prints_the_selected_columns(seeded: None, wide: None) -> None:
    table = run("--options", '{"select": ["id", ["credentials_data.username", "who"]], "limit": 2}')
    assert table.splitlines()[0].split() == ["id", "who"]


@pytest.mark.django_db
def test_history(wide: None) -> None:
    session(ended_at=NOW, end_reason=EndReason.LOGOUT, ended_by="alice").save()
    session(username="bob").save()
    assert [r["credentials_data"]["username"] for r in run_json()] == ["bob"]
    rows = run_json("--history", "--options", '{"extra": {}}')
    assert len(rows) == 2
    ended = next(r for r in rows if r["ended_at"] is not None)
    assert ended["end_reason"] == "LOGOUT"
    assert ended["ended_at"] == {"$date": int(NOW.timestamp() * 1000)}
    table = run("--history")
    assert table.splitlines()[0].split()[-3:] == ["ended_at", "end_reason", "ended_by"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--filters", "not json"], "--filters: invalid JSON"),
        (["--options", "[1"], "--options: invalid JSON"),
        (["--filters", "[NaN]"], "NaN is not valid JSON"),
        (["--filters", '[["nope", "=", 1]]'], "unknown field"),
        (["--options", '{"limit": -1}'], "options.limit"),
        (["--options", "[]", "--history"], "must be a JSON object"),
        (["--filters", '[["id", "=", "x"]]', "--options", '{"get": true}'], "no session matches"),
    ],
)
def test_bad_input_is_a_command_error(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message) as info:
        run(*args)
    assert info.value.returncode == 1
    assert "\n" not in str(info.value)


def test_output_helpers() -> None:
    assert escape_control("a\tb\x00\x9b\u2028😀") == "a\\tb\\x00\\x9b\\u2028😀"
    assert escape_control("DOMAIN\\user") == "DOMAIN\\user"
    text = to_json({"b": dt.datetime(1970, 1, 1, 0, 0, 1, 999999, tzinfo=dt.UTC), "a": "\x1b\U000e0001"})
    assert text == '{\n  "a": "\\u001b\\udb40\\udc01",\n  "b": {\n    "$date": 1999\n  }\n}'
    assert json.loads(text)["a"] == "\x1b\U000e0001"
    lines, shortened = render_table(["id", "name"], [["abcdefghijklmnop", "漢字漢字"]], width=16)
    assert shortened
    assert list(lines) == ["id       name\n", "-------  -------\n", "abcdef…  漢字漢…\n"]
    lines, shortened = render_table(["a"], [["x\x1by"]], width=0)
    assert not shortened
    assert list(lines)[2] == "x\\x1by\n"
    assert "".join(csv_chunks(["id", "name"], [["-x", "=1+2"], ["-y", "@me"]], free_text={"name"})) == (
        "id,name\n-x,'=1+2\n-y,'@me\n"
    )
    assert "".join(json_list_chunks([])) == "[]\n"
    assert json.loads("".join(json_list_chunks([{"a": 1}] * 2500)))[2499] == {"a": 1}


def _manage(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SECRET_KEY": "x", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", "sessions", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["list", "--filters", "not json"], 1, "--filters: invalid JSON"),
        (["list", "--filters", '[["nope", "=", 1]]'], 1, "'nope': unknown field"),
        (["list", "--format", "xml"], 2, "invalid choice: 'xml'"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ],
)
def test_exit_status_and_one_line_on_stderr(
    tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    result = _manage(*args, tmp_path=tmp_path)
    assert result.returncode == status
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    lines = result.stderr.strip().splitlines()
    if status == 1:
        assert len(lines) == 1
    else:  # argparse: usage, then the one-line error
        assert lines[-1].startswith("manage.py sessions")
        assert message in lines[-1]
