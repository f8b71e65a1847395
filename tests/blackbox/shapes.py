"""Shapes of the answers (auth-sessions.md, interfaces.md) shared by the black-box tests, and TOTP
helpers for second-factor logins against the real server clock."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

SESSION_KEYS = {
    "id",
    "current",
    "internal",
    "origin",
    "credentials",
    "credentials_data",
    "created_at",
    "secure_transport",
}
HISTORY_KEYS = SESSION_KEYS | {"ended_at", "end_reason", "ended_by"}
API_KEY_KEYS = {
    "id",
    "name",
    "username",
    "user_identifier",
    "keyhash",
    "created_at",
    "expires_at",
    "local",
    "revoked",
    "revoked_reason",
    "last_used_at",
}
AUDIT_KEYS = {"audit_id", "timestamp", "event", "username", "session", "address", "success", "event_data"}
API_KEY_RE = re.compile(r"^(\d+)-[A-Za-z0-9]{64}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{64}$")


def assert_date(value: Any) -> int:
    assert isinstance(value, dict), value
    assert set(value) == {"$date"}, value
    assert isinstance(value["$date"], int), value
    assert not isinstance(value["$date"], bool), value
    return value["$date"]


def assert_session_row(row: dict[str, Any], *, history: bool = False) -> None:
    if history:
        assert SESSION_KEYS <= set(row) <= HISTORY_KEYS, row
    else:
        assert set(row) == SESSION_KEYS, row
    assert isinstance(row["id"], str), row
    assert TOKEN_RE.match(row["id"]), row
    assert isinstance(row["current"], bool), row
    assert isinstance(row["internal"], bool), row
    assert isinstance(row["secure_transport"], bool), row
    assert re.fullmatch(r"127\.0\.0\.1:\d+", row["origin"]), row
    assert_date(row["created_at"])
    data = row["credentials_data"]
    if row["credentials"].startswith("LOGIN_") or row["credentials"] == "API_KEY":
        assert isinstance(data["username"], str), row
        assert_date(data["login_at"])
    if row["credentials"] == "API_KEY":
        assert set(data["api_key"]) == {"id", "name"}, row
    if row["credentials"] == "TOKEN":
        assert set(data) == {"parent", "username"}, row
        assert data["parent"]["credentials"] != "TOKEN", row


def assert_api_key_row(row: dict[str, Any], **expected: Any) -> None:
    assert set(row) == API_KEY_KEYS, row
    assert row["keyhash"] == "********", row
    assert isinstance(row["id"], int), row
    assert isinstance(row["user_identifier"], str), row
    assert_date(row["created_at"])
    for name in ("expires_at", "last_used_at"):
        assert row[name] is None or assert_date(row[name]), row
    for name, value in expected.items():
        assert row[name] == value, (name, row)


def assert_user_info(info: dict[str, Any], username: str) -> None:
    assert info["pw_name"] == username, info
    assert isinstance(info["pw_uid"], int), info
    assert isinstance(info["pw_gid"], int), info
    assert {"privilege", "account_attributes", "two_factor_config", "local"} <= set(info), info
    assert isinstance(info["privilege"]["roles"]["$set"], list), info


def now_ms() -> int:
    return int(time.time() * 1000)


# --- helpers -----------------------------------------------------------------------------------------


def totp_device(user: Any) -> Any:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    return TOTPDevice.objects.create(user=user, name="phone", key=secrets.token_hex(20), confirmed=True)


def totp_code(device: Any) -> str:
    """The device's code now. Read at the very end of a step it still works when the server checks it
    in the next one: devices accept the previous step's code (tolerance 1, A18)."""
    from django_otp.oath import TOTP

    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"
