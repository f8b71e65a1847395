"""``seed_demo`` / `demo.demo_seed`: every credential type, consistent columns, deterministic."""

from __future__ import annotations

import datetime as dt
import re
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from sessions_app import selectors
from sessions_app.audit import audit_record
from sessions_app.management.demo import history
from sessions_app.management.demo.population import DEMO_PREFIX
from sessions_app.management.demo.seed import demo_seed
from sessions_app.models import ApiKey, AuditEvent, AuditRecord, Credentials, EndReason, Token, UserSession
from sessions_app.services.sessions import user_auth_hash
from sessions_app.specs import ROOT_CREDENTIALS, SESSION_ROW_FIELDS, build_session_row
from tests.factories import session

pytestmark = pytest.mark.django_db

C = Credentials
USER_LOGINS = {C.LOGIN_PASSWORD, C.LOGIN_TWOFACTOR, C.LOGIN_ONETIME_PASSWORD, C.UNIX_SOCKET}
ROW_KEYS = {
    "id",
    "current",
    "internal",
    "origin",
    "credentials",
    "credentials_data",
    "created_at",
    "secure_transport",
}
HISTORY_KEYS = {"ended_at", "end_reason", "ended_by"}
TCP_ORIGIN = re.compile(
    r"^(10\.\d{1,3}\.\d{1,3}\.\d{1,3}|192\.168\.\d{1,3}\.\d{1,3}|127\.0\.0\.1|\[2001:db8::[0-9a-f]{1,4}\])"
    r":\d{5}$"
)
SOCKET_ORIGIN = re.compile(r"^UNIX socket \(pid=(\d+) uid=(\d+) gid=(\d+)\)$")
NODE_ORIGIN = re.compile(r"^192\.0\.2\.\d{1,3}:\d{5}$")
NOW = dt.datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)


def seed(**kwargs: Any) -> str:
    out = StringIO()
    call_command(
        "seed_demo", "--no-progress", *[str(a) for a in kwargs.pop("args", ())], stdout=out, **kwargs
    )
    return out.getvalue()


def user_data_ok(cred: str, data: dict[str, Any]) -> None:
    """``credentials_data`` of a root (non-TOKEN) credential has exactly the documented shape."""
    if cred == C.TRUENAS_NODE:
        assert data == {}
        return
    keys = {"username", "login_at", "api_key"} if cred == C.API_KEY else {"username", "login_at"}
    assert set(data) == keys
    assert isinstance(data["username"], str)
    assert data["username"].startswith(DEMO_PREFIX)
    assert isinstance(data["login_at"], dt.datetime)
    if cred == C.API_KEY:
        assert set(data["api_key"]) == {"id", "name"}
        assert ApiKey.objects.filter(pk=data["api_key"]["id"], name=data["api_key"]["name"]).exists()


