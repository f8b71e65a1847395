"""``manage.py audit_sessions``: every check, its thresholds, both formats and the exit status."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.models import ApiKey, AuditEvent, AuditRecord, Credentials, EndReason, UserSession
from sessions_app.reports import client_of, origin_network, token_chain_depths
from sessions_app.selectors import api_key_query, session_query
from tests.factories import session

DAY = dt.timedelta(days=1)


def report(*args: str, expect: int = 0) -> str:
    """The command's stdout; ``expect`` is the exit status (0 clean, 3 attention)."""
    out = StringIO()
    if expect == 0:
        call_command("audit_sessions", *args, stdout=out, stderr=StringIO())
    else:
        with pytest.raises(CommandError) as info:
            call_command("audit_sessions", *args, stdout=out, stderr=StringIO())
        assert info.value.returncode == expect, str(info.value)
        assert "\n" not in str(info.value)
    return out.getvalue()


def report_json(*args: str, expect: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(report("--format", "json", *args, expect=expect))
    return data


def saved(**fields: Any) -> UserSession:
    row = session(**fields)
    row.save()
    return row


def key(user: Any, name: str, **fields: Any) -> ApiKey:
    return ApiKey.objects.create(user=user, name=name, key_hash="0" * 64, **fields)


def fail(address: str, username: str | None, *, at: dt.datetime | None = None) -> None:
    AuditRecord.objects.create(
        event=AuditEvent.AUTHENTICATION,
        success=False,
        username=username,
        address=address,
        timestamp=at or timezone.now(),
        event_data={"mechanism": "PASSWORD_PLAIN", "error": "wrong password"},
    )


def counts(data: dict[str, Any]) -> dict[str, int]:
    return {f["check"]: f["count"] for f in data["findings"]}


@pytest.mark.django_db
def test_a_clean_database_exits_0_and_says_so() -> None:
    saved(credentials=Credentials.LOGIN_TWOFACTOR)
    out = report()
    assert "Active sessions: 1" in out
    assert "All checks clean." in out
    assert "ATTENTION" not in out
    assert "expected 0" in out
    data = report_json()
    assert data["status"] == "clean"
    assert set(counts(data).values()) == {0}
    assert data["over_limit_sessions"] == {"count": 0, "expired": 0, "idle": 0, "rows": []}


@pytest.mark.django_db
def test_active_sessions_by_type_user_and_network() -> None:
    for origin in ("10.1.2.3:5000", "10.1.2.99:6000", "10.1.3.1:5000"):
        saved(credentials=Credentials.LOGIN_TWOFACTOR, username="alice", origin=origin)
    saved(credentials=Credentials.API_KEY, username="bob", origin="[2001:db8::1]:443")
    saved(credentials=Credentials.UNIX_SOCKET, username="root", origin="UNIX socket (pid=7 uid=0 gid=0)")
    saved(ended_at=timezone.now(), end_reason=EndReason.LOGOUT, username="gone")
    data = report_json("--top", "2")
    active = data["active_sessions"]
    assert active["total"] == 5
    assert active["by_credentials"][0] == {"credentials": "LOGIN_TWOFACTOR", "count": 3}
    assert active["by_user"] == [{"username": "alice", "count": 3}, {"username": "bob", "count": 1}]
    assert active["by_network"] == [
        {"network": "10.1.2.0/24", "count": 2},
        {"network": "10.1.3.0/24", "count": 1},
    ]
    full = report_json()["active_sessions"]["by_network"]
    assert {"network": "2001:db8::/64", "count": 1} in full
    assert {"network": "unix socket", "count": 1} in full


def test_networks_and_clients() -> None:
    assert origin_network("10.1.2.3:5000") == "10.1.2.0/24"
    assert origin_network("[2001:db8:0:0:1::5]:443") == "2001:db8::/64"
    assert origin_network("[::ffff:192.0.2.7]:80") == "192.0.2.0/24"
    assert origin_network("UNIX socket (pid=1 uid=0 gid=0)") == "unix socket"
    assert origin_network("unknown:0") == "other"
    assert client_of("10.0.0.5:4000") == "10.0.0.5"
    assert client_of("[2001:db8::1]:4000") == "[2001:db8::1]"
    assert client_of("UNIX socket (pid=9 uid=1000 gid=1000)") == "unix socket (uid=1000)"
    assert client_of("") == ""


@pytest.mark.django_db
def test_sessions_past_their_limits_are_attention() -> None:
    now = timezone.now()
    expired = saved(expires_at=now - DAY)
    idle = saved(idle_timeout=60, last_seen_at=now - dt.timedelta(minutes=2))
    saved(idle_timeout=600, last_seen_at=now - dt.timedelta(minutes=2))  # within its limit
    data = report_json(expect=3)
    over = data["over_limit_sessions"]
    assert (over["count"], over["expired"], over["idle"]) == (2, 1, 1)
    assert {(r["id"], r["reason"]) for r in over["rows"]} == {
        (expired.public_id, "EXPIRED"),
        (idle.public_id, "IDLE"),
    }
    out = report(expect=3)
    assert "past the absolute limit: 1; past the idle limit: 1" in out
    assert "ATTENTION  2" in out


@pytest.mark.django_db
def test_dormant_and_expiring_api_keys(make_user: Any) -> None:
    now = timezone.now()
    alice = make_user("alice")
    never = key(alice, "never", created_at=now - 100 * DAY)
    stale = key(alice, "stale", created_at=now - 200 * DAY, last_used_at=now - 95 * DAY)
    key(alice, "new", created_at=now - DAY)  # not used yet, but young
    key(alice, "busy", created_at=now - 200 * DAY, last_used_at=now - DAY)
    key(alice, "revoked", created_at=now - 200 * DAY, revoked=True)
    key(alice, "expired", created_at=now - 200 * DAY, expires_at=now - DAY)
    soon = key(alice, "soon", last_used_at=now, expires_at=now + 3 * DAY)
    key(alice, "later", last_used_at=now, expires_at=now + 30 * DAY)
    data = report_json(expect=3)
    assert [r["id"] for r in data["dormant_api_keys"]["rows"]] == [never.pk, stale.pk]
    assert data["dormant_api_keys"]["rows"][0]["last_used_at"] is None
    assert [r["name"] for r in data["expiring_api_keys"]["rows"]] == ["soon"]
    assert report_json("--unused-days", "300", "--expiring-days", "1")["status"] == "clean"
    # Ids round-trip into api_key.query.
    assert api_key_query(filters=[["id", "=", soon.pk]])[0]["name"] == "soon"


@pytest.mark.django_db
def test_password_logins_without_totp(make_user: Any) -> None:
    now = timezone.now()
    alice, bob = make_user("alice"), make_user("bob")
    TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)
    for _ in range(2):
        saved(user=alice, username="alice", credentials=Credentials.LOGIN_PASSWORD)
    saved(user=bob, username="bob", credentials=Credentials.LOGIN_PASSWORD)
    saved(user=alice, username="alice", credentials=Credentials.LOGIN_PASSWORD, created_at=now - 3 * DAY)
    saved(user=alice, username="alice", credentials=Credentials.API_KEY)
    rows = report_json(expect=3)["password_logins_without_totp"]["rows"]
    assert [(r["username"], r["logins"]) for r in rows] == [("alice", 2)]
    rows = report_json("--since", "7d", expect=3)["password_logins_without_totp"]["rows"]
    assert [(r["username"], r["logins"]) for r in rows] == [("alice", 3)]


