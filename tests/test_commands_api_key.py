"""``manage.py api_key create|revoke``: the key alone on stdout, once; revocation ends its sessions."""

from __future__ import annotations

import datetime as dt
import re
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from sessions_app.auth.clients import Client
from sessions_app.models import ApiKey, AuditRecord, Credentials, EndReason
from sessions_app.services.login import login_ex
from sessions_app.services.sessions import session_create

ACTOR = "manage.py:tester"


@pytest.fixture(autouse=True)
def _os_user(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setattr("sessions_app.management.cli.getpass.getuser", lambda: "tester")
    settings.SESSIONS_LOGIN_RATE = 0


def api_key(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("api_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_prints_only_the_key_and_it_works(make_user: Any) -> None:
    make_user("alice")
    out, err = api_key("create", "--user", "alice", "--name", "backup")
    assert err == ""
    plaintext = out.strip()
    assert out == plaintext + "\n"
    assert re.fullmatch(r"\d+-[A-Za-z0-9]{64}", plaintext)
    key = ApiKey.objects.get(name="backup")
    assert plaintext.startswith(f"{key.pk}-")
    assert plaintext.split("-", 1)[1] not in key.key_hash
    assert key.expires_at is None
    record = AuditRecord.objects.get(event_data__method="api_key.create")
    assert record.username == ACTOR
    params = {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": plaintext}
    result = login_ex(params=params, client=Client(address="127.0.0.1", port=5000, secure=True))
    assert result.response["response_type"] == "SUCCESS"


@pytest.mark.parametrize(
    ("expires", "expected"),
    [
        ("30d", dt.timedelta(days=30)),
        ("12h", dt.timedelta(hours=12)),
        ("2999-01-01", dt.datetime(2999, 1, 1, tzinfo=dt.UTC)),
        ("2999-01-01T10:00:00+02:00", dt.datetime(2999, 1, 1, 8, tzinfo=dt.UTC)),
    ],
)
def test_create_with_expiry(make_user: Any, expires: str, expected: Any) -> None:
    make_user("alice")
    before = timezone.now()
    api_key("create", "--user", "alice", "--name", "k", "--expires", expires)
    expires_at = ApiKey.objects.get(name="k").expires_at
    assert expires_at is not None
    if isinstance(expected, dt.timedelta):
        assert before + expected <= expires_at <= timezone.now() + expected
    else:
        assert expires_at == expected


def test_revoke_ends_the_sessions_of_the_key(make_user: Any) -> None:
    alice = make_user("alice")
    out, _ = api_key("create", "--user", "alice", "--name", "ci")
    key = ApiKey.objects.get(name="ci")
    opened = session_create(
        credentials=Credentials.API_KEY, client=Client(address="127.0.0.1", port=1), user=alice, api_key=key
    ).session
    out, _ = api_key("revoke", str(key.pk), "--reason", "leaked in a log")
    assert out.strip() == f"Revoked API key {key.pk} (ci); its sessions have ended."
    key.refresh_from_db()
    opened.refresh_from_db()
    assert (key.revoked, key.revoked_reason) == (True, "leaked in a log")
    assert (opened.end_reason, opened.ended_by) == (EndReason.CREDENTIAL_REVOKED, ACTOR)
    record = AuditRecord.objects.get(event_data__method="api_key.revoke")
    assert (record.username, record.event_data["reason"]) == (ACTOR, "leaked in a log")
    out, _ = api_key("revoke", str(key.pk))
    assert out.strip() == f"API key {key.pk} (ci) was already revoked."
    assert AuditRecord.objects.filter(event_data__method="api_key.revoke").count() == 1


def test_revoke_has_a_default_reason_and_escapes_names(make_user: Any) -> None:
    make_user("alice")
    api_key("create", "--user", "alice", "--name", "evil\x1b[2J")
    key = ApiKey.objects.get()
    out, _ = api_key("revoke", str(key.pk))
    assert "\x1b" not in out
    assert "evil\\x1b[2J" in out
    key.refresh_from_db()
    assert key.revoked_reason == "revoked with manage.py api_key"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message", "status"),
    [
        (["create", "--user", "nobody", "--name", "k"], "unknown user: 'nobody'", 1),
        (
            ["create", "--user", "alice", "--name", "dup"],
            "--name: an API key with this name already exists",
            1,
        ),
        (["create", "--user", "alice", "--name", ""], "--name: a name of 1 to 200 characters is required", 1),
        (["create", "--user", "alice", "--name", "x" * 201], "--name: at most 200 characters", 1),
        (
            ["create", "--user", "alice", "--name", "k", "--expires", "soon"],
            "--expires: 'soon' is neither",
            1,
        ),
        (["create", "--user", "alice", "--name", "k", "--expires", "2020-01-01"], "must be in the future", 1),
        (["create", "--user", "alice"], "the following arguments are required: --name", 1),
        (["revoke", "999"], "unknown API key id: '999'", 1),
        (["revoke", "1e3"], "unknown API key id: '1e3'", 1),
        (["revoke", "99999999999999999999999"], "unknown API key id", 1),
        (["rotate"], "invalid choice: 'rotate'", 1),
    ],
)
def test_bad_input_is_one_line(make_user: Any, args: list[str], message: str, status: int) -> None:
    make_user("alice")
    api_key("create", "--user", "alice", "--name", "dup")
    keys_before = ApiKey.objects.count()
    with pytest.raises(CommandError, match=re.escape(message)) as info:
        api_key(*args)
    assert info.value.returncode == status
    assert "\n" not in str(info.value)
    assert ApiKey.objects.count() == keys_before
