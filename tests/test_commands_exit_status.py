"""Every operations command run as a real process: exit status, and one line on stderr for bad input.

E15: unknown user, session or key id, bad duration or date, invalid filter JSON -> exit status 1 and
one ``CommandError: …`` line; usage errors -> 2 (argparse's usage line, then its one-line error);
``audit_sessions`` findings -> 3. Never a traceback, never a raw control character. The cases of a
command run in parallel against a copy of one migrated SQLite database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EVIL = "evil\x1b[31m"

Case = tuple[Sequence[str], int, str]


def _env(database: Path) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SECRET_KEY": "x", "DATABASE_URL": f"sqlite:///{database}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def _run(database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_env(database),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database with one user, ``alice``."""
    database = tmp_path_factory.mktemp("commands") / "template.sqlite3"
    for args in (
        ["migrate", "-v0"],
        ["shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('alice')"],
    ):
        done = _run(database, *args)
        assert done.returncode == 0, done.stderr
    return database


@pytest.fixture
def database(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "db.sqlite3"
    shutil.copyfile(template, copy)
    return copy


def check(database: Path, command: str, cases: Sequence[Case]) -> None:
    """Run every case of ``command`` in parallel; check status, stdout and stderr."""
    processes = [
        subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "manage.py", command, *args],
            cwd=ROOT,
            env=_env(database),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, _, _ in cases
    ]
    for (args, status, message), process in zip(cases, processes, strict=True):
        stdout, stderr = process.communicate(timeout=120)
        where = (command, *args)
        assert process.returncode == status, (where, stderr[-800:])
        assert "Traceback" not in stderr, where
        assert "\x1b" not in stderr + stdout, where
        lines = stderr.strip().splitlines()
        if status == 0:
            assert message in stdout, (where, stdout[-800:])
            continue
        assert stdout == "" or status == 3, where
        if status == 2 and not lines[-1].startswith("CommandError"):  # argparse: usage, then the error
            assert lines[-1].startswith(f"manage.py {command}"), (where, lines)
        else:
            assert len(lines) == 1, (where, lines)
        assert message in lines[-1], (where, lines[-1])


def test_sessions_terminate(database: Path) -> None:
    check(
        database,
        "sessions",
        [
            (["terminate", "--user", "nobody"], 1, "CommandError: unknown user: 'nobody'"),
            (["terminate", "--user", EVIL], 1, "unknown user: 'evil\\x1b[31m'"),
            (["terminate", "--filters", "{"], 1, "--filters: invalid JSON"),
            (["terminate"], 2, "exactly one of: ID…, --user NAME, --filters JSON"),
            (["terminate", "--user", "alice"], 0, "No active session matches"),
        ],
    )


def test_sessions_purge(database: Path) -> None:
    check(
        database,
        "sessions",
        [
            (["purge", "--older-than", "90"], 1, "--older-than: '90' is not a duration"),
            (["purge", "--batch-size", "many"], 2, "invalid int value: 'many'"),
            (["purge", "--dry-run"], 0, "dry run: nothing changed"),
        ],
    )
    done = _run(database, "sessions", "purge", "--older-than", "30d")
    assert (done.returncode, done.stderr) == (0, "")
    assert "done in" in done.stdout


def test_audit_sessions(database: Path) -> None:
    check(
        database,
        "audit_sessions",
        [
            (["--since", "nope"], 1, "--since: 'nope' is neither a duration"),
            (["--format", "xml"], 2, "invalid choice: 'xml'"),
            ([], 0, "All checks clean."),
        ],
    )
    created = _run(database, "api_key", "create", "--user", "alice", "--name", "soon", "--expires", "2d")
    assert created.returncode == 0, created.stderr
    check(
        database,
        "audit_sessions",
        [
            ([], 3, "CommandError: 1 check needs attention: expiring_api_keys 1"),
            (["--expiring-days", "1"], 0, "All checks clean."),
        ],
    )


def test_audit_export(database: Path) -> None:
    check(
        database,
        "audit_export",
        [
            ([], 2, "the following arguments are required: --since"),
            (["--since", "2026-99-01"], 1, "--since: '2026-99-01' is neither a duration"),
            (["--since", "1h", "--output", "/nonexistent/x"], 1, "--output: cannot write '/nonexistent/x'"),
            (["--since", "1h", "--format", "csv"], 0, "audit_id,timestamp,event"),
        ],
    )


def test_api_key(database: Path) -> None:
    check(
        database,
        "api_key",
        [
            (["create", "--user", "nobody", "--name", "k"], 1, "unknown user: 'nobody'"),
            (["revoke", "42"], 1, "unknown API key id: '42'"),
            (["revoke"], 2, "the following arguments are required: ID"),
        ],
    )
    created = _run(database, "api_key", "create", "--user", "alice", "--name", "k")
    assert (created.returncode, created.stderr) == (0, "")
    assert len(created.stdout.splitlines()) == 1  # the key, alone
    again = _run(database, "api_key", "create", "--user", "alice", "--name", "k")
    assert again.returncode == 1
    assert again.stderr == "CommandError: --name: an API key with this name already exists\n"
    key_id = created.stdout.split("-", 1)[0]
    revoked = _run(database, "api_key", "revoke", key_id, "--reason", "rotated")
    assert (revoked.returncode, revoked.stderr) == (0, "")


def test_onetime_password(database: Path) -> None:
    check(
        database,
        "onetime_password",
        [
            (["nobody"], 1, "unknown user: 'nobody'"),
            ([EVIL], 1, "unknown user: 'evil\\x1b[31m'"),
            ([], 2, "the following arguments are required: NAME"),
            (["alice"], 0, ""),
        ],
    )


def test_unlock_user(database: Path, tmp_path: Path) -> None:
    check(
        database,
        "unlock_user",
        [
            ([], 2, "the following arguments are required: username"),
            (["alice"], 0, "'alice' was not locked"),
        ],
    )
    # A database the command cannot use is one line too (here: not migrated).
    check(
        tmp_path / "empty.sqlite3",
        "unlock_user",
        [(["alice"], 1, "CommandError: database error: no such table")],
    )