def test_every_credential_type_with_consistent_columns() -> None:
    output = seed(sessions=300, seed=11)
    assert "300 sessions" in output
    now = timezone.now()
    sessions = list(UserSession.objects.all())
    assert len(sessions) == 300
    assert {s.credentials for s in sessions} == set(Credentials.values)
    by_pk = {s.pk: s for s in sessions}
    users = {u.pk: u for u in get_user_model().objects.all()}
    keys = {k.pk: k for k in ApiKey.objects.all()}

    rows = {values[0]: values for values in UserSession.objects.values_list(*SESSION_ROW_FIELDS)}
    for s in sessions:
        row = build_session_row(rows[s.pk], {"history": True, "current_pk": None})
        assert set(row) == ROW_KEYS | HISTORY_KEYS
        assert len(row["id"]) == 64
        assert re.fullmatch(r"[A-Za-z0-9_-]{64}", row["id"])
        data = row["credentials_data"]
        assert s.username_folded == (s.username.casefold() if s.username is not None else None)
        assert s.created_at <= s.last_seen_at
        assert s.created_at < s.expires_at
        assert s.created_at.microsecond % 1000 == 0  # millisecond precision, as on the wire
        if s.ended_at is None:
            assert s.end_reason is None
            assert s.ended_by is None
            assert s.expires_at > now
            assert s.last_seen_at <= now
        else:
            assert s.end_reason in EndReason.values
            assert s.created_at <= s.last_seen_at <= s.ended_at <= now

        if s.credentials == C.TOKEN:
            assert set(data) == {"parent", "username"}
            assert data["parent"]["credentials"] in ROOT_CREDENTIALS
            user_data_ok(data["parent"]["credentials"], data["parent"]["credentials_data"])
            parent = by_pk[s.parent_id]
            root = parent if parent.credentials != C.TOKEN else by_pk[parent.parent_id]
            while root.credentials == C.TOKEN:
                root = by_pk[root.parent_id]
            assert (root.credentials, root.username, root.login_at) == (
                s.root_credentials,
                s.root_username,
                s.root_login_at,
            )
            assert (root.api_key_id, root.api_key_name) == (s.root_api_key_id, s.root_api_key_name)
            assert data["username"] == parent.username
            assert s.user_id == parent.user_id
            assert s.created_at >= parent.created_at
            assert s.expires_at <= parent.expires_at
            if parent.ended_at is not None:
                assert s.ended_at is not None
                assert s.ended_at <= parent.ended_at
            assert TCP_ORIGIN.match(s.origin)
            assert not s.internal
        else:
            user_data_ok(s.credentials, data)
            assert s.parent_id is None
            assert s.root_credentials is None
        if s.credentials in USER_LOGINS | {C.API_KEY}:
            assert users[s.user_id].username == s.username
            assert s.login_at == s.created_at
        if s.user_id is not None:
            assert s.user_auth_hash == user_auth_hash(users[s.user_id])
        assert s.password_change_required == (s.credentials == C.LOGIN_ONETIME_PASSWORD)
        if s.credentials == C.API_KEY:
            assert keys[s.api_key_id].user_id == s.user_id
            assert s.secure_transport
        else:
            assert s.api_key_id is None
        if s.credentials == C.UNIX_SOCKET:
            match = SOCKET_ORIGIN.match(s.origin)
            assert match
            assert (s.peer_pid, s.peer_uid, s.peer_gid) == tuple(int(g) for g in match.groups())
            assert s.internal == (s.peer_uid == 0)
            assert s.secure_transport
        elif s.credentials == C.TRUENAS_NODE:
            assert NODE_ORIGIN.match(s.origin)
            assert s.internal
            assert s.user_id is None
            assert s.username is None
        elif s.credentials != C.TOKEN:
            assert TCP_ORIGIN.match(s.origin)
            assert not s.internal
            if s.origin.startswith("127.0.0.1:"):
                assert s.secure_transport


def test_mix_and_ended_fraction() -> None:
    result = demo_seed(sessions=2000, seed=3, now=NOW)
    counts = result.by_credentials
    assert sum(counts.values()) == 2000
    assert UserSession.objects.count() == 2000
    big = counts[C.LOGIN_PASSWORD] + counts[C.API_KEY] + counts[C.TOKEN]
    assert big > 0.7 * 2000
    assert counts[C.TRUENAS_NODE] < counts[C.TOKEN]
    ended = UserSession.objects.filter(ended_at__isnull=False).count()
    assert ended == result.ended
    assert 0.25 < ended / 2000 < 0.36
    assert UserSession.objects.active(NOW).count() == 2000 - ended
    assert (
        UserSession.objects.filter(end_reason=EndReason.PARENT_ENDED).exclude(credentials=C.TOKEN).count()
        == 0
    )


