from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, settings

# Property-based tests: bounded so that the whole suite stays fast; HYPOTHESIS_PROFILE=thorough digs deeper.
settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

PASSWORD = "correct horse battery staple"
#: PBKDF2 rounds of the SCRAM verifiers made in tests (production: 500 000, ~0.5 s per API key).
TEST_SCRAM_ITERATIONS = 4096


@pytest.fixture(autouse=True)
def _fast_and_quiet(settings: Any) -> None:
    """Fast password hashing and no failure delay; tests that measure either override these."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.SESSIONS_FAIL_DELAY = 0
    settings.SESSIONS_SCRAM_ITERATIONS = TEST_SCRAM_ITERATIONS


@pytest.fixture(autouse=True)
def _no_reused_statements() -> None:
    """Each test starts without the compiled statements an earlier one left (the APIs' and the
    tables' statement caches): a test that patches a module's knob must see its statement compiled."""
    from sessions_app import tables
    from sessions_app.query import execution

    execution._STATEMENTS.clear()
    tables._PAGES.clear()


@pytest.fixture
def make_user(db: Any, django_user_model: Any) -> Callable[..., Any]:
    """``make_user("alice", roles=[Role.AUTH_SESSIONS_READ], superuser=False, password=PASSWORD)``."""

    def make(
        username: str = "alice", *, password: str = PASSWORD, superuser: bool = False, roles: Any = ()
    ) -> Any:
        from sessions_app.auth.roles import grant

        if superuser:
            user = django_user_model.objects.create_superuser(username, password=password)
        else:
            user = django_user_model.objects.create_user(username, password=password)
        for role in roles:
            grant(user, role)
        return user

    return make


class RPC:
    """A JSON-RPC client over Django's test client (keeps cookies like a browser or midclt)."""

    def __init__(self, remote_addr: str = "127.0.0.1", **extra: Any) -> None:
        self.http = Client(REMOTE_ADDR=remote_addr, **extra)
        self.last: Any = None

    def raw(self, method: str, *params: Any, **headers: Any) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        self.last = self.http.post("/api/current", body, content_type="application/json", **headers)
        return self.last

    def call(self, method: str, *params: Any, **headers: Any) -> Any:
        """The ``result``; raises AssertionError with the error body when the call failed."""
        payload = self.raw(method, *params, **headers).json()
        assert "result" in payload, payload
        return payload["result"]

    def error(self, method: str, *params: Any, **headers: Any) -> dict[str, Any]:
        payload = self.raw(method, *params, **headers).json()
        assert "error" in payload, payload
        return payload["error"]

    def login(self, username: str = "alice", password: str = PASSWORD) -> Any:
        return self.call(
            "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password}
        )


@pytest.fixture
def rpc(db: Any) -> Callable[..., RPC]:
    """``rpc()`` -> a new client (its own cookies); ``rpc(remote_addr="10.0.0.5")`` for another address."""
    return RPC
