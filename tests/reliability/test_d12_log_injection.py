"""D12: log injection -- usernames and filter values holding ``\\n``, ``\\r``, ANSI escapes or a bidi
override are stored as they are but printed escaped: in the ``manage.py`` commands' output (``sessions
list`` / ``terminate``, ``audit_sessions``, ``audit_export``), in their one-line errors, and in the
server's logs (security.md group D; CVE-2025-48432; ASVS 5.0 V16.4.1).

The hostile values arrive the way an attacker sends them: as usernames of failed (and, for accounts
that exist, successful) logins through a real gunicorn, and as request paths.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from sessions_app.models import AuditRecord, UserSession
from tests.reliability.helpers_late import (
    Instance,
    create_user,
    gunicorn,
    leak_guard,  # noqa: F401 - fixture
    log_problems,
    login,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("leak_guard"),
]

FORGED = "INFO 2026-01-01 00:00:00 forged: root logged in"
HOSTILE = {
    "newline": f"evil\n{FORGED}",
    "carriage return": f"cr\r{FORGED}",
    "ansi": "ansi\x1b[31mRED\x1b[0m\x1b[2J",
    "bidi": "bidi\u202eexe.txt",
}
#: How each hostile value must be printed in tables and CSV (Python-style escapes).
PRINTED = {
    "newline": "evil\\nINFO 2026-01-01",
    "carriage return": "cr\\rINFO 2026-01-01",
    "ansi": "ansi\\x1b[31mRED\\x1b[0m\\x1b[2J",
    "bidi": "bidi\\u202eexe.txt",
}
#: How each is printed in JSON (JSON's own escapes).
IN_JSON = {
    "newline": "evil\\nINFO 2026-01-01",
    "carriage return": "cr\\rINFO 2026-01-01",
    "ansi": "ansi\\u001b[31mRED\\u001b[0m\\u001b[2J",
    "bidi": "bidi\\u202eexe.txt",
}
WITH_ACCOUNTS = ("newline", "ansi")
BURST = 2


@pytest.fixture(scope="module")
def server(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    with gunicorn(tmp_path_factory.mktemp("d12"), name="d12") as (started,):
        yield started


def terminal_unsafe(text: str) -> list[str]:
    """Characters that could forge a line or drive a terminal (anything non-printable but ``\\n``)."""
    return sorted({repr(ch) for ch in text if not ch.isprintable() and ch != "\n"})


def forged_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(FORGED[:20])]


def assert_printed_safely(text: str, expected: dict[str, str], kinds: Any = HOSTILE) -> None:
    assert terminal_unsafe(text) == []
    assert forged_lines(text) == []
    for kind in kinds:
        assert expected[kind] in text, (kind, text[:2000])


def command(*args: str) -> tuple[str, str]:
    """(stdout, error message) of a management command run in this process."""
    out, err = StringIO(), StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except CommandError as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def hostile_rows(server: Instance) -> dict[str, Any]:
    """Accounts with hostile names logged in through the server, and failed-login bursts of every
    hostile name (known account or not)."""
    for kind in WITH_ACCOUNTS:
        create_user(HOSTILE[kind])
        login(server, HOSTILE[kind])
    for name in HOSTILE.values():
        for _ in range(BURST):
            answer = server.call(
                "auth.login_ex",
                {"mechanism": "PASSWORD_PLAIN", "username": name, "password": "wrong-password"},
            )
            assert answer.result["response_type"] == "AUTH_ERR"
    return {"sessions": UserSession.objects.count(), "records": AuditRecord.objects.count()}


def test_D12_hostile_values_are_stored_exactly_and_printed_escaped(hostile_rows: dict[str, Any]) -> None:
    """Escaping is for display: the audit trail keeps the exact text (an investigator needs it), and
    every command prints it escaped."""
    failed = set(AuditRecord.objects.filter(success=False).values_list("username", flat=True))
    assert set(HOSTILE.values()) <= failed
    assert {HOSTILE[kind] for kind in WITH_ACCOUNTS} == set(
        UserSession.objects.values_list("username", flat=True)
    )
    check_sessions_list(hostile_rows)
    check_filters_and_errors(hostile_rows)
    check_audit_sessions()
    check_audit_export(hostile_rows)


def check_sessions_list(hostile_rows: dict[str, Any]) -> None:
    table, _ = command("sessions", "list")
    accounts = {kind: HOSTILE[kind] for kind in WITH_ACCOUNTS}
    assert_printed_safely(table, PRINTED, accounts)
    assert len(table.splitlines()) == 2 + hostile_rows["sessions"]  # header, rule, one line per row
    as_json, _ = command("sessions", "list", "--format", "json")
    assert_printed_safely(as_json, IN_JSON, accounts)
    assert {row["credentials_data"]["username"] for row in json.loads(as_json)} == set(accounts.values())
    as_csv, _ = command("sessions", "list", "--format", "csv")
    assert_printed_safely(as_csv, PRINTED, accounts)
    assert len(list(csv.reader(io.StringIO(as_csv)))) == 1 + hostile_rows["sessions"]


def check_filters_and_errors(hostile_rows: dict[str, Any]) -> None:
    name = HOSTILE["newline"]
    filters = json.dumps([["credentials_data.username", "=", name]])
    matched, _ = command("sessions", "list", "--filters", filters)
    assert_printed_safely(matched, PRINTED, ["newline"])
    assert len(matched.splitlines()) == 3
    dry_run, _ = command("sessions", "terminate", "--dry-run", "--filters", filters)
    assert_printed_safely(dry_run, PRINTED, ["newline"])
    # Errors quoting a hostile value: one line, escaped (the CLI prints "CommandError: <message>").
    for args in (
        ("sessions", "list", "--filters", json.dumps([[f"user\n{FORGED}\x1b[2J", "=", "x"]])),
        ("sessions", "terminate", "--user", f"nobody\n{FORGED}\x1b[2J"),
        ("sessions", "terminate", "--", f"no-such-id\r{FORGED}\x1b]0;title\x07"),
        ("audit_export", "--since", f"yesterday\n{FORGED}"),
    ):
        out, error = command(*args)
        assert error, args
        assert "\n" not in error, error
        assert terminal_unsafe(error) == [], error
        assert terminal_unsafe(out) == [], out
    assert UserSession.objects.filter(ended_at__isnull=True).count() == hostile_rows["sessions"]


def check_audit_sessions() -> None:
    table, status = command("audit_sessions", "--burst", str(BURST))
    assert "attention" in status  # the bursts are findings (exit status 3)
    assert_printed_safely(table, PRINTED)
    as_json, _ = command("audit_sessions", "--burst", str(BURST), "--format", "json")
    assert_printed_safely(as_json, IN_JSON)
    report = json.loads(as_json)
    assert set(HOSTILE.values()) <= {row["username"] for row in report["failed_logins_by_account"]["rows"]}


def check_audit_export(hostile_rows: dict[str, Any]) -> None:
    lines, _ = command("audit_export", "--since", "1h")
    assert_printed_safely(lines, IN_JSON)
    rows = [json.loads(line) for line in lines.splitlines()]
    assert len(rows) == hostile_rows["records"]  # one line per record: no line was forged or split
    assert set(HOSTILE.values()) <= {row["username"] for row in rows}
    as_csv, _ = command("audit_export", "--since", "1h", "--format", "csv")
    assert_printed_safely(as_csv, PRINTED)
    assert len(as_csv.splitlines()) == 1 + hostile_rows["records"]


def test_D12_server_logs_stay_one_line_per_entry(server: Instance) -> None:
    """Hostile request paths and headers: Django logs the path escaped; gunicorn refuses control
    characters in headers; neither log gets a forged line or a raw escape sequence."""
    for name in HOSTILE.values():
        login_failed = server.call(
            "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": name, "password": "wrong-password"}
        )
        assert login_failed.result["response_type"] == "AUTH_ERR"
    for path in (f"/sessions/x%0A{FORGED.replace(' ', '%20')}%1b[2J", "/api/v2.0/x%0D%0Aforged%1b[31m"):
        connection_ = server.connect()
        try:
            connection_.request("GET", path)
            assert connection_.getresponse().status == 404
        finally:
            connection_.close()
    connection_ = server.connect()
    try:
        connection_.request(
            "GET", "/sessions/", headers={"User-Agent": "ua\x1b[31mred", "X-Forwarded-For": "1.2.3.4"}
        )
        assert connection_.getresponse().status == 400
    finally:
        connection_.close()
    for log in (server.log, server.access_log):
        assert log is not None
        text = log.read_text(errors="replace")
        assert terminal_unsafe(text) == [], log
        assert forged_lines(text) == [], log
    assert "Not Found: /sessions/x\\n" in server.log.read_text()
    assert not log_problems([server])
