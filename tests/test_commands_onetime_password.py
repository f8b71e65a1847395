"""``manage.py onetime_password NAME``: printed once and alone, usable once, audited."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from sessions_app.auth.clients import Client
from sessions_app.models import AuditRecord, OneTimePassword
from sessions_app.services.login import login_ex


@pytest.fixture(autouse=True)
def _os_user(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setattr("sessions_app.management.cli.getpass.getuser", lambda: "tester")
    settings.SESSIONS_LOGIN_RATE = 0


def issue(name: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("onetime_password", name, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def login(password: str) -> str:
    params = {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": password}
    result = login_ex(params=params, client=Client(address="127.0.0.1", port=5000))
    return str(result.response["response_type"])


def test_prints_the_password_once_and_it_logs_in_once(make_user: Any) -> None:
    make_user("alice")
    out, err = issue("alice")
    password = out.strip()
    assert out == password + "\n"
    assert err == ""
    assert len(password) == 24
    row = OneTimePassword.objects.get()
    assert row.issued_by == "manage.py:tester"
    assert password not in row.password_hash
    record = AuditRecord.objects.get(event_data__method="auth.generate_onetime_password")
    assert (record.username, record.event_data["target_username"]) == ("manage.py:tester", "alice")
    assert login(password) == "SUCCESS"
    assert login(password) == "AUTH_ERR"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nobody", "unknown user: 'nobody'"),
        ("evil\n\x1b[2J", r"unknown user: 'evil\n\x1b[2J'"),
        ("bob", "user 'bob' is disabled"),
    ],
)
def test_bad_input_is_one_line(make_user: Any, name: str, message: str) -> None:
    bob = make_user("bob")
    bob.is_active = False
    bob.save()
    with pytest.raises(CommandError) as info:
        issue(name)
    assert str(info.value) == message
    assert info.value.returncode == 1
    assert not OneTimePassword.objects.exists()