@pytest.mark.django_db
def test_failed_login_bursts_by_address_and_by_account() -> None:
    now = timezone.now()
    for i in range(6):  # one client spraying six accounts from several ports
        fail(f"203.0.113.9:{40000 + i}", f"user{i}")
    for i in range(5):  # one account attacked from five clients
        fail(f"198.51.100.{i}:5000", "bob")
    for _ in range(4):  # below the threshold
        fail("192.0.2.1:5000", "carol")
    for _ in range(5):  # outside the window
        fail("192.0.2.2:5000", "dave", at=now - 2 * DAY)
    AuditRecord.objects.create(event=AuditEvent.AUTHENTICATION, success=True, username="bob", address="x:1")
    data = report_json(expect=3)
    by_address = data["failed_logins_by_address"]["rows"]
    assert [(r["address"], r["failures"], r["accounts"]) for r in by_address] == [("203.0.113.9", 6, 6)]
    by_account = data["failed_logins_by_account"]["rows"]
    assert [(r["username"], r["failures"], r["addresses"]) for r in by_account] == [("bob", 5, 5)]
    assert by_account[0]["first"]["$date"] <= by_account[0]["last"]["$date"]
    data = report_json("--since", "3d", "--burst", "4", expect=3)
    assert {r["username"] for r in data["failed_logins_by_account"]["rows"]} == {"bob", "carol", "dave"}
    assert report_json("--burst", "100")["status"] == "clean"