def test_demo_sessions_have_devices_like_real_logins() -> None:
    """Browser logins carry a browser, API keys a program; the unix socket and node peers none."""
    demo_seed(sessions=600, seed=4, now=NOW)
    rows = UserSession.objects.all()
    browsers = {r.device_label for r in rows if r.credentials in (C.LOGIN_PASSWORD, C.LOGIN_TWOFACTOR)}
    programs = {r.device_label for r in rows if r.credentials == C.API_KEY}
    assert {"Chrome on Windows", "Safari on iOS", "Firefox on Ubuntu"} <= browsers
    assert "TrueNAS API client" in programs
    assert not browsers & programs
    for row in rows.filter(credentials__in=[C.UNIX_SOCKET, C.TRUENAS_NODE]):
        assert (row.user_agent, row.device_label, row.client_address) == (None, None, None)
    for row in rows.filter(credentials=C.LOGIN_PASSWORD)[:50]:
        assert row.client_address is not None
        assert row.origin.startswith((row.client_address, f"[{row.client_address}]"))


def test_active_sessions_per_user_stay_within_the_cap(settings: Any) -> None:
    settings.SESSIONS_MAX_PER_USER = 4
    demo_seed(sessions=400, users=20, seed=8, now=NOW)
    per_user = (
        UserSession.objects.active(NOW)
        .exclude(user=None)
        .values("user")
        .annotate(n=Count("pk"))
        .order_by("-n")
    )
    assert per_user[0]["n"] <= 4
    assert UserSession.objects.filter(end_reason=EndReason.EVICTED).exists()


@pytest.mark.parametrize(("fraction", "ended"), [(0.0, 0), (1.0, 120)])
def test_ended_fraction_bounds(fraction: float, ended: int) -> None:
    result = demo_seed(sessions=120, seed=5, ended_fraction=fraction, now=NOW)
    assert result.ended == ended
    assert UserSession.objects.filter(ended_at__isnull=False).count() == ended


def snapshot() -> list[tuple[Any, ...]]:
    """Every session by natural keys (primary keys differ between runs)."""
    public_ids = dict(UserSession.objects.values_list("pk", "public_id"))
    rows = []
    for values in UserSession.objects.values_list(*SESSION_ROW_FIELDS, "parent_id", "user__username"):
        pk, *rest, parent_id, owner = values
        rows.append((*rest, public_ids.get(parent_id), owner))
    return sorted(rows, key=lambda r: r[0])


