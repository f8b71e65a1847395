"""A demanded password change ("This wasn't me") is met by a new password, not by Django re-hashing
the old one under the first configured hasher at the next login."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.hashers import make_password

from sessions_app.models import PasswordChangeDemand, UserSession
from tests.conftest import PASSWORD

LOGIN = {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}


@pytest.mark.django_db
def test_a_rehash_at_login_keeps_the_demand_and_the_session_must_change_it(
    make_user: Any, rpc: Any, settings: Any
) -> None:
    alice = make_user("alice")
    settings.PASSWORD_HASHERS = [  # cheap hashers; the second one's hashes are upgraded at login
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    ]
    alice.password = make_password(PASSWORD, hasher="pbkdf2_sha1")  # an older hasher: upgraded at login
    alice.save(update_fields=["password"])
    PasswordChangeDemand.objects.create(user=alice, reason="denied new sign-in")
    assert rpc().call("auth.login_ex", LOGIN)["response_type"] == "SUCCESS"
    alice.refresh_from_db()
    assert alice.password.startswith("md5$")  # re-hashed
    assert PasswordChangeDemand.objects.filter(user=alice).exists()
    assert UserSession.objects.get(username="alice", ended_at__isnull=True).password_change_required


@pytest.mark.django_db
def test_a_new_password_meets_the_demand(make_user: Any) -> None:
    alice = make_user("alice")
    PasswordChangeDemand.objects.create(user=alice, reason="denied new sign-in")
    alice.set_password("a brand new passphrase")
    alice.save()
    assert not PasswordChangeDemand.objects.exists()
