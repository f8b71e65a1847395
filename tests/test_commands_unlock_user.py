"""``manage.py unlock_user NAME``: lifts a lock early, audited with the operator; output escaped."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from sessions_app.auth import throttle
from sessions_app.models import AuditRecord


@pytest.fixture(autouse=True)
def _os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sessions_app.management.cli.getpass.getuser", lambda: "tester")


def unlock(name: str) -> str:
    out = StringIO()
    call_command("unlock_user", name, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_unlocks_a_locked_account_and_audits_the_operator(settings: Any) -> None:
    settings.SESSIONS_LOCKOUT_THRESHOLD = 2
    for _ in range(2):
        throttle.record_failure(username="alice", address="10.0.0.1", mechanism="PASSWORD_PLAIN")
    assert throttle.locked_until(username="alice") is not None
    assert unlock("alice").strip() == "'alice' unlocked"
    assert throttle.locked_until(username="alice") is None
    record = AuditRecord.objects.filter(event_data__method="auth.unlock_user").get()
    assert record.username == "manage.py:tester"
    assert unlock("alice").strip() == "'alice' was not locked (counter reset)"


@pytest.mark.django_db
def test_names_are_escaped_and_nul_is_refused() -> None:
    out = unlock("evil\n\x1b[2J")
    assert out == "'evil\\n\\x1b[2J' was not locked (counter reset)\n"
    with pytest.raises(CommandError, match="NAME: must not contain NUL characters") as info:
        unlock("a\x00b")
    assert info.value.returncode == 1