def keyless(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    # Drop api_key_id / root_api_key_id (primary keys); names identify the keys.
    skip = {SESSION_ROW_FIELDS.index("api_key_id") - 1, SESSION_ROW_FIELDS.index("root_api_key_id") - 1}
    return [tuple(v for i, v in enumerate(row) if i not in skip) for row in rows]


def test_deterministic_with_seed_and_now() -> None:
    demo_seed(sessions=250, seed=42, now=NOW, batch_size=64)
    first = keyless(snapshot())
    demo_seed(sessions=250, seed=42, now=NOW, batch_size=64, clear=True)
    assert keyless(snapshot()) == first
    demo_seed(sessions=250, seed=43, now=NOW, clear=True)
    assert keyless(snapshot()) != first


def test_command_is_deterministic_with_seed() -> None:
    seed(sessions=150, seed=9)
    first = sorted(UserSession.objects.values_list("public_id", "credentials", "username", "origin"))
    seed(args=["--clear"], sessions=150, seed=9)
    assert sorted(UserSession.objects.values_list("public_id", "credentials", "username", "origin")) == first


def test_batches_do_not_change_totals() -> None:
    result = demo_seed(sessions=103, seed=1, batch_size=10, now=NOW)
    assert result.sessions == UserSession.objects.count() == 103
    assert set(result.by_credentials) == set(Credentials.values)


def test_tiny_seed_without_api_keys() -> None:
    result = demo_seed(sessions=5, users=1, api_keys=0, seed=1, now=NOW)
    assert result.sessions == 5
    assert not UserSession.objects.filter(credentials=C.API_KEY).exists()
    assert get_user_model().objects.filter(username__startswith=DEMO_PREFIX).count() == 1


def test_users_share_one_unusable_password_and_keys_have_placeholder_hashes() -> None:
    demo_seed(sessions=50, users=12, api_keys=4, seed=2, now=NOW)
    users = get_user_model().objects.filter(username__startswith=DEMO_PREFIX)
    assert users.count() == 12
    assert len({u.password for u in users}) == 1
    assert not users[0].has_usable_password()
    keys = ApiKey.objects.all()
    assert keys.count() == 4
    assert all(re.fullmatch(r"[0-9a-f]{64}", k.key_hash) and k.name.startswith(DEMO_PREFIX) for k in keys)


def test_second_seed_without_clear_fails_and_clear_keeps_other_data() -> None:
    owner = get_user_model().objects.create(username="real_admin")
    session(user=owner, username="real_admin").save()
    session(credentials=C.TRUENAS_NODE, origin="10.0.0.7:443", internal=True).save()
    seed(sessions=40, seed=1)
    demo = UserSession.objects.filter(username__startswith=DEMO_PREFIX).first()
    Token.objects.create(token_hash="0" * 64, session=demo, expires_at=NOW)
    with pytest.raises(CommandError, match="rerun with --clear"):
        seed(sessions=40, seed=1)
    output = seed(args=["--clear"], sessions=0, seed=1)
    assert "Deleted 40 sessions" in output
    assert "Created" not in output
    assert UserSession.objects.count() == 2
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["real_admin"]
    assert ApiKey.objects.exclude(name__startswith=DEMO_PREFIX).count() == 0
    assert not Token.objects.exists()


@pytest.mark.parametrize(
    "args",
    [["--sessions", "-1"], ["--ended-fraction", "1.5"], ["--batch-size", "0"], ["--users", "x"]],
)
def test_bad_arguments_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(CommandError, match="Error: argument"):
        call_command("seed_demo", *args, stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_sqlite_bulk_load_settings_are_restored() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite connection settings")

    def pragmas() -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous")
            synchronous = cursor.fetchone()[0]
            cursor.execute("PRAGMA cache_size")
            return synchronous, cursor.fetchone()[0]

    before = pragmas()
    assert demo_seed(sessions=30, seed=1, now=NOW).sessions == 30
    assert pragmas() == before


# -- audit history ---------------------------------------------------------------------------------


def audit_rows() -> list[tuple[Any, ...]]:
    """Every audit record; an API key is named by its name only (primary keys differ between runs)."""
    rows = AuditRecord.objects.order_by("timestamp", "audit_id").values_list(
        "audit_id", "timestamp", "event", "username", "session", "address", "success", "event_data"
    )
    return [
        (*row[:-1], {**row[-1], "api_key_ref": row[-1]["api_key_ref"].partition(":")[2]})
        if "api_key_ref" in row[-1]
        else row
        for row in rows
    ]


def test_audit_history_matches_the_sessions() -> None:
    result = demo_seed(sessions=3000, seed=3, now=NOW)
    since = NOW - dt.timedelta(days=2)
    records = list(AuditRecord.objects.all())
    assert result.audit_records == len(records)
    assert all(r.event_data.get("demo") is True for r in records)
    assert all(since <= r.timestamp <= NOW for r in records)
    assert all(r.username is None or r.username.startswith(DEMO_PREFIX) for r in records)
    sessions = {s.public_id: s for s in UserSession.objects.all()}

    logins = [r for r in records if r.event == AuditEvent.AUTHENTICATION and r.success]
    # Every session opened in the window has its login record, with its time, user and address.
    opened = {p for p, s in sessions.items() if s.created_at >= since}
    assert sorted(r.session for r in logins) == sorted(opened)
    for r in logins:
        s = sessions[r.session]
        assert (r.timestamp, r.username, r.address) == (s.created_at, s.username, s.origin)
        assert r.event_data["credentials"] == s.credentials
    # Every end in the window: LOGOUT for a logout, METHOD_CALL session.end otherwise.
    ends = [r for r in records if r.event in (AuditEvent.LOGOUT, AuditEvent.METHOD_CALL)]
    ended = {p for p, s in sessions.items() if s.ended_at is not None and s.ended_at >= since}
    assert sorted(r.session for r in ends) == sorted(ended)
    for r in ends:
        s = sessions[r.session]
        assert r.timestamp == s.ended_at
        assert r.event_data["end_reason"] == s.end_reason
        assert (r.event == AuditEvent.LOGOUT) == (s.end_reason == EndReason.LOGOUT)
    assert any(r.event == AuditEvent.LOGOUT for r in ends)

    failed = [r for r in records if r.event == AuditEvent.AUTHENTICATION and not r.success]
    assert 0.02 < len(failed) / (len(failed) + len(logins)) < 0.25
    assert {r.event_data["error"] for r in failed} >= {"wrong password", "wrong code", "unknown user"}
    assert all(r.session is None for r in failed)
    # The dashboard's charts have something to show in (nearly) every hour.
    hours = selectors.audit_logins_per_hour(now=NOW)
    assert sum(1 for _, ok, _ in hours if ok) >= 20
    assert sum(failed for _, _, failed in hours) > 0


def test_audit_history_is_deterministic_with_seed_and_now() -> None:
    demo_seed(sessions=400, seed=42, now=NOW)
    first = audit_rows()
    assert first
    demo_seed(sessions=400, seed=42, now=NOW, clear=True)
    assert audit_rows() == first
    demo_seed(sessions=400, seed=43, now=NOW, clear=True)
    assert audit_rows() != first


def test_audit_history_does_not_change_the_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit history draws from its own generator: the sessions are those of a seed without it."""
    demo_seed(sessions=300, seed=6, now=NOW)
    first = keyless(snapshot())
    monkeypatch.setattr(history, "AUDIT_WINDOW_MS", 0)
    demo_seed(sessions=300, seed=6, now=NOW, clear=True)
    assert keyless(snapshot()) == first


def test_audit_history_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "AUDIT_MAX_EVENTS", 100)
    demo_seed(sessions=3000, seed=3, now=NOW)
    records = AuditRecord.objects.all()
    kept = records.exclude(event=AuditEvent.AUTHENTICATION, success=False)
    assert kept.count() == 100
    # The most recent ones: no login or end after the oldest kept is missing.
    oldest = kept.order_by("timestamp").first()
    assert oldest is not None
    opened = UserSession.objects.filter(created_at__gte=oldest.timestamp).count()
    ended = UserSession.objects.filter(ended_at__gte=oldest.timestamp).count()
    assert opened + ended == 100
    assert records.count() < 100 + 2 * 15 + 60  # failures: a few % of the logins and two small bursts


def test_demo_clear_removes_the_demo_audit_records_and_nothing_else() -> None:
    with transaction.atomic():
        audit_record(event=AuditEvent.AUTHENTICATION, success=True, username="real_admin", event_data={})
        audit_record(event=AuditEvent.AUTHENTICATION, success=False, username=None, address="10.0.0.1:5")
        audit_record(event=AuditEvent.AUTHENTICATION, success=False, username="demo_guess")  # a real guess
        # Not a demo user's record, whatever its data says.
        audit_record(
            event=AuditEvent.METHOD_CALL, success=True, username="real_admin", event_data={"demo": True}
        )
    real = audit_rows()
    seed(sessions=500, seed=1)
    assert AuditRecord.objects.count() > len(real)
    output = seed(args=["--clear"], sessions=0, seed=1)
    assert re.search(r"Deleted 500 sessions, \d+ API keys, \d+ users, [1-9]\d* audit records", output)
    assert audit_rows() == real


def test_command_reports_the_audit_records() -> None:
    output = seed(sessions=200, seed=2)
    count = AuditRecord.objects.count()
    assert count > 0
    assert f"and {count} audit records in" in output
