"""D8: fail closed. When the session registry cannot be read, or its lookup raises, every request that
carries a credential is answered 503 (or 401): never served as authenticated, and never served as an
anonymous request either, whatever the endpoint (security.md group D; ASVS 4.0.3 V4.1.5, ASVS 5.0
V16.5.3).

"Unreadable" is real: the table is renamed inside a savepoint around one request, so the lookup fails
in the database itself (SQLite ``no such table``, PostgreSQL ``relation does not exist``), then the
savepoint rolls back. "Raises" wraps the lookups so that they raise errors of every kind.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

from sessions_app import middleware
from sessions_app.middleware import session_cookie_name
from sessions_app.models import ApiKey, UserSession
from sessions_app.services.api_keys import api_key_create
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.reliability, pytest.mark.django_db]


class Rollback(Exception):
    pass


def with_table_renamed(table: str, send: Callable[[], Any]) -> Any:
    """``send()`` while ``table`` does not exist (renamed in a savepoint that is then rolled back)."""
    quote = connection.ops.quote_name
    answer = None
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {quote(table)} RENAME TO {quote(table + '_away')}")
            answer = send()
            raise Rollback
    except Rollback:
        pass
    return answer


#: (name, how to send it with a credential): an authenticated method, an anonymous one, an HTML
#: page, a REST endpoint, a write.
ENDPOINTS: list[tuple[str, Callable[[Any, dict[str, str]], Any]]] = [
    ("auth.me", lambda c, h: c.raw("auth.me", **h)),
    ("core.ping (anonymous-allowed)", lambda c, h: c.raw("core.ping", **h)),
    ("auth.logout", lambda c, h: c.raw("auth.logout", **h)),
    ("GET /me/sessions/ (page)", lambda c, h: c.http.get("/me/sessions/", **h)),
    ("GET /api/v2.0/auth/me (REST)", lambda c, h: c.http.get("/api/v2.0/auth/me", **h)),
    ("GET /api/v2.0/auth/sessions (REST)", lambda c, h: c.http.get("/api/v2.0/auth/sessions", **h)),
]


@pytest.fixture
def credentials(make_user: Any, rpc: Any) -> dict[str, tuple[Any, dict[str, str], str]]:
    """Per pathway: (client, headers, the table its lookup reads)."""
    user = make_user("alice", superuser=True)
    cookie_client = rpc()
    cookie_client.login("alice", PASSWORD)
    _, key = api_key_create(user=user, name="d8")
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    return {
        "cookie": (cookie_client, {}, UserSession._meta.db_table),
        "bearer": (rpc(), {"HTTP_AUTHORIZATION": f"Bearer {key}"}, ApiKey._meta.db_table),
        "basic": (rpc(), {"HTTP_AUTHORIZATION": f"Basic {basic}"}, get_user_model()._meta.db_table),
    }


@pytest.mark.parametrize("pathway", ["cookie", "bearer", "basic"])
@pytest.mark.parametrize(("endpoint", "send"), ENDPOINTS, ids=[name for name, _ in ENDPOINTS])
def test_D8_registry_table_unreadable_fails_closed(
    credentials: Any, checks: Any, settings: Any, pathway: str, endpoint: str, send: Any
) -> None:
    settings.SESSIONS_LOGIN_RATE = 0  # Basic counts against the rate limit; not what this is about
    client, headers, table = credentials[pathway]
    # The credential works while the table is there...
    assert client.raw("auth.me", **headers).json()["result"]["pw_name"] == "alice"

    answer = checks.answer(with_table_renamed(table, lambda: send(client, headers)))

    # ...and while it is not, nothing is served: not as alice, not as an anonymous caller.
    checks.documented_503(answer)
    assert b"alice" not in answer.body
    assert b"pong" not in answer.body


ERRORS = [
    OperationalError("database is locked"),
    DatabaseError("relation does not exist"),
    InterfaceError("connection already closed"),
    RuntimeError("a bug in the lookup"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize(
    ("pathway", "lookup"),
    [("cookie", "session_authenticate"), ("bearer", "bearer_api_key"), ("basic", "basic_user")],
)
@pytest.mark.parametrize(("endpoint", "send"), ENDPOINTS, ids=[name for name, _ in ENDPOINTS])
def test_D8_registry_lookup_raising_fails_closed(
    credentials: Any,
    rpc: Any,
    checks: Any,
    monkeypatch: pytest.MonkeyPatch,
    pathway: str,
    lookup: str,
    error: Exception,
    endpoint: str,
    send: Any,
) -> None:
    client, headers, _ = credentials[pathway]
    client.http.raise_request_exception = False  # see the answer a real client would get

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(middleware, lookup, broken)
    answer = checks.answer(send(client, headers))

    checks.documented_503(answer)
    assert b"alice" not in answer.body
    assert b"pong" not in answer.body


def test_D8_no_credential_is_anonymous_and_protected_calls_are_refused(rpc: Any, checks: Any) -> None:
    """The other side of failing closed: without a credential nothing reads the registry, anonymous
    methods answer, protected ones are refused as unauthenticated (never 5xx)."""
    client = rpc()
    assert client.call("core.ping") == "pong"
    assert checks.answer(client.raw("auth.me")).not_authenticated
    assert checks.answer(client.http.get("/api/v2.0/auth/me")).status in (401, 403)
    assert session_cookie_name() not in client.http.cookies
