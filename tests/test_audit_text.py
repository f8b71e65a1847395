"""Audit records in words (`sessions_app.templatetags.audit_text`): one sentence for every kind of
record the service writes, a fallback for any other, and nothing a client chose is ever HTML."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from django.template import Context, Template
from django.utils.html import strip_tags

from sessions_app.templatetags.audit_text import _METHODS, STEP_UP_PURPOSES, audit_sentence

ROOT = Path(__file__).resolve().parent.parent


def _row(
    event: str, data: dict[str, Any], *, username: str | None = "alice", success: bool = True, **more: Any
) -> dict[str, Any]:
    return {
        "event": event,
        "success": success,
        "username": username,
        "session": more.pop("session", None),
        "address": more.pop("address", "10.0.0.5:5000"),
        "event_data": data,
        **more,
    }


def say(row: dict[str, Any]) -> str:
    return html.unescape(strip_tags(str(audit_sentence(row))))


SID = "1a2b3c4d5e6f7g8h9i"

CASES: list[tuple[str, dict[str, Any], str]] = [
    # --- AUTHENTICATION, successful ---
    (
        "password",
        _row("AUTHENTICATION", {"credentials": "LOGIN_PASSWORD", "mechanism": "PASSWORD_PLAIN"}),
        "alice signed in with a password",
    ),
    (
        "two factor",
        _row("AUTHENTICATION", {"credentials": "LOGIN_TWOFACTOR", "mechanism": "OTP_TOKEN", "device": "x"}),
        "alice signed in with a password and a one-time code",
    ),
    (
        "one-time password",
        _row(
            "AUTHENTICATION",
            {
                "credentials": "LOGIN_ONETIME_PASSWORD",
                "mechanism": "PASSWORD_PLAIN",
                "onetime_password": True,
            },
        ),
        "alice signed in with a one-time password from an administrator",
    ),
    (
        "api key",
        _row(
            "AUTHENTICATION",
            {"credentials": "API_KEY", "mechanism": "API_KEY_PLAIN", "api_key_ref": "12:backup"},
        ),
        "alice signed in with API key 'backup' (#12)",
    ),
    (
        "scram",
        _row(
            "AUTHENTICATION",
            {
                "credentials": "API_KEY",
                "mechanism": "SCRAM",
                "api_key_ref": "12:backup",
                "channel_binding": True,
            },
        ),
        "alice signed in with API key 'backup' (#12) (SCRAM, channel-bound)",
    ),
    (
        "token",
        _row("AUTHENTICATION", {"credentials": "TOKEN", "mechanism": "TOKEN_PLAIN", "parent": SID}),
        "alice signed in with a token of session 1a2b3c4d5e…",
    ),
    (
        "node",
        _row(
            "AUTHENTICATION",
            {"credentials": "TRUENAS_NODE", "mechanism": "NODE_HMAC", "node": "nas-b"},
            username=None,
        ),
        "Peer node nas-b signed in",
    ),
    (
        "node without a name",
        _row("AUTHENTICATION", {"credentials": "TRUENAS_NODE"}, username=None),
        "A peer node signed in",
    ),
    (
        "node signed out",
        _row("LOGOUT", {"method": "auth.logout", "end_reason": "LOGOUT", "target": SID}, username=None),
        "Session 1a2b3c4d5e… ended: signed out",
    ),
    (
        "unix socket",
        _row("AUTHENTICATION", {"credentials": "UNIX_SOCKET", "transport": "websocket"}, username="root"),
        "root connected over the local unix socket (WebSocket)",
    ),
    (
        "bearer",
        _row("AUTHENTICATION", {"mechanism": "API_KEY_BEARER", "per_request": True, "api_key_ref": "3:ci"}),
        "alice used API key 'ci' (#3) (Bearer header)",
    ),
    (
        "basic",
        _row("AUTHENTICATION", {"mechanism": "PASSWORD_BASIC", "per_request": True}),
        "alice authenticated a request with a password (HTTP Basic)",
    ),
    (
        "step-up",
        _row(
            "AUTHENTICATION",
            {"mechanism": "PASSWORD_PLAIN", "method": "web.password_change", "step_up": True},
        ),
        "alice confirmed their password to change their password",
    ),
    (
        "step-up with code",
        _row("AUTHENTICATION", {"mechanism": "OTP_TOKEN", "method": "two_factor.disable", "step_up": True}),
        "alice confirmed their password and code to turn off two-factor authentication",
    ),
    # --- AUTHENTICATION, failed ---
    (
        "wrong password",
        _row(
            "AUTHENTICATION",
            {"mechanism": "PASSWORD_PLAIN", "error": "wrong password"},
            username="bob",
            success=False,
        ),
        "Failed sign-in with a password for bob (wrong password)",
    ),
    (
        "unknown user",
        _row(
            "AUTHENTICATION",
            {"mechanism": "PASSWORD_PLAIN", "error": "unknown user"},
            username=None,
            success=False,
        ),
        "Failed sign-in with a password (unknown user)",
    ),
    (
        "wrong key",
        _row(
            "AUTHENTICATION",
            {"mechanism": "API_KEY_PLAIN", "error": "invalid key", "api_key_ref": "<INVALID>"},
            username=None,
            success=False,
        ),
        "Failed sign-in with an unknown API key (invalid key)",
    ),
    (
        "aggregated",
        _row(
            "AUTHENTICATION",
            {
                "mechanism": "PASSWORD_BASIC",
                "per_request": True,
                "error": "invalid credentials",
                "failures_from": "10.0.0.5",
                "count": 3,
            },
            username="bob",
            success=False,
        ),
        "3 failed sign-in attempts with a password (HTTP Basic) for bob from 10.0.0.5 in 60 s (invalid credentials)",
    ),
    (
        "aggregated once",
        _row(
            "AUTHENTICATION",
            {
                "mechanism": "SESSION_COOKIE",
                "per_request": True,
                "error": "x",
                "failures_from": "10.0.0.5",
                "count": 1,
            },
            username=None,
            success=False,
        ),
        "1 failed sign-in attempt with a session cookie from 10.0.0.5 in 60 s (x)",
    ),
    (
        "lockout",
        _row(
            "AUTHENTICATION",
            {
                "lockout": True,
                "locked_until": "2025-01-02T03:04:05+00:00",
                "failures": 10,
                "mechanism": "PASSWORD_PLAIN",
            },
            username="bob",
            success=False,
        ),
        "Account bob locked after 10 failed sign-ins until 2025-01-02 03:04 UTC",
    ),
    (
        "abandoned",
        _row("AUTHENTICATION", {"mechanism": "OTP_TOKEN", "error": "abandoned second factor"}, success=False),
        "alice abandoned a sign-in at the one-time code",
    ),
    (
        "rate limited",
        _row(
            "AUTHENTICATION",
            {"method": "auth.login_ex", "error": "rate limited"},
            username="bob",
            success=False,
        ),
        "Sign-in attempt for bob refused: rate limited (auth.login_ex)",
    ),
    (
        "step-up failed",
        _row(
            "AUTHENTICATION",
            {
                "mechanism": "PASSWORD_PLAIN",
                "method": "api_key.create",
                "step_up": True,
                "error": "wrong password",
            },
            success=False,
        ),
        "alice failed to confirm their password to create an API key (wrong password)",
    ),
    # --- LOGOUT and NEW_SIGN_IN ---
    (
        "sign out",
        _row(
            "LOGOUT",
            {"method": "auth.logout", "end_reason": "LOGOUT", "target": SID, "target_username": "alice"},
        ),
        "alice signed out of session 1a2b3c4d5e…",
    ),
    (
        "socket closed",
        _row(
            "LOGOUT",
            {
                "method": "auth.logout",
                "end_reason": "LOGOUT",
                "target": SID,
                "target_username": "alice",
                "note": "connection closed",
            },
        ),
        "Session 1a2b3c4d5e… of alice ended: connection closed",
    ),
    (
        "new sign-in",
        _row(
            "NEW_SIGN_IN",
            {"notice": 4, "device": "Firefox on Linux", "address": "203.0.113.9", "place": "Berlin, Germany"},
        ),
        "alice signed in from a new device or network: Firefox on Linux (Berlin, Germany, 203.0.113.9); they were notified",
    ),
    (
        "new network for a key",
        _row(
            "NEW_SIGN_IN",
            {"notice": 4, "device": "API key “ci”", "address": "203.0.113.9", "api_key_ref": "3:ci"},
        ),
        "API key 'ci' (#3) of alice used from a new network (203.0.113.9); its owner was notified",
    ),
    # --- METHOD_CALL: sessions ---
    (
        "terminated",
        _row(
            "METHOD_CALL",
            {
                "method": "session.end",
                "end_reason": "TERMINATED",
                "target": SID,
                "target_username": "bob",
                "note": "left",
            },
            username="admin",
        ),
        "admin terminated session 1a2b3c4d5e… of bob (reason: left)",
    ),
    (
        "terminated own",
        _row(
            "METHOD_CALL",
            {"method": "session.end", "end_reason": "TERMINATED", "target": SID, "target_username": "bob"},
            username="bob",
        ),
        "bob terminated their session 1a2b3c4d5e…",
    ),
    (
        "expired",
        _row(
            "METHOD_CALL",
            {"method": "session.end", "end_reason": "EXPIRED", "target": SID, "target_username": "bob"},
            username="bob",
        ),
        "Session 1a2b3c4d5e… of bob ended: it reached its time limit",
    ),
    (
        "idle, purge",
        _row(
            "METHOD_CALL",
            {
                "method": "session.end",
                "end_reason": "IDLE",
                "target": SID,
                "target_username": "bob",
                "note": "ended by sessions purge",
            },
            username="bob",
        ),
        "Session 1a2b3c4d5e… of bob ended: it was idle too long (ended by sessions purge)",
    ),
    (
        "parent ended",
        _row(
            "METHOD_CALL",
            {
                "method": "session.end",
                "end_reason": "PARENT_ENDED",
                "target": SID,
                "target_username": "bob",
                "credentials": "TOKEN",
            },
            username="bob",
        ),
        "Token session 1a2b3c4d5e… of bob ended: the session it came from ended",
    ),
    (
        "unknown end reason",
        _row(
            "METHOD_CALL", {"method": "session.end", "end_reason": "NEW_REASON", "target": SID}, username=None
        ),
        "Session 1a2b3c4d5e… ended: NEW_REASON",
    ),
    (
        "bulk by filters",
        _row(
            "METHOD_CALL",
            {
                "method": "sessions.terminate",
                "reason": "incident 7",
                "selection": {"filters": [["credentials", "=", "API_KEY"]]},
                "selected": 10760,
                "ended": 10760,
                "completed": True,
            },
            username="admin",
        ),
        'admin ended 10,760 sessions matching [["credentials", "=", "API_KEY"]] (reason: incident 7)',
    ),
    (
        "bulk by user, part-way",
        _row(
            "METHOD_CALL",
            {
                "method": "sessions.terminate",
                "selection": {"user": "bob"},
                "selected": 3,
                "ended": 1,
                "completed": False,
            },
            username="manage.py:root",
            success=False,
        ),
        "manage.py:root ended 1 session of bob (of 3 selected); it stopped part-way",
    ),
    (
        "bulk by ids",
        _row(
            "METHOD_CALL",
            {
                "method": "sessions.terminate",
                "selection": {"ids": ["a", "b"]},
                "selected": 2,
                "ended": 2,
                "completed": True,
            },
            username="ops",
        ),
        "ops ended 2 sessions chosen by id (2)",
    ),
    (
        "dashboard bulk by filters",
        _row(
            "METHOD_CALL",
            {
                "method": "sessions.terminate",
                "reason": None,
                "selection": {"page": "dashboard", "filters": [["credentials_data.username", "C^", "demo"]]},
                "selected": 10760,
                "ended": 10760,
                "cascaded": 2837,
                "completed": True,
            },
            username="admin",
        ),
        'admin ended 10,760 sessions matching [["credentials_data.username", "C^", "demo"]], '
        "and 2,837 token sessions that came from them",
    ),
    (
        "dashboard other sessions",
        _row(
            "METHOD_CALL",
            {
                "method": "sessions.terminate",
                "selection": {"page": "my sessions", "others": True},
                "selected": 2,
                "ended": 2,
                "cascaded": 0,
                "completed": True,
            },
        ),
        "alice ended 2 other sessions",
    ),
    (
        "dashboard bulk without filters",
        _row(
            "METHOD_CALL",
            {
                "method": "sessions.terminate",
                "selection": {"page": "dashboard", "filters": []},
                "ended": 1,
                "selected": 1,
            },
            username="admin",
        ),
        "admin ended 1 session (no filters: every active session)",
    ),
    (
        "purge",
        _row(
            "METHOD_CALL",
            {
                "method": "sessions.purge",
                "older_than_seconds": 90 * 86400,
                "ended_expired": 3,
                "sessions": 1200,
                "audit_records": 0,
            },
            username=None,
        ),
        "The sessions purge purged the history older than 90 days: 3 expired sessions ended, 1,200 ended sessions deleted",
    ),
    # --- METHOD_CALL: accounts, tokens, keys, devices ---
    (
        "one-time password issued",
        _row(
            "METHOD_CALL",
            {"method": "auth.generate_onetime_password", "target_username": "bob"},
            username="admin",
        ),
        "admin issued a one-time password for bob",
    ),
    (
        "own password",
        _row("METHOD_CALL", {"method": "user.set_password", "target_username": "alice"}),
        "alice changed their password",
    ),
    (
        "password set by admin",
        _row("METHOD_CALL", {"method": "user.set_password", "target_username": "bob"}, username="admin"),
        "admin set the password of bob",
    ),
    (
        "token",
        _row(
            "METHOD_CALL",
            {
                "method": "auth.generate_token",
                "token_id": 4,
                "ttl": 600,
                "match_origin": False,
                "single_use": True,
            },
        ),
        "alice created a single-use token valid 600 s, usable from any address",
    ),
    (
        "unlock",
        _row(
            "METHOD_CALL",
            {"method": "auth.unlock_user", "username": "bob", "was_locked": False},
            username="admin",
        ),
        "admin unlocked the account bob (it was not locked)",
    ),
    (
        "key created",
        _row("METHOD_CALL", {"method": "api_key.create", "api_key": {"id": 7, "name": "backup"}}),
        "alice created API key 'backup' (#7)",
    ),
    (
        "key created by nobody",
        _row(
            "METHOD_CALL", {"method": "api_key.create", "api_key": {"id": 7, "name": "backup"}}, username=None
        ),
        "API key 'backup' (#7) created",
    ),
    (
        "key updated",
        _row(
            "METHOD_CALL",
            {
                "method": "api_key.update",
                "api_key": {"id": 7, "name": "b2"},
                "reset": True,
                "fields": ["name", "key_hash"],
            },
        ),
        "alice updated API key 'b2' (#7) (name, a new secret)",
    ),
    (
        "key revoked",
        _row(
            "METHOD_CALL",
            {"method": "api_key.revoke", "api_key": {"id": 7, "name": "backup"}, "reason": "lost"},
        ),
        "alice revoked API key 'backup' (#7) (reason: lost)",
    ),
    (
        "key revoked by the system",
        _row(
            "METHOD_CALL",
            {
                "method": "api_key.revoke",
                "api_key": {"id": 7, "name": "b"},
                "reason": "Attempt to use over an insecure transport",
            },
            username=None,
        ),
        "API key 'b' (#7) revoked (reason: Attempt to use over an insecure transport)",
    ),
    (
        "key deleted",
        _row("METHOD_CALL", {"method": "api_key.delete", "api_key": {"id": 7, "name": "backup"}}),
        "alice deleted API key 'backup' (#7)",
    ),
    (
        "2fa start",
        _row("METHOD_CALL", {"method": "two_factor.start"}),
        "alice started setting up two-factor authentication",
    ),
    (
        "2fa start refused",
        _row("METHOD_CALL", {"method": "two_factor.start", "error": "step-up required"}, success=False),
        "alice could not start setting up two-factor authentication (step-up required)",
    ),
    (
        "2fa confirm",
        _row("METHOD_CALL", {"method": "two_factor.confirm"}),
        "alice turned on two-factor authentication",
    ),
    (
        "2fa wrong code",
        _row("METHOD_CALL", {"method": "two_factor.confirm"}, success=False),
        "alice entered a wrong code while trying to turn on two-factor authentication",
    ),
    (
        "2fa throttled",
        _row("METHOD_CALL", {"method": "two_factor.confirm", "throttled": True}, success=False),
        "alice sent a code too soon after a wrong one while trying to turn on two-factor authentication",
    ),
    (
        "2fa off",
        _row("METHOD_CALL", {"method": "two_factor.disable"}),
        "alice turned off two-factor authentication",
    ),
    (
        "2fa reset",
        _row(
            "METHOD_CALL",
            {"method": "two_factor.reset", "target_username": "bob", "device": 3},
            username="admin",
        ),
        "admin removed the two-factor device of bob",
    ),
    (
        "notice confirmed",
        _row(
            "METHOD_CALL",
            {"method": "sign_in_notice.confirm", "notice": 1, "device": "Safari on iOS", "via": "banner"},
        ),
        "alice confirmed that the sign-in from Safari on iOS was theirs",
    ),
    (
        "notice denied",
        _row(
            "METHOD_CALL",
            {
                "method": "sign_in_notice.deny",
                "notice": 1,
                "device": "Safari on iOS",
                "via": "email",
                "ended": 2,
            },
        ),
        "alice reported the sign-in from Safari on iOS as not theirs; 2 sessions ended",
    ),
    (
        "device forgotten",
        _row(
            "METHOD_CALL",
            {"method": "known_device.forget", "target_username": "alice", "device": "Firefox on Linux"},
        ),
        "alice forgot their device Firefox on Linux",
    ),
    (
        "field key",
        _row(
            "METHOD_CALL",
            {"method": "field_key.rotate", "resealed": 12, "sealed": 1},
            username="manage.py:root",
        ),
        "manage.py:root rotated the field key: 12 values re-sealed, 1 value sealed",
    ),
    # --- generic calls and the fallback ---
    (
        "rpc call",
        _row("METHOD_CALL", {"method": "auth.terminate_session"}),
        "alice called auth.terminate_session",
    ),
    (
        "rpc call refused",
        _row("METHOD_CALL", {"method": "audit.query"}, username="bob", success=False),
        "Call of audit.query by bob refused",
    ),
    (
        "unknown event",
        _row("CONFIG_CHANGE", {"method": "x.y"}, success=False),
        "Config change by alice: x.y (failed)",
    ),
    (
        "malformed data",
        _row(
            "METHOD_CALL",
            {"method": "session.end", "end_reason": ["not", "a", "string"], "target": {"odd": 1}},
        ),
        "Session",  # whatever it says, it says it without an error
    ),
    (
        "data not an object",
        _row("AUTHENTICATION", "surprise"),  # type: ignore[arg-type]
        "Authentication by alice",
    ),
]


@pytest.mark.parametrize(
    ("row", "expected"), [(row, text) for _, row, text in CASES], ids=[c[0] for c in CASES]
)
def test_each_kind_of_record_reads_as_a_sentence(row: dict[str, Any], expected: str, settings: Any) -> None:
    settings.SESSIONS_LOGIN_RATE_WINDOW = 60
    assert say(row).startswith(expected)
    if expected != "Session":
        assert say(row) == expected


def test_names_and_values_are_escaped() -> None:
    row = _row(
        "METHOD_CALL",
        {
            "method": "sessions.terminate",
            "selection": {"filters": [["origin", "^", "<script>"]]},
            "ended": 2,
            "selected": 2,
        },
        username='<img src=x onerror="alert(1)">',
    )
    text = str(audit_sentence(row))
    assert "<img" not in text
    assert "<script>" not in text
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
    assert "&lt;script&gt;" in text
    key = _row("METHOD_CALL", {"method": "api_key.create", "api_key": {"id": 1, "name": "<b>k</b>"}})
    assert "&lt;b&gt;k&lt;/b&gt;" in str(audit_sentence(key))


def test_the_details_cell_renders_the_sentence_and_the_json_behind_a_disclosure() -> None:
    row = _row(
        "AUTHENTICATION", {"credentials": "LOGIN_PASSWORD", "mechanism": "PASSWORD_PLAIN", "note": "<i>"}
    )
    out = Template('{% include "sessions_app/partials/audit_event.html" %}').render(Context({"row": row}))
    assert "alice signed in with a password" in out
    assert re.search(r"<details class=\"audit-details\"><summary>Details</summary>", out)
    assert "&quot;mechanism&quot;: &quot;PASSWORD_PLAIN&quot;" in out
    assert "<i>" not in out
    empty = Template('{% include "sessions_app/partials/audit_event.html" %}').render(
        Context({"row": _row("METHOD_CALL", {})})
    )
    assert "<details" not in empty


_FALLBACK = re.compile(r"^(Authentication|Method call|Logout|New sign in)\b")


def test_records_the_service_writes_read_as_their_own_sentences(make_user: Any, rpc: Any) -> None:
    """Real flows, real records: none of them needs the fallback sentence."""
    import datetime as dt

    from sessions_app import selectors
    from sessions_app.auth import throttle
    from sessions_app.auth.clients import Client as Peer
    from sessions_app.services.api_keys import api_key_create, api_key_revoke
    from sessions_app.services.maintenance import history_purge, sessions_terminate
    from sessions_app.services.session_ending import session_terminate
    from sessions_app.services.users import onetime_password_issue

    admin = make_user("admin", superuser=True)
    bob = make_user("bob")
    client = rpc()
    client.login("bob")
    client.call("auth.generate_token", 600)
    rpc().raw("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "bob", "password": "wrong"})
    rpc().raw("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "nobody", "password": "x"})
    key, _ = api_key_create(user=bob, name="<b>backup</b>", actor="admin")
    api_key_revoke(key=key, reason="lost", actor="admin")
    onetime_password_issue(user=bob, actor=admin.get_username())
    throttle.unlock(username="bob", actor="admin")
    second = rpc()
    second.login("bob")
    from sessions_app.models import UserSession

    sessions = list(UserSession.objects.filter(username="bob", ended_at__isnull=True).order_by("pk"))
    session_terminate(public_id=sessions[0].public_id, actor=None, client=Peer(address="127.0.0.1", port=1))
    sessions_terminate(
        pks=[sessions[-1].pk], actor="manage.py:root", reason="incident", selection={"user": "bob"}
    )
    history_purge(older_than=dt.timedelta(days=90), actor="manage.py:root")
    third = rpc()
    third.login("bob")
    third.call("auth.logout")
    rows = selectors.audit_query(options={"order_by": ["timestamp"]})
    assert isinstance(rows, list)
    assert len(rows) >= 10
    sentences = [say(row) for row in rows]
    assert not [s for s in sentences if _FALLBACK.match(s)], sentences
    assert "bob signed in with a password" in sentences
    assert f"admin revoked API key '<b>backup</b>' (#{key.pk}) (reason: lost)" in sentences
    assert any(s.startswith("Failed sign-in with a password for bob (wrong password)") for s in sentences)


def _written_methods() -> set[str]:
    """Every ``method`` the code writes into an audit record (and every step-up purpose)."""
    found: set[str] = set()
    patterns = (
        r'"method": "([\w.]+)"',
        r'"method": "[\w.]+" if [^\n]*? else "([\w.]+)"',
        r'_audit\(\s*"([\w.]+)"',
        r'_audit_answer\(\s*notice,\s*"([\w.]+)"',
        r'method="([\w.]+)"',
        r'purpose="([\w.]+)"',
        r'_stepped_up\(\s*request,\s*\w+,\s*"([\w.]+)"',
    )
    for path in (ROOT / "sessions_app").rglob("*.py"):
        text = path.read_text()
        if (
            "audit_record(" not in text
            and "_stepped_up(" not in text
            and "demo" not in path.parts
            and "purpose=" not in text
        ):
            continue
        for pattern in patterns:
            found.update(re.findall(pattern, text))
    return found


def test_every_method_the_code_audits_has_its_own_sentence() -> None:
    methods = _written_methods()
    assert {
        "session.end",
        "sessions.terminate",
        "api_key.create",
        "two_factor.reset",
    } <= methods  # the scan works
    logout = {"auth.logout"}  # the LOGOUT event's sentence
    not_audit = {"collection_update", "notify_unsubscribed"}  # WebSocket messages, not audit records
    missing = methods - set(_METHODS) - set(STEP_UP_PURPOSES) - logout - not_audit
    assert not missing, f"add a sentence to audit_text for {sorted(missing)}"
