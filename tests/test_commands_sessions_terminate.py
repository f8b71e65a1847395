"""``manage.py sessions terminate``: by id, by user, by filters; cascades, audit (who and why), batches."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from sessions_app.models import AuditRecord, Credentials, EndReason, Token, UserSession
from sessions_app.services.maintenance import sessions_terminate
from tests.factories import session

ACTOR = "manage.py:tester"


@pytest.fixture(autouse=True)
def _os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sessions_app.management.cli.getpass.getuser", lambda: "tester")


def terminate(*args: str) -> str:
    out = StringIO()
    call_command("sessions", "terminate", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def saved(**fields: Any) -> UserSession:
    row = session(**fields)
    row.save()
    return row


def ended(row: UserSession) -> UserSession:
    row.refresh_from_db()
    return row


@pytest.mark.django_db
def test_terminate_by_ids_ends_them_and_audits_who_and_why() -> None:
    a, b, other = saved(username="alice"), saved(username="bob"), saved(username="carol")
    out = terminate("--reason", "incident 42: stolen laptop", "--", a.public_id, b.public_id)
    assert out.strip() == "Ended 2 sessions."
    for row in (a, b):
        row = ended(row)
        assert (row.end_reason, row.ended_by) == (EndReason.TERMINATED, ACTOR)
        record = AuditRecord.objects.get(event_data__method="session.end", session=row.public_id)
        assert record.username == ACTOR
        assert record.event_data["note"] == "incident 42: stolen laptop"
        assert record.event_data["end_reason"] == EndReason.TERMINATED
    assert ended(other).ended_at is None
    summary = AuditRecord.objects.get(event_data__method="sessions.terminate")
    assert summary.username == ACTOR
    assert summary.success is True
    assert summary.event_data == {
        "method": "sessions.terminate",
        "reason": "incident 42: stolen laptop",
        "selection": {"ids": [a.public_id, b.public_id]},
        "selected": 2,
        "ended": 2,
        "completed": True,
    }


@pytest.mark.django_db
def test_ids_beginning_with_a_dash_follow_a_double_dash() -> None:
    row = saved(public_id="-" + "a" * 63)
    with pytest.raises(CommandError, match="unrecognized arguments"):
        terminate(row.public_id)
    assert terminate("--", row.public_id).strip() == "Ended 1 session."


@pytest.mark.django_db
def test_terminate_by_id_cascades_to_tokens_and_derived_sessions() -> None:
    parent = saved(username="alice")
    token = Token.objects.create(
        token_hash="x" * 64, session=parent, expires_at=parent.expires_at, single_use=False
    )
    child = saved(
        username="alice", credentials=Credentials.TOKEN, parent=parent, root_credentials="LOGIN_PASSWORD"
    )
    terminate("--", parent.public_id)
    assert not Token.objects.filter(pk=token.pk).exists()
    assert ended(child).end_reason == EndReason.PARENT_ENDED


@pytest.mark.django_db
def test_unknown_or_ended_ids_end_nothing() -> None:
    live = saved()
    gone = saved(ended_at=dt.datetime.now(dt.UTC), end_reason=EndReason.LOGOUT)
    with pytest.raises(CommandError, match=r"unknown session id: 'nope\\n'") as info:
        terminate("--", live.public_id, "nope\n")
    assert info.value.returncode == 1
    with pytest.raises(CommandError, match="is not active"):
        terminate("--", live.public_id, gone.public_id)
    assert ended(live).ended_at is None
    assert not AuditRecord.objects.exists()


@pytest.mark.django_db
def test_terminate_by_user(make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    mine = [saved(user=alice, username="alice") for _ in range(3)]
    theirs = saved(user=bob, username="bob")
    assert terminate("--user", "alice").strip() == "Ended 3 sessions."
    assert all(ended(row).end_reason == EndReason.TERMINATED for row in mine)
    assert ended(theirs).ended_at is None
    assert AuditRecord.objects.get(event_data__method="sessions.terminate").event_data["selection"] == {
        "user": "alice"
    }
    assert terminate("--user", "alice").strip() == "No active session matches; nothing to end."
    with pytest.raises(CommandError, match="unknown user: 'mallory'"):
        terminate("--user", "mallory")


@pytest.mark.django_db
def test_terminate_by_filters_exact_and_in_python() -> None:
    office = [saved(origin=f"10.9.0.{i}:4000", username=f"u{i}") for i in range(3)]
    home = saved(origin="192.168.1.5:4000", username="u9")
    out = terminate("--filters", '[["origin", "^", "10.9."]]', "--reason", "office network compromised")
    assert out.strip() == "Ended 3 sessions."
    assert all(ended(row).ended_at is not None for row in office)
    assert ended(home).ended_at is None
    # A regex is checked in Python after the SQL prefilter; the result is the same.
    terminate("--filters", '[["credentials_data.username", "~", "^u[89]$"]]')
    assert ended(home).end_reason == EndReason.TERMINATED
    summary = AuditRecord.objects.filter(event_data__method="sessions.terminate").order_by("pk").first()
    assert summary is not None
    assert summary.event_data["selection"] == {"filters": [["origin", "^", "10.9."]]}


@pytest.mark.django_db
def test_filters_round_trip_from_sessions_list_json() -> None:
    rows = [
        saved(username=f"u{i}", created_at=dt.datetime(2026, 5, 1, 12, i, tzinfo=dt.UTC)) for i in range(3)
    ]
    out = StringIO()
    call_command("sessions", "list", "--format", "json", stdout=out)
    listed = json.loads(out.getvalue())
    target = next(r for r in listed if r["credentials_data"]["username"] == "u1")
    filters = [["created_at", "=", target["created_at"]], ["id", "=", target["id"]]]
    assert terminate("--filters", json.dumps(filters)).strip() == "Ended 1 session."
    assert [ended(r).ended_at is not None for r in rows] == [False, True, False]


@pytest.mark.django_db
def test_dry_run_changes_nothing_and_lists_the_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    rows = [saved(origin="10.9.0.1:4000", username=f"evil\x1b[2J{i}") for i in range(2)]
    out = terminate("--filters", '[["origin", "^", "10.9."]]', "--dry-run")
    assert "Dry run: would end 2 sessions; nothing changed." in out
    assert all(r.public_id in out for r in rows)
    assert "\x1b" not in out
    assert "evil\\x1b[2J0" in out
    assert all(ended(r).ended_at is None for r in rows)
    assert not AuditRecord.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message", "status"),
    [
        ([], "exactly one of", 2),
        (["--user", "a", "--filters", "[]"], "exactly one of", 2),
        (["x", "--user", "a"], "exactly one of", 2),
        (["--filters", "not json"], "--filters: invalid JSON", 1),
        (["--filters", '[["nope", "=", 1]]'], "--filters: ", 1),
        (["--filters", '[["origin", "~", "("]]'], "--filters: ", 1),
        (["--user", "a", "--reason", "x" * 201], "--reason: at most 200 characters", 1),
        (["--user", "a", "--reason", "a\x00b"], "--reason: must not contain NUL", 1),
        (["--user", "a", "--batch-size", "0"], "--batch-size", 1),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, status: int) -> None:
    with pytest.raises(CommandError, match=message) as info:
        terminate(*args)
    assert info.value.returncode == status
    assert "\n" not in str(info.value)


@pytest.mark.django_db
def test_service_works_in_batches_and_skips_sessions_ended_meanwhile() -> None:
    rows = [saved(username=f"u{i}") for i in range(5)]
    UserSession.objects.filter(pk=rows[2].pk).update(
        ended_at=dt.datetime.now(dt.UTC), end_reason=EndReason.LOGOUT
    )
    progress: list[int] = []
    n = sessions_terminate(
        pks=[r.pk for r in rows], actor=ACTOR, reason=None, batch_size=2, progress=progress.append
    )
    assert n == 4
    assert progress == [2, 2, 1]
    assert ended(rows[2]).end_reason == EndReason.LOGOUT
    summary = AuditRecord.objects.get(event_data__method="sessions.terminate")
    assert (summary.event_data["selected"], summary.event_data["ended"]) == (5, 4)


@pytest.mark.django_db
def test_a_failed_batch_is_still_summarised(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [saved(username=f"u{i}") for i in range(3)]

    def boom(**kwargs: Any) -> bool:
        raise RuntimeError("disk full")

    monkeypatch.setattr("sessions_app.services.maintenance.sessions_end_batch", boom)
    with pytest.raises(RuntimeError):
        sessions_terminate(pks=[r.pk for r in rows], actor=ACTOR, reason="why")
    summary = AuditRecord.objects.get(event_data__method="sessions.terminate")
    assert summary.success is False
    assert summary.event_data["completed"] is False
    assert summary.event_data["ended"] == 0