@pytest.mark.django_db
def test_deep_token_chains() -> None:
    root = saved(username="alice", credentials=Credentials.LOGIN_PASSWORD)
    chain = []
    parent = root
    for _ in range(5):
        parent = saved(
            username="alice", credentials=Credentials.TOKEN, parent=parent, root_credentials="LOGIN_PASSWORD"
        )
        chain.append(parent)
    # An ended link in the middle keeps the depth of what follows.
    UserSession.objects.filter(pk=chain[1].pk).update(ended_at=timezone.now(), end_reason=EndReason.LOGOUT)
    depths = token_chain_depths()
    assert depths == {chain[0].pk: 1, chain[2].pk: 3, chain[3].pk: 4, chain[4].pk: 5}
    data = report_json(expect=3)
    rows = data["deep_token_chains"]["rows"]
    assert [(r["id"], r["depth"]) for r in rows] == [(chain[4].public_id, 5), (chain[3].public_id, 4)]
    assert report_json("--max-token-depth", "5")["status"] == "clean"
    # Session ids round-trip into auth.sessions filters.
    assert session_query(filters=[["id", "=", rows[0]["id"]]])[0]["credentials"] == "TOKEN"


@pytest.mark.django_db
def test_max_rows_limits_lists_not_counts() -> None:
    now = timezone.now()
    for _ in range(5):
        saved(expires_at=now - DAY)
    data = report_json("--max-rows", "2", expect=3)
    assert data["over_limit_sessions"]["count"] == 5
    assert len(data["over_limit_sessions"]["rows"]) == 2
    out = report("--max-rows", "2", expect=3)
    assert "5, the first 2 listed" in out


@pytest.mark.django_db
def test_output_escapes_control_characters_and_json_is_stable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    evil = "mallory\n\x1b[2J\u202e"
    for i in range(5):
        fail(f"10.0.0.1:{i}", evil)
    out = report(expect=3)
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "mallory\\n\\x1b[2J\\u202e" in out
    text = report("--format", "json", expect=3)
    assert "\x1b" not in text
    data = json.loads(text)
    assert data["failed_logins_by_account"]["rows"][0]["username"] == evil
    assert list(data) == sorted(data)
    assert isinstance(data["generated_at"]["$date"], int)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: 'yesterday' is neither a duration"),
        (["--since", "2999-01-01"], "--since must be in the past"),
        (["--top", "0"], "--top: must be between 1 and 100000"),
        (["--unused-days", "-1"], "--unused-days: must be between"),
        (["--format", "xml"], "invalid choice: 'xml'"),
        (["--burst", "x"], "invalid int value: 'x'"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message) as info:
        report(*args)
    assert info.value.returncode == 1
    assert "\n" not in str(info.value)
