"""A password change -- chosen, or forced after a one-time password -- is audited with the address
it came from (issue 17: the forced change was recorded without one)."""

from __future__ import annotations

from typing import Any

import pytest

from sessions_app.models import AuditRecord
from sessions_app.services.users import onetime_password_issue
from tests.conftest import PASSWORD

NEW = "a brand new passphrase for alice"


def _change_record() -> AuditRecord:
    return AuditRecord.objects.get(event_data__method="user.set_password")


@pytest.mark.django_db
def test_a_chosen_change_is_audited_with_its_address(make_user: Any, rpc: Any) -> None:
    make_user("alice")
    client = rpc(remote_addr="10.9.9.9")
    client.login("alice")
    assert client.call("auth.set_password", {"old_password": PASSWORD, "new_password": NEW}) is True
    assert _change_record().address.startswith("10.9.9.9:")


@pytest.mark.django_db
def test_a_forced_change_is_audited_with_its_address(make_user: Any, rpc: Any) -> None:
    alice = make_user("alice")
    onetime = onetime_password_issue(user=alice, actor="admin")
    client = rpc(remote_addr="10.8.8.8")
    client.login("alice", onetime)
    assert client.call("auth.set_password", {"new_password": NEW}) is True
    record = _change_record()
    assert record.address.startswith("10.8.8.8:")
    assert record.username == "alice"
